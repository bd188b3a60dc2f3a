"""State, lock and journal in an object store: moto's S3 server on loopback, and the local folder.

Real conditional writes against a real S3-protocol server (moto in server mode, started here), not a
mock of the storage library: two concurrent applies never lose a record, a killed apply's lock is
reported and released by ``state unlock``, a plan from another folder is clean, ``history`` there
lists every change, ``state migrate`` copies state and journal, and no secret reaches any object.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import app as cli
from reconciler.cli_options import emit
from reconciler.emulator import EmulatorConfig
from reconciler.errors import StateError
from reconciler.state import LockedError, LookupState, State, StateLock, unlock
from reconciler.state.backends import (
    AlreadyExists,
    LocalBackend,
    ObjectBackend,
    ObjectBounds,
    Precondition,
    open_backend,
)
from tests.forkserver import Forks
from tests.planning import FAST_POLL, KINDS, SECRETS, Project, lookup_doc
from tests.support import ON_THE_MOTO_WORKER, CliRunner, assert_sent_as_group, git, served

# All in one worker (``--dist loadgroup``): one moto server per run, not one per worker.
pytestmark = [pytest.mark.anyio, ON_THE_MOTO_WORKER]
BUCKET = "reconciler-state"


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server on loopback with one bucket; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="moto-access",
        AWS_SECRET_ACCESS_KEY="moto-secret",
        AWS_REGION="us-east-1",
    )
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


_counter = iter(range(10_000))


@pytest.fixture
def s3_url(s3: str) -> str:
    """A fresh prefix in the bucket for one test."""
    return f"s3://{BUCKET}/t{next(_counter)}-{os.getpid()}"


def _objects(prefix_url: str) -> dict[str, bytes]:
    import boto3

    prefix = prefix_url.split(f"s3://{BUCKET}/", 1)[1]
    client = boto3.client("s3")
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        for item in listed
    }


def _location(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh state location: a local file, or a prefix in moto's bucket."""
    if where == "local":
        return str(tmp_path / "state.json")
    return str(request.getfixturevalue("s3_url"))


def test_the_moto_group_runs_on_one_worker(request: pytest.FixtureRequest) -> None:
    """Spread over every worker, each would import moto and start its own servers."""
    assert_sent_as_group(request, "moto")


def _record(i: int) -> LookupState:
    return LookupState(kind="staticQuery", endpoint="deploy-static-query", canonical={"i": i})


