"""What reconciler will never do (issue 24): each ordinary mistake or hostile input that used to
become a delete, a silent no-op or a leak, shown failing closed.

Every test here starts from a lookup the emulator already holds and a Domain with ``prune: true``,
so a mistake that loses a spec would plan a delete; the test shows that it is an error instead and
that nothing was sent.
"""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from markdown_it import MarkdownIt
from pydantic import SecretStr

from reconciler.cli import app as cli
from reconciler.cli_options import emit
from reconciler.errors import PlanError, SettingsError, SpecError
from reconciler.plan.guards import Guards
from reconciler.spec import load_specs
from reconciler.views.text import plan as render_text
from tests.planning import KINDS, Project, lookup_doc
from tests.support import CliRunner, git

pytestmark = pytest.mark.anyio

DOMAIN = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\nspec: {prune: true}\n"


async def applied(tmp_path: Path, *names: str) -> Project:
    """A project whose lookups ``names`` (one file each) and a pruning Domain are applied."""
    project = Project(tmp_path)
    (project.specs / "domain.yaml").write_text(DOMAIN)
    for name in names:
        project.write(lookup_doc(name, KINDS["static"]), file=f"{name}.yaml")
    assert await project.apply() == 0
    return project


async def refused(project: Project, *needles: str, **options: object) -> str:
    """The plan fails with a SpecError whose diagnostics hold every needle (so no plan, no
    delete); returns their rendered text."""
    with pytest.raises(SpecError) as caught:
        await project.plan(**options)
    text = "\n".join(d.render() for d in caught.value.diagnostics)
    for needle in needles:
        assert needle in text, text
    return text


async def test_an_upper_case_yaml_suffix_is_an_error_not_a_skipped_file(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "asn.yaml").rename(project.specs / "asn.YAML")
    (project.specs / "geo.yaml").rename(project.specs / "geo.Yml")
    text = await refused(
        project, "asn.YAML", "geo.Yml", "'.YAML' is not read", "rename it to asn.yaml"
    )
    assert "'.Yml' is not read" in text


async def test_an_empty_or_comment_only_spec_file_is_an_error(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "geo.yaml").write_text("")
    (project.specs / "asn.yaml").write_text("# truncated\n---\n# nothing\n")
    await refused(project, "geo.yaml", "asn.yaml", "holds no document")


async def test_a_tracked_spec_file_missing_from_a_sparse_checkout_is_an_error(
    tmp_path: Path,
) -> None:
    project = await applied(tmp_path, "geo", "asn")
    (project.specs / "team").mkdir()
    (project.specs / "asn.yaml").rename(project.specs / "team" / "asn.yaml")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "specs")
    git(tmp_path, "sparse-checkout", "set", "--no-cone", "/*", "!/specs/team/")
    assert not (project.specs / "team" / "asn.yaml").exists()  # hidden by the sparse checkout
    await refused(project, "team/asn.yaml", "not in the work tree", "sparse-checkout")
    # A file removed by hand (not `git rm`) is the same: git still says it belongs there.
    git(tmp_path, "sparse-checkout", "disable")
    (project.specs / "geo.yaml").unlink()
    await refused(project, "geo.yaml", "'git rm' it")
    # Staged for deletion: the intent is recorded, and the plan deletes it as asked.
    git(tmp_path, "rm", "-q", "--cached", "specs/geo.yaml")
    plan = (await project.plan()).plan
    assert [(c.address, c.action.value) for c in plan.actionable] == [("acme/geo", "delete")]


def named(name: str, body: str = KINDS["static"]) -> str:
    """A Lookup document of acme whose name is written as ``name`` (block style, so that a
    ``${env:...}`` reference in it stays plain text)."""
    return lookup_doc("X", body).replace(
        "{domain: acme, name: X}", f"\n  domain: acme\n  name: {name}"
    )


