"""Encrypted state, snapshots and journal (issue 28): with a key, no object the tool keeps holds a
cell, a key or a lookup name in clear; the wrong key is a clear error that changes nothing; a
mixed backend (some objects plain) is readable; ``state rekey`` moves everything to a new key."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from tests.planning import SECRETS, Project, lookup_doc
from tests.support import ON_THE_MOTO_WORKER, CliRunner, moto_s3, s3_client

PLANTED_CELL = "canary-cell-7d1e"
PLANTED_NAME = "canary_lookup_55"
BODY = """
    csv:
      file: data/users.csv
      hasHeader: true
      columns: [{name: user, type: STRING}, {name: team, type: STRING}]
      key: {type: column, column: user}
"""


def _everything(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _s3_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@ON_THE_MOTO_WORKER
@pytest.mark.parametrize("where", ["local", "s3"])
def test_with_a_key_nothing_is_kept_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    key = secrets.token_hex(32)
    with moto_s3("enc-state") as endpoint:
        location = (
            str(tmp_path / "state") + "/" if where == "local" else "s3://enc-state/team/lookups"
        )
        env = {
            **SECRETS,
            "CI": "",
            "RECONCILER_STATE_KEY": key,
            "RECONCILER_EMULATOR_DB": str(tmp_path / "emulator.db"),
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "moto",
            "AWS_SECRET_ACCESS_KEY": "moto",
            "AWS_REGION": "us-east-1",
        }
        project = Project(tmp_path)
        (project.specs / "data" / "users.csv").write_text(f"user,team\nalice,{PLANTED_CELL}\n")
        project.write(lookup_doc(PLANTED_NAME, BODY))
        runner = CliRunner()
        applied = runner.invoke(
            cli,
            ["apply", "--emulator", "--auto-approve", "--state", location, str(project.specs)],
            env=env,
        )
        assert applied.exit_code == 0, applied.output
        objects = (
            _everything(tmp_path / "state")
            if where == "local"
            else _s3_objects(endpoint, "enc-state")
        )
        assert objects and any("snapshots" in name for name in objects), sorted(objects)
        for name, data in objects.items():
            for planted in (PLANTED_CELL, PLANTED_NAME, key):
                assert planted.encode() not in data, (name, planted)
        # Everything reads back with the key: the plan is clean, history and state show work.
        plan = runner.invoke(
            cli,
            ["plan", "--emulator", "--detailed-exitcode", "--state", location, str(project.specs)],
            env=env,
        )
        assert plan.exit_code == 0, plan.output
        shown = runner.invoke(cli, ["state", "show", "--state", location], env=env)
        assert PLANTED_NAME in shown.stdout and "1 CSV snapshot(s)" in shown.stdout
        history = runner.invoke(cli, ["history", "--state", location], env=env)
        assert PLANTED_NAME in history.stdout, history.output
        # The wrong key, or none: a clear error naming the key id, and nothing changed.
        before = objects
        for wrong in (
            {**env, "RECONCILER_STATE_KEY": secrets.token_hex(32)},
            {**env, "RECONCILER_STATE_KEY": ""},
        ):
            refused = runner.invoke(
                cli,
                ["apply", "--emulator", "--auto-approve", "--state", location, str(project.specs)],
                env=wrong,
            )
            assert refused.exit_code == 1, refused.output
            assert "is encrypted" in refused.stderr and "Traceback" not in refused.output
            assert key not in refused.output
        after = (
            _everything(tmp_path / "state")
            if where == "local"
            else _s3_objects(endpoint, "enc-state")
        )
        changed = {n for n in after if n not in before or after[n] != before[n]}
        assert not {n for n in changed if not n.endswith(".lock") and ".guard" not in n}, changed


@pytest.mark.waits
def test_a_plain_state_is_read_and_rekey_seals_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    (project.specs / "data" / "users.csv").write_text(f"user,team\nalice,{PLANTED_CELL}\n")
    project.write(lookup_doc(PLANTED_NAME, BODY))
    location = str(tmp_path / "state") + "/"
    env = {**SECRETS, "CI": "", "RECONCILER_EMULATOR_DB": str(tmp_path / "emulator.db")}
    runner = CliRunner()
    apply = ["apply", "--emulator", "--auto-approve", "--state", location, str(project.specs)]
    assert runner.invoke(cli, apply, env=env).exit_code == 0  # plain
    first = secrets.token_hex(32)
    keyed = {**env, "RECONCILER_STATE_KEY": first}
    # Mixed: the plain state is read with a key set (a migration in progress).
    plan = ["plan", "--emulator", "--detailed-exitcode", "--state", location, str(project.specs)]
    assert runner.invoke(cli, plan, env=keyed).exit_code == 0
    sealed = runner.invoke(cli, ["state", "rekey", "--state", location], env=keyed)
    assert sealed.exit_code == 0, sealed.output
    for name, data in _everything(tmp_path / "state").items():
        assert PLANTED_CELL.encode() not in data and PLANTED_NAME.encode() not in data, name
    # A new key: the old one is named as the old one, and everything moves.
    second = secrets.token_hex(32)
    rotating = {**env, "RECONCILER_STATE_KEY": second, "RECONCILER_STATE_OLD_KEYS": first}
    assert runner.invoke(cli, ["state", "rekey", "--state", location], env=rotating).exit_code == 0
    only_new = {**env, "RECONCILER_STATE_KEY": second}
    assert runner.invoke(cli, plan, env=only_new).exit_code == 0
    old_only = runner.invoke(cli, plan, env=keyed)
    assert old_only.exit_code == 1 and "is encrypted with key" in old_only.stderr
    # The key from a file, given before the command.
    key_file = tmp_path / "state.key"
    key_file.write_text(second + "\n")
    from_file = runner.invoke(cli, ["--state-key-file", str(key_file), *plan], env=env)
    assert from_file.exit_code == 0, from_file.output
    os.environ.pop("RECONCILER_STATE_KEY_FILE", None)


def test_a_key_that_is_not_one_is_refused_without_showing_it(
    tmp_path: Path, runner: CliRunner
) -> None:
    shown = runner.invoke(
        cli,
        ["state", "show", "--state", str(tmp_path / "s/")],
        env={"RECONCILER_STATE_KEY": "not-a-key-canary"},
    )
    assert shown.exit_code == 1 and "is not a 256-bit key (not shown)" in shown.stderr
    assert "not-a-key-canary" not in shown.output