# --- the backends' conditional writes -------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_conditional_writes(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    location = _location(where, tmp_path, request)
    backend, key = open_backend(location)
    first = backend.write(key, b"one", create=True)
    with pytest.raises(AlreadyExists):
        backend.write(key, b"two", create=True)
    second = backend.write(key, b"three", etag=first)
    with pytest.raises(Precondition):
        backend.write(key, b"four", etag=first)  # someone else's version now
    stored = backend.read(key)
    assert stored is not None and stored.data == b"three" and stored.etag == second


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_writers_that_bypass_the_lock_lose_no_record(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location = _location(where, tmp_path, request)
    one, two = State.load(location), State.load(location)  # both read the empty state
    for i in range(20):
        one.record(f"acme/one{i}", _record(i))
        two.record(f"acme/two{i}", _record(i))
    one.commit()
    two.commit()  # its compare-and-swap fails, it rebases on one's state and retries
    merged = State.load(location)
    assert len(merged.lookups) == 40


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_killed_runs_records_are_replayed(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location = _location(where, tmp_path, request)
    killed = State.load(location)
    killed.record("acme/l0", _record(0))
    killed.record_many({"acme/l1": _record(1), "acme/l2": _record(2)})  # one entry, two records
    killed.record("acme/gone", _record(9))
    killed.forget("acme/gone")
    # no commit: the process died. The next run sees the records and compacts them.
    survivor = State.load(location)
    assert set(survivor.lookups) == {"acme/l0", "acme/l1", "acme/l2"}
    survivor.commit()
    backend, key = open_backend(location)
    assert backend.log_runs(key) == []
    assert set(State.load(location).lookups) == {"acme/l0", "acme/l1", "acme/l2"}


@pytest.mark.parametrize("where", ["local", "s3"])
async def test_the_lock_names_its_holder_waits_and_unlocks(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    location = _location(where, tmp_path, request)
    first = StateLock(location, "alice@example.com")
    await first.acquire()
    second = StateLock(location, "ci-bot")
    with pytest.raises(LockedError) as caught:
        await second.acquire()
    message = f"{caught.value} {caught.value.hint}"
    assert first.info.id in message and "alice@example.com" in message
    assert (
        f"(pid {os.getpid()})" in message and f"reconciler state unlock {first.info.id}" in message
    )

    async def release_soon() -> None:
        await asyncio.sleep(0.3)
        first.release()

    releaser = asyncio.create_task(release_soon())
    await second.acquire(timeout=10)  # --lock-timeout: waits for the first to finish
    await releaser
    assert second.holder() is not None and second.holder().id == second.info.id  # type: ignore[union-attr]
    with pytest.raises(Exception, match="locked by"):
        unlock(location, "not-the-id")
    unlock(location, second.info.id)
    assert second.holder() is None


# --- applies against an S3 state -------------------------------------------------------------------


def _s3_project(tmp_path: Path, s3_url: str, *, null_config: bool = True) -> Project:
    project = Project(
        tmp_path,
        EmulatorConfig(create_latency=0, deploy_latency=0.02, deploy_config_null=null_config),
    )
    from dataclasses import replace

    project.settings = replace(project.settings, state_url=s3_url)
    return project


async def test_plan_from_another_folder_is_clean_and_history_lists_every_change(
    tmp_path: Path, s3_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.browse import run_history
    from reconciler.commands import run_plan

    project = _s3_project(tmp_path / "laptop", s3_url)
    project.write(
        *(lookup_doc(f"q{i}", KINDS["static"]) for i in range(3)),
        lookup_doc("s3", KINDS["csv_s3"]),
        lookup_doc("geo", KINDS["csv_file"]),
    )
    assert await project.apply() == 0
    assert not (project.root / ".reconciler" / "state.json").exists()  # all of it is in S3
    # A fresh clone elsewhere: same specs, no local state, a deployConfig: null service.
    clone = tmp_path / "ci-runner"
    clone.mkdir()
    subprocess.run(["cp", "-r", str(project.specs), str(clone / "specs")], check=True)
    capsys.readouterr()
    code = emit(
        await run_plan(
            project.settings,
            [str(clone / "specs")],
            detailed_exitcode=True,
            strict=True,
            transport=project.transport(),
        )
    )
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("No changes."), out
    assert emit(run_history(s3_url, output_format="json")) == 0
    page = json.loads(capsys.readouterr().out)
    assert page["totalResults"] == 5
    assert {r["lookup"] for r in page["results"]} == {"q0", "q1", "q2", "s3", "geo"}
    # No secret in any object the run wrote.
    blobs = b"".join(_objects(s3_url).values())
    for secret in SECRETS.values():
        assert secret.encode() not in blobs
    assert b"moto-secret" not in blobs


async def test_two_concurrent_applies_never_lose_a_record(tmp_path: Path, s3_url: str) -> None:
    project = _s3_project(tmp_path, s3_url, null_config=False)
    project.emulator.config.deploy_latency = 0.3
    project.write(*(lookup_doc(f"q{i:02d}", KINDS["static"]) for i in range(10)))
    results = await asyncio.gather(project.apply(), project.apply(), return_exceptions=True)
    refused = [r for r in results if isinstance(r, LockedError)]
    assert len(refused) == 1 and results.count(0) == 1, results
    assert len(State.load(s3_url).lookups) == 10
    # With --lock-timeout the second waits instead, then finds nothing to do.
    project.write(*(lookup_doc(f"q{i:02d}", KINDS["static"]) for i in range(12)))
    waited = await asyncio.gather(project.apply(), project.apply(lock_timeout=60))
    assert waited == [0, 0]
    assert len(State.load(s3_url).lookups) == 12


def test_a_killed_apply_leaves_a_lock_that_unlock_clears(
    tmp_path: Path, s3_url: str, forks: Forks
) -> None:
    project = _s3_project(tmp_path, s3_url, null_config=False)
    project.emulator.config.create_latency = 0.5
    project.emulator.config.deploy_latency = 1.0
    project.write(*(lookup_doc(f"l{i:02d}", KINDS["static"]) for i in range(12)))
    with served(project.app) as base:
        env = {
            **os.environ,
            "DEVO_LOOKUP_URL": base,
            "RECONCILER_STATE": s3_url,
            "CI": "",
            "RECONCILER_ACTOR": "killed-run",
        }
        # The applies are processes forked from the ``forks`` server (tests/conftest.py).
        command = [str(forks.folder / "reconciler"), "apply", "--auto-approve", str(project.specs)]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
        )
        deadline = time.monotonic() + 30
        while not project.emulator.stats.created and time.monotonic() < deadline:
            time.sleep(0.05)
        [run] = forks.running()  # the apply's process
        os.kill(run, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        # Jobs already started keep their schedule; the runs after the kill need no slow jobs.
        project.emulator.config.create_latency = project.emulator.config.deploy_latency = 0.02
        # The runs after the kill: in this process (another pid, as a new run would be), except
        # the apply that must converge, which is a process of its own again.
        runner = CliRunner()
        locked = runner.invoke(cli, command[1:], env=env)
        assert locked.exit_code == 1, locked.output
        assert "held by killed-run" in locked.stderr and f"(pid {run})" in locked.stderr
        lock_id = locked.stderr.split("reconciler state unlock ")[1].split()[0]
        shown = runner.invoke(cli, ["state", "show", "--format", "json"], env=env)
        assert json.loads(shown.stdout)["lock"]["id"] == lock_id
        cleared = runner.invoke(cli, ["state", "unlock", lock_id], env=env)
        assert cleared.exit_code == 0, cleared.stderr
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
    assert len(State.load(s3_url).lookups) == 12


async def test_migrate_copies_state_and_journal(tmp_path: Path, s3_url: str) -> None:
    from reconciler.state import migrate

    project = Project(tmp_path)
    project.write(*(lookup_doc(f"q{i}", KINDS["static"]) for i in range(3)))
    assert await project.apply(poll=FAST_POLL) == 0
    local = str(project.settings.state_path)
    moved = migrate(local, s3_url)
    assert (moved.records, moved.entries) == (3, 3)
    assert State.load(s3_url).document() == State.load(local).document()  # the source is kept
    from reconciler.state.journal import Journal

    assert len(list(Journal.for_state(s3_url).entries())) == 3
    again = migrate(local, s3_url)  # the same records there: nothing copied twice
    assert (again.records, again.entries, again.records_there, again.entries_there) == (0, 0, 3, 3)
    assert len(list(Journal.for_state(s3_url).entries())) == 3


def test_state_show_lists_the_records(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reconciler.cli import app

    location = tmp_path / "state.json"
    state = State.load(location)
    state.record(
        "acme/geo",
        LookupState(
            kind="csv",
            endpoint="deploy-csv",
            canonical={"a": 1},
            job_id="j-1",
            applied_at="2026-11-25T10:00:00+00:00",
            csv={"sha256": "ab" * 32, "rows": 7},
        ),
    )
    state.commit()
    result = CliRunner().invoke(app, ["state", "show", "--state", str(location)])
    assert result.exit_code == 0, result.output
    assert "acme/geo" in result.stdout and "deploy-csv" in result.stdout
    assert "j-1" in result.stdout and "7 rows" in result.stdout


def test_the_state_file_holds_one_sorted_lookup_per_line_and_reads_back_the_same(
    tmp_path: Path,
) -> None:
    # One line per lookup (written by C's JSON encoder: an indented state of 10,000 lookups took
    # 0.5 s per commit in Python's), sorted by address, each line's keys sorted.
    location = tmp_path / "state.json"
    state = State.load(location)
    entries = {
        f"acme/l{i}": LookupState(
            kind="staticQuery", endpoint="deploy-static-query", canonical={"z": i, "a": "é\n"}
        )
        for i in (2, 10, 1)
    }
    state.record_many(entries)
    state.commit()
    lines = location.read_text().splitlines()
    assert lines[0] == '{"version": 1, "lookups": {' and lines[-1] == "}}"
    assert [line.split(":", 1)[0] for line in lines[1:-1]] == [
        '"acme/l1"',
        '"acme/l10"',
        '"acme/l2"',
    ]
    assert all(line.index('"a"') < line.index('"z"') for line in lines[1:-1])
    assert State.load(location).lookups == entries
    assert State.load(tmp_path / "none.json").document() == {"version": 1, "lookups": {}}


# --- an object store that misbehaves ----------------------------------------------------------


def _point_s3_at(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """S3 at ``port`` on loopback, with canary credentials that no message may show."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-canary-state")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-state-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_an_endpoint_that_never_answers_fails_within_the_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It takes the connection and says nothing: the read fails, saying it timed out, within the
    bounds given (obstore's own defaults would wait some three minutes)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel's backlog; nothing ever answers
    _point_s3_at(monkeypatch, silent.getsockname()[1])
    try:
        bounded = ObjectBackend("s3://bucket/prefix")._store
        assert bounded.retry_config["max_retries"] == ObjectBounds().retries
        backend = ObjectBackend(
            "s3://bucket/prefix", ObjectBounds(connect=1.0, request=0.3, retries=1, total=0.2)
        )
        started = time.monotonic()
        with pytest.raises(StateError) as caught:
            backend.read("state.json")
        took = time.monotonic() - started
    finally:
        silent.close()
    assert "s3://bucket/prefix/state.json failed: GenericError, timed out" in caught.value.message
    assert took < 15, took  # one attempt of 0.3 s (0.2 s total leaves no retry): not minutes
    assert "canary" not in caught.value.message and "canary" not in (caught.value.hint or "")


def test_an_s3_error_names_its_status_and_code_never_its_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 answers a bad key with a body naming the access key id: the error says what happened
    (status, S3 code) and leaves the body, and so the key id, out."""
    body = (
        b"<?xml version='1.0'?><Error><Code>InvalidAccessKeyId</Code>"
        b"<AWSAccessKeyId>AKIA-canary-state</AWSAccessKeyId></Error>"
    )

    class Forbidden(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _point_s3_at(monkeypatch, server.server_address[1])
    try:
        backend = ObjectBackend("s3://bucket/prefix")
        for attempt in (lambda: backend.read("state.json"), lambda: backend.write("k", b"{}")):
            with pytest.raises(StateError) as caught:
                attempt()
            text = caught.value.message + (caught.value.hint or "")
            assert "HTTP 403 Forbidden, InvalidAccessKeyId" in text, text
            assert "canary" not in text and "127.0.0.1" not in text, text
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_bucket_is_an_error_not_an_empty_state(s3: str) -> None:
    """A bucket name with a typo reads as "no such bucket", not as a state with nothing in it
    (which would make plan and drift lose every record without a word)."""
    with pytest.raises(StateError, match="NoSuchBucket"):
        ObjectBackend("s3://no-such-bucket-here/lookups").read("state.json")
    with pytest.raises(StateError) as caught:
        State.load("s3://no-such-bucket-here/lookups")
    assert "NoSuchBucket" in caught.value.message
    result = CliRunner().invoke(cli, ["state", "show", "--state", "s3://no-such-bucket-here/x"])
    assert result.exit_code == 1 and "NoSuchBucket" in result.stderr, result.output


def test_a_log_entry_whose_create_was_retried_is_written_once(s3_url: str) -> None:
    """The create of a record-log entry landed but its answer was lost, so obstore sent it again
    and met the entry: the same bytes are that entry; other bytes are an error, never dropped."""
    backend, key = open_backend(s3_url)
    backend.append(key, "run-1", 1, b'{"op": "forget", "address": "acme/a", "entry": null}')
    backend.append(key, "run-1", 1, b'{"op": "forget", "address": "acme/a", "entry": null}')
    assert [data for _, _, data in backend.log_entries(key)] == [
        b'{"op": "forget", "address": "acme/a", "entry": null}'
    ]
    with pytest.raises(StateError, match="exists with other content"):
        backend.append(key, "run-1", 1, b'{"op": "forget", "address": "acme/b", "entry": null}')


class _AnswerLost:
    """obstore, with every put sent twice: the first lands and its answer is lost, and the
    second is obstore's retry."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def put(self, store: Any, key: str, data: bytes, *, mode: Any) -> Any:
        self.real.put(store, key, data, mode=mode)
        return self.real.put(store, key, data, mode=mode)


async def test_a_lock_whose_create_was_retried_is_held(s3_url: str) -> None:
    """The lock's create landed, its answer was lost and the retry met it: the lock is this run's
    (its id is in it), so the run holds it, rather than reporting itself as the holder."""
    lock = StateLock(s3_url, "tester")
    store = lock.backend.inner  # the object store under the (keyless) sealing layer
    assert isinstance(store, ObjectBackend)
    store._obstore = _AnswerLost(store._obstore)
    await lock.acquire()
    holder = lock.holder()
    assert lock.held and holder is not None and holder.id == lock.info.id
    other = StateLock(s3_url, "someone-else")
    other_store = other.backend.inner
    assert isinstance(other_store, ObjectBackend)
    other_store._obstore = _AnswerLost(other_store._obstore)
    with pytest.raises(LockedError):
        await other.acquire()
    lock.release()
    assert lock.holder() is None


def test_an_object_store_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.errors import SettingsError

    monkeypatch.setitem(sys.modules, "obstore", None)  # as if not installed
    with pytest.raises(SettingsError) as caught:
        State.load("s3://some-bucket/lookups")
    assert "pip install 'devo-reconciler[s3]'" in (caught.value.hint or "")


async def test_a_failed_apply_releases_its_lock(tmp_path: Path) -> None:
    from reconciler.errors import SpecError

    project = Project(tmp_path)
    project.write("apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {domain: acme}\n")
    with pytest.raises(SpecError):
        await project.apply()
    lock = StateLock(str(project.settings.state_path), "me")
    assert lock.holder() is None  # released on the way out
    project.write(lookup_doc("ok", KINDS["static"]))
    assert await project.apply() == 0


def test_state_commands_on_the_command_line(tmp_path: Path, s3_url: str) -> None:
    from typer.testing import CliRunner

    from reconciler.cli import app

    local = tmp_path / "state.json"
    state = State.load(local)
    state.record("acme/a", _record(1))
    state.commit()
    runner = CliRunner()
    moved = runner.invoke(app, ["state", "migrate", "--state", str(local), "--to", s3_url])
    assert moved.exit_code == 0, moved.output
    shown = runner.invoke(app, ["state", "show", "--state", s3_url, "--format", "json"])
    assert json.loads(shown.stdout)["lookups"].keys() == {"acme/a"}
    wrong = runner.invoke(app, ["state", "unlock", "nope", "--state", s3_url])
    assert wrong.exit_code == 1 and "is not locked" in wrong.stderr


async def test_plan_and_drift_take_no_lock_and_work_while_one_is_held(tmp_path: Path) -> None:
    from reconciler.commands import run_drift

    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    assert await project.apply() == 0
    held = StateLock(str(project.settings.state_path), "someone-else")
    await held.acquire()
    try:
        assert not (await project.plan()).plan.can_apply()
        assert (
            emit(
                await run_drift(
                    project.settings, [str(project.specs)], transport=project.transport()
                )
            )
            == 0
        )
        with pytest.raises(LockedError, match="held by someone-else"):
            await project.apply()
    finally:
        held.release()


@pytest.mark.anyio
async def test_the_journal_names_the_specs_repository_commit_and_git_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who applied and which commit: CI's variables first, else git as the repository holding
    the specs answers (asked there, not in the folder the command started in), else the login
    name and no commit."""
    from reconciler import gitrepo
    from reconciler.state.journal import ACTOR_VARIABLES, COMMIT_VARIABLES, Journal

    for name in (*ACTOR_VARIABLES, *COMMIT_VARIABLES):  # (this run may be in CI)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USER", "login-name")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command starts outside the specs' repository
    project = Project(tmp_path / "repo", EmulatorConfig(create_latency=0, deploy_latency=0))
    journal = Journal.for_state(str(project.settings.state_path))

    def last() -> tuple[str, str | None]:
        entry = list(journal.entries())[-1]
        return entry.actor, entry.commit

    def edit(table: str) -> None:
        project.write(lookup_doc("one", KINDS["static"].replace("from a ", f"from {table} ")))

    edit("a")
    assert await project.apply() == 0
    assert last() == ("login-name", None)  # no repository: the login name, no commit

    git(project.root, "init", "-q")
    git(project.root, "config", "user.email", "specs@example.com")  # the repository's own user
    git(project.root, "add", "specs")
    git(project.root, "commit", "-q", "-m", "specs")
    edit("b")
    assert await project.apply() == 0
    assert last() == ("specs@example.com", gitrepo.head_commit(project.root))

    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.setenv("GITHUB_SHA", "0" * 40)
    edit("c")
    assert await project.apply() == 0
    assert last() == ("octocat", "0" * 40)
    monkeypatch.setenv("RECONCILER_ACTOR", "release-bot")  # the tool's own variable wins
    edit("d")
    assert await project.apply() == 0
    assert last() == ("release-bot", "0" * 40)


def test_a_lock_written_by_someone_else_is_read_as_far_as_it_can_be(tmp_path: Path) -> None:
    """The lock object is read into a model: extra fields ignored, a number given as text read,
    a damaged one shown as unknown rather than an error."""
    from reconciler.state.backends import open_backend
    from reconciler.state.lock import read_lock

    backend, _ = open_backend(str(tmp_path / "state.json"))
    lock = (
        b'{"id": "ab12", "actor": "ci", "host": "h", "pid": "42", '
        b'"created": "2026-12-05T09:00:00+00:00", "tool": "other"}'
    )
    backend.write("state.json.lock", lock)
    info = read_lock(backend, "state.json.lock")
    assert info is not None and info.id == "ab12" and info.pid == 42
    backend.write("state.json.lock", b'{"id": 1')
    damaged = read_lock(backend, "state.json.lock")
    assert damaged is not None and damaged.id == "?"


class _Deletes:
    """obstore, counting the paths of each delete call (optionally refusing a list as a store
    does that reports an object already gone)."""

    def __init__(self, real: Any, refuse_lists: bool = False) -> None:
        self.real = real
        self.refuse_lists = refuse_lists
        self.calls: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def delete(self, store: Any, paths: Any) -> None:
        self.calls.append(paths)
        if self.refuse_lists and not isinstance(paths, str):
            raise FileNotFoundError(paths[0])
        self.real.delete(store, paths)


@pytest.mark.parametrize("refuse_lists", [False, True])
def test_a_commit_drops_its_log_in_one_bulk_delete(s3_url: str, refuse_lists: bool) -> None:
    """Twenty entries, one delete call (S3's DeleteObjects takes 1,000 keys); a store that says
    one of them is gone already gets them one by one, and the log is gone either way."""
    state = State.load(s3_url)
    for i in range(20):
        state.record(f"acme/l{i}", _record(i))
    store = state.backend.inner  # type: ignore[attr-defined]  # under the sealing layer
    deletes = _Deletes(store._obstore, refuse_lists)
    store._obstore = deletes
    state.commit()
    lists = [c for c in deletes.calls if not isinstance(c, str)]
    assert len(lists) == 1 and len(lists[0]) == 20, deletes.calls
    assert len(deletes.calls) == (21 if refuse_lists else 1)
    assert state.backend.log_runs(state._key) == []  # type: ignore[attr-defined]
    assert len(State.load(s3_url).lookups) == 20


def test_a_runs_log_is_kept_open_while_it_grows_and_closed_when_dropped(tmp_path: Path) -> None:
    # Apply appends to its run's log twice per change: the file stays open between appends, and
    # dropping the log (the commit) closes it; a later append starts a new file.
    def open_files() -> int:
        # This process's descriptors open on the backend's files: a count of all of them moves
        # with whatever else the worker process opens and closes meanwhile.
        folder = str(tmp_path / "state")
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed since it was listed
                found += os.readlink(f"/proc/self/fd/{fd}").startswith(folder)
        return found

    backend = LocalBackend(tmp_path / "state")
    for seq in range(1, 4):
        backend.append("state.json", "run1", seq, b'{"n": %d}\n' % seq)
    assert open_files() == 1
    log = tmp_path / "state" / "state.json.log" / "run1"
    assert log.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n": 3}\n'
    backend.drop_log("state.json", "run1")
    assert open_files() == 0 and not log.exists()
    backend.append("state.json", "run1", 4, b'{"n": 4}')
    assert log.read_bytes() == b'{"n": 4}\n'
    assert open_files() == 1
    del backend  # one never dropped (a run that did not commit) is closed with its backend
    assert open_files() == 0