@pytest.mark.parametrize("where", ["name", "keep"])
async def test_an_env_var_set_to_empty_is_an_error(
    tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = await applied(tmp_path, "geo_prod", "manual_x")
    monkeypatch.setenv("SUFFIX", "")
    monkeypatch.setenv("KEEP", "")
    if where == "name":
        project.write(named("geo${env:SUFFIX}"), file="geo_prod.yaml")
    else:
        (project.specs / "manual_x.yaml").unlink()
        (project.specs / "domain.yaml").write_text(
            DOMAIN.replace("{prune: true}", "{prune: true, keep: ['${env:KEEP}']}")
        )
    await refused(project, "is set but empty", "${env:")


def test_env_defaults_are_explicit(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        named("geo${env:SUFFIX:-_dev}")
        + "---\n"
        + named("asn${env:EMPTY:-}")
        + "---\n"
        + named("ip${env:SET:-_x}")
    )
    result = load_specs([tmp_path], env={"SUFFIX": "", "SET": "_prod"})
    assert not result.errors, result.errors
    assert sorted(lookup.address for lookup in result.lookups) == [
        "acme/asn",
        "acme/geo_dev",
        "acme/ip_prod",
    ]


# --- where requests go, and with which credential ---------------------------------------------


@pytest.mark.waits
def test_the_emulator_is_never_implicit_for_a_state_that_is_not_the_default(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["static"]))
    env = {"CI": "", "RECONCILER_EMULATOR_DB": str(tmp_path / "emu.db")}
    for state in ("s3://team-bucket/lookups", str(tmp_path / "shared" / "state.json")):
        result = runner.invoke(
            cli,
            ["apply", "--auto-approve", str(project.specs)],
            env={**env, "RECONCILER_STATE": state},
        )
        assert result.exit_code == 1, result.output
        assert "chosen implicitly only with the default local state" in result.stderr
        assert "--emulator" in result.stderr
        assert not (tmp_path / "emu.db").exists()  # refused before anything was opened
    # Asked for by name, an emulator run with a state of its own is fine.
    result = runner.invoke(
        cli,
        [
            "apply",
            "--emulator",
            "--auto-approve",
            "--state",
            str(tmp_path / "own/"),
            str(project.specs),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    # The default state with no endpoint stays the two-command quick start.
    result = runner.invoke(cli, ["plan", str(project.specs)], env=env)
    assert result.exit_code == 0, result.output


@pytest.mark.waits
def test_a_state_location_is_a_folder_or_a_file(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["static"]))
    env = {"CI": "", "RECONCILER_EMULATOR_DB": ""}
    # A trailing slash names a folder, even one that does not exist yet: state.json, its journal
    # and its lock live inside it, nothing in its parent.
    result = runner.invoke(
        cli,
        ["apply", "--emulator", "--auto-approve", "--state", "st/", str(project.specs)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == [
        "journal.jsonl",
        "state.json",
        "state.json.log",
    ]
    assert not (tmp_path / "journal.jsonl").exists()
    # The emulator's own database is in .reconciler/ whatever the state: a state moved elsewhere
    # still sees the lookups the emulator holds.
    assert (tmp_path / ".reconciler" / "emulator.db").is_file()
    assert not (tmp_path / ".reconciler" / "state.json").exists()
    moved = runner.invoke(cli, ["state", "migrate", "--state", "st", "--to", "elsewhere/"])
    assert moved.exit_code == 0, moved.output
    plan = runner.invoke(
        cli,
        ["plan", "--emulator", "--state", "elsewhere", "--detailed-exitcode", str(project.specs)],
    )
    assert plan.exit_code == 0, plan.output  # an existing folder is read as a folder too
    assert "No changes." in plan.stdout


def test_a_domain_url_needs_its_own_auth_and_https(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "d.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: evil}\n"
        "spec: {url: 'https://collector.example/lookup-api'}\n---\n"
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: plain}\n"
        "spec: {url: 'http://devo.example/lookup-api', auth: {tokenEnv: T}}\n---\n"
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: creds}\n"
        "spec: {url: 'https://me:hunter2@devo.example/x', auth: {tokenEnv: T}}\n"
    )
    result = runner.invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        "d.yaml:4:8: error: spec.url: a Domain with its own url must name its own credential"
        in (result.stderr)
    )
    assert "d.yaml:9:8: error: spec.url: http:// endpoints are refused except on loopback" in (
        result.stderr
    )
    assert "holds a user name or password (not shown)" in result.stderr
    assert "hunter2" not in result.output


