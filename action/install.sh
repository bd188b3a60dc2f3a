#!/usr/bin/env bash
# The action's install step: reconciler from this action's own checkout (no package index needed)
# into a virtual environment of the job, put on PATH for the steps after it.
#
# A runner that has this very version installed already (a self-hosted image, say) sets
# RECONCILER_PREINSTALLED=true; the version is still checked against the checkout's.
set -euo pipefail
case "${INPUT_EXTRAS:-}" in
  *[!a-z0-9,]*) echo "::error::extras is a comma-separated list of names (s3, big)"; exit 1 ;;
esac
want=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ACTION_PATH/reconciler/__init__.py")
if [ "${RECONCILER_PREINSTALLED:-}" = true ]; then
  have=$(reconciler --version)
  if [ "$have" != "reconciler $want" ]; then
    echo "::error::RECONCILER_PREINSTALLED is set, but '$have' is not reconciler $want"
    exit 1
  fi
  echo "$have (preinstalled)"
  exit 0
fi
venv="${RUNNER_TEMP:-/tmp}/reconciler-venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "${ACTION_PATH}${INPUT_EXTRAS:+[$INPUT_EXTRAS]}"
echo "$venv/bin" >> "$GITHUB_PATH"
"$venv/bin/reconciler" --version
