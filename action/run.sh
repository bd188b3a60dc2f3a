#!/usr/bin/env bash
# The action's run step: one reconciler command, its report in the job summary, the outputs
# exitcode / has-changes / report / json, and (plan on a pull request) one comment kept up to date.
# Every input arrives in an INPUT_* variable; none is spliced into this script's text.
set -uo pipefail
out="${RUNNER_TEMP:-/tmp}/reconciler"
mkdir -p "$out"
report="$out/$INPUT_COMMAND.md"
json="$out/apply.jsonl"
read -r -a paths <<< "${INPUT_PATHS:-specs}"
read -r -a args <<< "${INPUT_ARGS:-}"
if [ -n "${INPUT_STATE:-}" ]; then
  export RECONCILER_STATE="$INPUT_STATE"
fi

case "$INPUT_COMMAND" in
  plan)
    reconciler plan "${paths[@]}" --format markdown --detailed-exitcode "${args[@]}" > "$report"
    code=$?
    changes=$([ "$code" = 2 ] && echo true || echo false)
    ;;
  drift)
    reconciler drift "${paths[@]}" --format markdown "${args[@]}" > "$report"
    code=$?
    changes=$([ "$code" = 2 ] && echo true || echo false)
    ;;
  apply)
    # JSON events for the artifact; every failure is also a line on stderr, so the log says why.
    reconciler apply "${paths[@]}" --auto-approve --format json "${args[@]}" > "$json"
    code=$?
    changes=$(python3 "$ACTION_PATH/action/summary.py" "$json" "$report") || changes=false
    ;;
  *)
    echo "::error::command must be plan, apply or drift"
    exit 1
    ;;
esac

cat "$report" >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
{
  echo "exitcode=$code"
  echo "has-changes=$changes"
  echo "report=$report"
  [ "$INPUT_COMMAND" = apply ] && echo "json=$json"
} >> "${GITHUB_OUTPUT:-/dev/null}"

if [ "$INPUT_COMMAND" = plan ] && [ "$code" != 1 ] && [ "${GITHUB_EVENT_NAME:-}" = pull_request ] \
  && [ "${INPUT_COMMENT:-true}" = true ]; then
  reconciler ci comment "$report" --key plan || code=1
fi

# 2 (changes, drift) is an answer the workflow reads from the exitcode output, not a failure.
if [ "$code" = 2 ]; then
  exit 0
fi
exit "$code"