async def test_the_runs_token_never_goes_to_a_domains_own_endpoint() -> None:
    """Even past validation (a caller that skipped it), a request routed to a Domain's own host
    carries no credential unless that Domain named its own."""
    from reconciler.client import LookupReader
    from reconciler.settings import Credentials, Settings

    seen: dict[str, str | None] = {}

    def record(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("Authorization")
        return httpx.Response(200, json={"lookups": [], "nextPageToken": -1})

    run = Settings(
        "https://api-us.devo.com/lookup-api",
        Credentials(token=SecretStr("run-token-canary"), source="DEVO_TOKEN"),
    )
    mock = httpx.MockTransport(record)
    async with LookupReader(
        run, transport=mock, transports={"https://collector.example/x": mock}
    ) as reader:
        reader.use_domain_endpoints(
            {"evil": "https://collector.example/x", "eu": "https://api-eu.devo.com/lookup-api"}
        )
        await reader.all_lookups("evil")
        await reader.all_lookups("acme")
    assert seen == {"collector.example": None, "api-us.devo.com": "Bearer run-token-canary"}


def test_userinfo_in_the_url_is_refused_and_never_printed(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["plan", "--url", "https://admin:s3cret-canary@api-us.devo.com/lookup-api"]
    )
    assert result.exit_code == 1
    assert "user name or password (not shown)" in result.stderr
    assert "s3cret-canary" not in result.output
    for url, why in [
        ("http://api-us.devo.com/lookup-api", "refused except on loopback"),
        ("http://[::1", "cannot be parsed"),
        ("https://api-us.devo.com:port/x", "cannot be parsed"),
    ]:
        result = runner.invoke(cli, ["plan", "--url", url])
        assert result.exit_code == 1 and why in result.stderr, result.output
        assert "Traceback" not in result.output


# --- hostile servers: no hang, no unbounded body, no confusing error ----------------------------


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback HTTP server that reads one request per connection and lets ``answer`` write
    whatever bytes it likes; yields its base URL. Stops when the test ends."""
    stop = threading.Event()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(65536)
            with suppress(OSError):
                answer(self.request)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/lookup-api"
        finally:
            stop.set()
            server.shutdown()


def plan_against(url: str, tmp_path: Path, runner: CliRunner, *extra: str) -> Any:
    (tmp_path / "specs").mkdir(exist_ok=True)
    (tmp_path / "specs" / "a.yaml").write_text(lookup_doc("geo", KINDS["static"]))
    return runner.invoke(
        cli,
        ["plan", "--url", url, "--state", str(tmp_path / "st/"), *extra, str(tmp_path / "specs")],
        env={"DEVO_TOKEN": "tok-canary-1", "CI": ""},
    )


@pytest.mark.waits
def test_a_trickling_server_is_cut_off_at_the_deadline(tmp_path: Path, runner: CliRunner) -> None:
    def trickle(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        for _ in range(200):  # a byte every 0.2 s: never a read timeout, never an answer
            sock.sendall(b" ")
            time.sleep(0.2)

    with raw_server(trickle) as url:
        started = time.monotonic()
        result = plan_against(url, tmp_path, runner, "--timeout", "1")
        took = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "no complete answer within the 1 s budget" in result.stderr
    assert "--timeout, RECONCILER_TIMEOUT" in result.stderr
    assert took < 30  # the server would have trickled for 40 s (and, before the fix, for ever)


@pytest.mark.waits
def test_each_retry_is_a_line_on_stderr_and_the_budget_is_kept(
    tmp_path: Path, runner: CliRunner
) -> None:
    from reconciler.emulator import free_port

    url = f"http://127.0.0.1:{free_port('127.0.0.1')}/lookup-api"  # nothing listens there
    started = time.monotonic()
    result = plan_against(url, tmp_path, runner, "--timeout", "2")
    took = time.monotonic() - started
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("retrying in ")]
    assert lines, result.stderr
    assert "connection refused" in lines[0] and "attempt 2" in lines[0]
    assert "of the 2 s budget" in lines[-1]
    assert took < 20  # the old budget was 3 minutes


def test_the_default_budget_is_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.client import LookupReader
    from reconciler.settings import resolve

    monkeypatch.delenv("RECONCILER_TIMEOUT", raising=False)
    settings = resolve(url="https://api-us.devo.com/lookup-api", env={})
    assert settings.timeout == 60
    assert LookupReader(settings).retry.budget == 60
    assert resolve(region="us", env={"RECONCILER_TIMEOUT": "7.5"}).timeout == 7.5
    with pytest.raises(SettingsError, match="number of seconds"):
        resolve(region="us", env={"RECONCILER_TIMEOUT": "soon"})


@pytest.mark.parametrize("declared", [True, False])
@pytest.mark.waits
def test_a_body_over_64_mib_is_an_error(tmp_path: Path, runner: CliRunner, declared: bool) -> None:
    size = 64 * 1024 * 1024 + 1

    def huge(sock: socket.socket) -> None:
        head = f"Content-Length: {size}" if declared else "Transfer-Encoding: chunked"
        sock.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{head}\r\n\r\n".encode()
        )
        block = b"[" + b" " * (1024 * 1024 - 1)
        for _ in range(65):
            sock.sendall(block if declared else b"%x\r\n%s\r\n" % (len(block), block))

    with raw_server(huge) as url:
        result = plan_against(url, tmp_path, runner)
    assert result.exit_code == 1, result.output
    assert "the answer is larger than 64 MiB" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.waits
def test_a_redirect_is_named_not_followed(tmp_path: Path, runner: CliRunner) -> None:
    followed: list[bytes] = []

    def redirect(sock: socket.socket) -> None:
        sock.sendall(
            b"HTTP/1.1 302 Found\r\nLocation: https://collector.example/steal\r\n"
            b"Content-Length: 0\r\n\r\n"
        )

    with raw_server(redirect) as url:
        result = plan_against(url, tmp_path, runner)
    assert result.exit_code == 1, result.output
    assert "302 Found: the endpoint redirects to https://collector.example" in result.stderr
    assert "JSONDecodeError" not in result.output and not followed


# --- nothing from outside reaches a terminal raw, nor breaks out of markdown -----------------

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\u202e`x`"


def control_free(text: str) -> None:
    """No ESC, BEL, C1 or bidi override in ``text`` (tab and newline are ours)."""
    bad = [ch for ch in text if ch not in "\n\t" and (ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F)]
    assert not bad and "\u202e" not in text, repr(text)


@pytest.mark.parametrize("output_format", ["text", "markdown", "json", "html"])
@pytest.mark.parametrize("color", [False, True])
async def test_hostile_names_cells_and_messages_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output_format: str, color: bool
) -> None:
    from reconciler.commands import run_plan
    from reconciler.emulator.derive import derive

    project = Project(tmp_path)
    csv = KINDS["csv_file"]
    project.write(lookup_doc("geo", csv), lookup_doc("asn", KINDS["static"]))
    assert await project.apply() == 0
    # A lookup made out of band, with a name no spec could have; a CSV whose cells hold escapes
    # and a line of backticks; a query edited to hold a control character.
    store = project.emulator.store
    config = derive("deploy-static-query", "acme", HOSTILE, {"query": "from a select b"})
    store.create("acme", HOSTILE, config, {}, [(0.0, "deploy.ok", "x")], "o")
    (project.specs / "data" / "geo.csv").write_text(
        'ip,country\n10.0.0.1,\x1b[2J\n10.0.0.2,"```\n# Injected heading"\n10.0.0.3,FR\n'
    )
    project.write(
        lookup_doc("geo", csv),
        lookup_doc(
            "asn",
            KINDS["static"].replace(
                "query: from a select user, role", 'query: "from a\\e[31m select user, role"'
            ),
        ),
    )
    capsys.readouterr()
    code = emit(
        await run_plan(
            project.settings,
            [str(project.specs)],
            output_format=output_format,
            color=color,
            transport=project.transport(),
        )
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    control_free(out if not color else re.sub("\x1b\\[[0-9;]*m", "", out))
    control_free(err)
    assert "\\x1b]0;pwned\\x07" in out or "\\u001b]0;pwned\\u0007" in out  # shown, escaped
    if output_format == "markdown":
        tokens = MarkdownIt().parse(out)
        headings = [t for t in tokens if t.type == "heading_open"]
        assert [t.markup for t in headings] == ["###"], out  # only the title is a heading
        spans = [
            child.content
            for t in tokens
            if t.type == "inline"
            for child in t.children or []
            if child.type == "code_inline"
        ]
        assert any("evil\\x1b]0;pwned\\x07\\x1b[2J\\u202e`x`" in s for s in spans), spans


def test_markdown_code_spans_and_fences_hold_any_text() -> None:
    from reconciler.views.markdown import _code, _fence

    for text in ["a`b", "``", "`lead", "trail`", "a|b", "x\ny"]:
        rendered = MarkdownIt().parseInline(_code(text))[0].children
        assert rendered is not None and [c.type for c in rendered] == ["code_inline"], text
        assert "\n" not in rendered[0].content
    lines = ["+ a,```", "```", "- ````"]
    fence = _fence(lines)
    document = "\n".join([fence + "diff", *lines, fence, "# after"])
    tokens = MarkdownIt().parse(document)
    assert tokens[0].type == "fence" and tokens[0].content.splitlines() == lines


# --- deletes that only a deliberate act may cause ---------------------------------------------


def protected(name: str, *, protect: bool, absent: bool = False) -> str:
    extra = f"protect: {str(protect).lower()}" + ("\nstate: absent" if absent else "")
    return lookup_doc(name, "" if absent else KINDS["static"], extra=extra)


async def test_recorded_protection_holds_until_an_apply_lifts_it(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(protected("geo", protect=True), lookup_doc("asn", KINDS["static"]))
    assert await project.apply() == 0
    # One change that lifts protection and deletes: the record still says protected.
    project.write(protected("geo", protect=False, absent=True), lookup_doc("asn", KINDS["static"]))
    with pytest.raises(PlanError, match="protected lookup.*acme/geo") as caught:
        await project.plan()
    assert "an apply with protect: false and nothing else" in (caught.value.hint or "")
    with pytest.raises(PlanError, match="protected"):
        await project.apply()
    assert project.emulator.store.get("acme", "geo") is not None
    # Lifted by an apply of its own, then deleted.
    project.write(protected("geo", protect=False), lookup_doc("asn", KINDS["static"]))
    assert await project.apply() == 0
    project.write(protected("geo", protect=False, absent=True), lookup_doc("asn", KINDS["static"]))
    assert await project.apply() == 0
    assert project.emulator.store.get("acme", "geo") is None


async def test_prune_without_the_state_is_refused(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn", "ip")
    project.settings.state_path.unlink()  # a missing state (a wrong RECONCILER_STATE, say)
    (project.specs / "ip.yaml").unlink()
    with pytest.raises(PlanError, match="the state records no lookup of acme"):
        await project.plan()
    with pytest.raises(PlanError, match="--allow-prune-without-state|cannot tell"):
        await project.apply()
    assert project.emulator.store.get("acme", "ip") is not None
    plan = (await project.plan(guards=Guards(allow_prune_without_state=True))).plan
    assert [(c.address, c.action.value) for c in plan.actionable] == [("acme/ip", "delete")]


@pytest.mark.parametrize("removed, refused", [(2, False), (3, True)])
async def test_a_mass_destroy_needs_to_be_asked_for(
    tmp_path: Path, removed: int, refused: bool
) -> None:
    names = [f"l{i}" for i in range(10)]
    project = await applied(tmp_path, *names)
    for name in names[:removed]:
        (project.specs / f"{name}.yaml").unlink()
    if refused:
        with pytest.raises(
            PlanError, match=r"3 of the 10 managed lookup\(s\) of acme, more than 20%"
        ):
            await project.plan()
        with pytest.raises(PlanError, match="more than 20%"):
            await project.apply()
        assert all(project.emulator.store.get("acme", name) for name in names)
        plan = (await project.plan(guards=Guards(allow_mass_destroy=True))).plan
        assert len(plan.actionable) == 3
        # A limit of the Domain's own decides instead of the default share.
        (project.specs / "domain.yaml").write_text(
            DOMAIN.replace("prune: true", "prune: true, maxDestroy: 3")
        )
    plan = (await project.plan()).plan
    assert len(plan.actionable) == removed


async def test_a_domain_dropped_by_a_label_typo_is_a_loud_warning(tmp_path: Path) -> None:
    project = Project(tmp_path)

    def domains(globex_tier: str) -> str:
        return "---\n".join(
            f"apiVersion: reconciler/v1\nkind: Domain\n"
            f"metadata: {{name: {d}, labels: {{tier: {t}}}}}\nspec: {{prune: true}}\n"
            for d, t in (("acme", "gold"), ("globex", globex_tier))
        )

    fanned = lookup_doc("X", KINDS["static"]).replace(
        "{domain: acme, name: X}", "{name: bad_ips, domainSelector: {labels: {tier: gold}}}"
    )
    project.write(fanned)
    (project.specs / "domains.yaml").write_text(domains("gold"))
    assert await project.apply() == 0
    (project.specs / "domains.yaml").write_text(domains("glod"))  # the typo
    plan = (await project.plan()).plan
    assert [(c.address, c.action.value) for c in plan.actionable] == [("globex/bad_ips", "delete")]
    assert (
        "WARNING: globex/bad_ips will be destroyed, yet a Lookup named bad_ips still goes to "
        "acme: did a Domain label or a domains list drop globex?"
    ) in plan.warnings
    text = render_text(plan)
    assert "did a Domain label or a domains list drop globex?" in text


async def test_a_rename_by_case_is_a_loud_warning(tmp_path: Path) -> None:
    project = await applied(tmp_path, "geo", "asn", "ip", "dns", "url")
    project.write(lookup_doc("Geo", KINDS["static"]), file="geo.yaml")
    plan = (await project.plan()).plan
    assert sorted((c.address, c.action.value) for c in plan.actionable) == [
        ("acme/Geo", "create"),
        ("acme/geo", "delete"),
    ]
    assert (
        "WARNING: acme/geo will be destroyed and acme/Geo created: the names differ only in case"
        in plan.warnings[0]
    )


# --- internal errors seen by hostile inputs ---------------------------------------------------


def test_a_saved_plan_of_another_kind_is_refused_under_python_o(tmp_path: Path) -> None:
    wrong = tmp_path / "plan.json"
    wrong.write_text(json.dumps({"apply": {"kind": "something-else", "paths": [], "changes": []}}))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    env = {**os.environ, "CI": "", "DEVO_REGION": "us", "DEVO_TOKEN": "t"}
    # Both plans in one process under -O (the command line's entry point, once per plan; each
    # answer ends with a line of its own on both streams).
    probe = (
        "import sys\n"
        "from reconciler.__main__ import main\n"
        "for path in sys.argv[1:]:\n"
        "    sys.argv = ['reconciler', 'apply', '--plan', path]\n"
        "    try:\n        main()\n        code = 0\n"
        "    except SystemExit as exc:\n        code = exc.code\n"
        "    for stream in (sys.stdout, sys.stderr):\n"
        "        print(f'-- exit {code}', file=stream, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-O", "-c", probe, str(wrong), str(deep)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    out, err = re.split(r"-- exit (\S+)\n", done.stdout), re.split(r"-- exit (\S+)\n", done.stderr)
    assert out[1::2] == err[1::2] == ["1", "1"], done.stdout + done.stderr
    for said, told in zip(out[0:-1:2], err[0:-1:2], strict=True):
        assert "is not a saved plan" in told, told
        assert "Internal error" not in told and "No changes" not in said


def test_a_deeply_nested_state_file_is_a_clean_error(tmp_path: Path, runner: CliRunner) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "lookups": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = runner.invoke(cli, ["state", "show", "--state", str(state)])
    assert result.exit_code == 1
    assert "nested too deeply" in result.stderr and "Internal error" not in result.stderr


# --- state migrate resumes ----------------------------------------------------------------------


async def test_a_killed_state_migrate_resumes(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.state.journal import Journal

    project = Project(tmp_path)
    for round_ in range(3):  # three applies: several records and journal entries
        project.write(
            *(lookup_doc(f"l{i}", KINDS["static"].replace("user", f"u{round_}")) for i in range(4))
        )
        assert await project.apply() == 0
    source = str(project.settings.state_path)
    target = str(tmp_path / "moved/")
    source_ids = [e.id for e in Journal.for_state(source).entries()]
    assert len(source_ids) == 12
    real_append = Journal.append
    calls = {"n": 0}

    def dies_after_five(self: Journal, entry: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # the kill, half way through the journal
        real_append(self, entry)

    monkeypatch.setattr(Journal, "append", dies_after_five)
    killed = runner.invoke(cli, ["state", "migrate", "--state", source, "--to", target])
    assert killed.exit_code == 130
    monkeypatch.setattr(Journal, "append", real_append)
    # The journal went first: the target has part of it and no state, so nothing reads it as a
    # finished migration; the run again resumes instead of refusing.
    assert not (tmp_path / "moved" / "state.json").exists()
    resumed = runner.invoke(cli, ["state", "migrate", "--state", source, "--to", target])
    assert resumed.exit_code == 0, resumed.output
    assert "Copied 4 record(s) and 7 journal entr(y/ies)" in resumed.stderr
    assert "Resumed: 0 record(s) and 5 journal entr(y/ies) were there already" in resumed.stderr
    assert [e.id for e in Journal.for_state(target).entries()] == source_ids
    shown = runner.invoke(cli, ["state", "show", "--state", target, "--format", "json"])
    assert sorted(json.loads(shown.stdout)["lookups"]) == [f"acme/l{i}" for i in range(4)]
    again = runner.invoke(cli, ["state", "migrate", "--state", source, "--to", target])
    assert again.exit_code == 0 and "Copied 0 record(s) and 0 journal" in again.stderr
    # A target holding another state's records is still refused.
    other = tmp_path / "other" / "state.json"
    other.parent.mkdir()
    other.write_text(
        json.dumps({"version": 1, "lookups": {"acme/zz": {"kind": "csv", "canonical": {}}}})
    )
    refused = runner.invoke(cli, ["state", "migrate", "--state", source, "--to", str(other)])
    assert refused.exit_code == 1 and "records that are not the source's" in refused.stderr


# --- import -------------------------------------------------------------------------------------


async def test_import_writes_only_what_is_unmanaged_and_the_result_plans_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.browse import run_import
    from reconciler.emulator.derive import derive

    project = await applied(tmp_path, "geo", "asn")
    keeping = DOMAIN.replace("prune: true", "prune: false")
    (project.specs / "domain.yaml").write_text(keeping)
    store = project.emulator.store
    for name in ("_domain", "manual_x"):  # made by hand in Devo; one named like the Domain file
        config = derive("deploy-static-query", "acme", name, {"query": "from a select b"})
        store.create("acme", name, config, {}, [(0.0, "deploy.ok", "x")], "o")
    # The plan's hint names the command, and following it must not break the specs.
    hints = (await project.plan()).plan.hints
    assert any("reconciler import acme" in h for h in hints), hints
    out = project.specs
    assert (
        emit(await run_import(project.settings, "acme", out_dir=out, transport=project.transport()))
        == 0
    )
    written = sorted(p.name for p in (out / "acme").iterdir())
    assert written == ["_domain-2.yaml", "manual_x.yaml"]  # no second Domain, no managed lookup
    assert "2 lookup(s) of acme are managed already" in capsys.readouterr().out
    assert (out / "domain.yaml").read_text() == keeping  # the Domain document is untouched
    plan = (await project.plan()).plan
    assert not plan.can_apply(), [(c.address, c.reason) for c in plan.actionable]
    assert {c.address for c in plan.changes} == {
        "acme/_domain",
        "acme/asn",
        "acme/geo",
        "acme/manual_x",
    }


@pytest.mark.parametrize("domain", ["../../tmp", "''", "a/b", ".hidden", ""])
def test_import_refuses_a_domain_that_is_not_a_name(
    tmp_path: Path, runner: CliRunner, domain: str
) -> None:
    result = runner.invoke(
        cli, ["import", domain, "--out", str(tmp_path / "out"), "--emulator"], env={"CI": ""}
    )
    assert result.exit_code == 1, result.output
    assert "is not a Devo domain name" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "tmp").exists()


def test_huge_headers_and_cells_give_short_clear_errors(tmp_path: Path, runner: CliRunner) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "wide.csv").write_text(
        ",".join(f"c{i}" for i in range(200_000)) + "\n" + ",".join("x" * 200_000) + "\n"
    )
    # One cell over 16 MiB: DuckDB's fast path dropped such a line without a word (0 rows).
    with (data / "fat.csv").open("w") as handle:
        handle.write("ip,country\n10.0.0.1,")
        handle.write("A" * (17 * 1024 * 1024))
        handle.write("\n10.0.0.2,ES\n")
    body = KINDS["csv_file"]
    (tmp_path / "a.yaml").write_text(
        lookup_doc("wide", body.replace("geo.csv", "wide.csv"))
        + "---\n"
        + lookup_doc("fat", body.replace("geo.csv", "fat.csv"))
    )
    result = runner.invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert max(len(line) for line in lines) < 400, max(len(line) for line in lines)
    assert any("wide.csv:1: error: header ['c0'" in line and "more)]" in line for line in lines)
    assert any(
        "fat.csv:2: error: a cell is larger than 16 MiB, the most Devo accepts" in line
        for line in lines
    ), lines


def test_the_readme_names_a_real_test_for_every_guarantee() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## What reconciler will never do")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    sources = "".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    for row in rows[1:]:  # the header aside
        named = re.findall(r"test_[a-z0-9_]+(?=`| \(|,|$)", row.split("|")[3])
        assert named, row
        for name in named:
            assert (
                name.endswith(".py")
                or f"def {name}(" in sources
                or (root / "tests" / f"{name}.py").exists()
            ), name


async def test_records_of_lookups_gone_on_purpose_are_forgotten(tmp_path: Path) -> None:
    """A delete whose run was killed after Devo took it, or a lookup deleted by hand after its
    spec went: the next apply forgets the record (state show no longer lists it)."""
    from reconciler.state import State

    project = await applied(tmp_path, "geo", "asn", "ip")
    project.write(lookup_doc("ip", "", extra="state: absent"), file="ip.yaml")
    (project.specs / "asn.yaml").unlink()
    (project.specs / "domain.yaml").write_text(DOMAIN.replace("prune: true", "prune: false"))
    for name in ("ip", "asn"):  # gone from Devo, as if a killed run's deletes had gone through
        project.emulator.store.delete("acme", name, [(0.0, "del.ok", "deleted")])
    assert set(State.load(str(project.settings.state_path)).lookups) == {
        "acme/geo",
        "acme/asn",
        "acme/ip",
    }
    assert not (await project.plan()).plan.can_apply()
    assert await project.apply() == 0
    assert set(State.load(str(project.settings.state_path)).lookups) == {"acme/geo"}


async def test_records_of_specs_removed_without_prune_are_forgotten_unless_protected(
    tmp_path: Path,
) -> None:
    """No prune: the lookups stay in Devo, unmanaged, and their records go (issue 26, item 5);
    a protected one keeps its record, which is what stops a later prune of it."""
    from reconciler.state import State

    project = Project(tmp_path)
    project.write(
        lookup_doc("geo", KINDS["static"]),
        lookup_doc("asn", KINDS["static"]),
        protected("ip", protect=True),
    )
    assert await project.apply() == 0
    project.write(lookup_doc("geo", KINDS["static"]))
    assert await project.apply() == 0
    assert set(State.load(str(project.settings.state_path)).lookups) == {"acme/geo", "acme/ip"}
    assert project.emulator.store.get("acme", "asn") is not None  # left as it was
    (project.specs / "domain.yaml").write_text(DOMAIN)  # prune turned on later
    with pytest.raises(PlanError, match="protected lookup.*acme/ip"):
        await project.plan()
