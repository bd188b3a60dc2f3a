"""The reliability suite: faults at scale, hostile input, and secret canaries through every output.

Marked ``reliability`` (``pytest -m reliability`` runs it alone, with the crash and approval tests of
``test_apply``). The fault test prints its counts: converged, reported, duplicates, lost.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from reconciler.emulator import EmulatorConfig, Grant
from tests.planning import KINDS, Project, lookup_doc
from tests.support import CliRunner, served

pytestmark = pytest.mark.reliability
ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "corpus" / "bad").glob("*.yaml"))
UNREACHABLE = "http://127.0.0.1:9/lookup-api"  # nothing listens: any request would be an error


def test_faults_at_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = EmulatorConfig(
        create_latency=0.0,
        deploy_latency=0.05,
        delete_latency=0.05,
        rate_5xx=0.10,
        rate_429=0.10,
        retry_after=0.05,
        rate_drop=0.05,
        job_failure_rate=0.05,
        seed=2026,
    )
    project = Project(tmp_path, config)
    names = [f"lookup-{i:03d}" for i in range(100)]
    project.write(*(lookup_doc(n, KINDS["static"]) for n in names))
    with served(project.app) as base:
        from tests.test_apply import loopback

        loopback(project, base)
        first = asyncio.run(project.apply(parallelism=16))
        report = capsys.readouterr().out
        failed = [line for line in report.splitlines() if line.startswith("  ✗ ")]
        reported_with_message = [
            line
            for line in failed
            if "Lookup deployment failed" in line or "Lookup creation failed" in line
        ]
        project.emulator.config.job_failure_rate = 0.0
        second = asyncio.run(project.apply(parallelism=16))
        second_report = capsys.readouterr().out
        final = asyncio.run(project.plan())
    stats = project.emulator.stats
    converged = sum(1 for c in final.plan.changes if c.action.value == "no-op")
    lost = len(names) - converged
    # Each lookup really created exactly once (a create whose job failed leaves nothing, so it is
    # created again by the second apply), and no create ever sent for a lookup that existed (409).
    created_ok = project.emulator.store.successful_creates()
    duplicates = sum(n - 1 for n in created_ok.values() if n > 1)
    conflicts = sum(stats.conflicts.values())
    with capsys.disabled():
        print(
            f"\n[reliability] faults={dict(stats.faults)} first apply: {len(names) - len(failed)} done, "
            f"{len(failed)} failed ({len(reported_with_message)} with Devo's message); second apply: exit {second}; "
            f"converged={converged} reported={len(failed)} duplicates={duplicates} conflicts={conflicts} lost={lost}"
        )
    assert sum(stats.faults.values()) >= 20  # the faults really happened
    assert first == (1 if failed else 0)
    assert len(reported_with_message) == len(failed)
    evidence = "\n".join(line for line in second_report.splitlines() if "✗" in line)
    assert second == 0 and converged == len(names) and lost == 0, evidence
    assert duplicates == 0 and set(created_ok) == {f"acme/{n}" for n in names}
    assert conflicts == 0


# --- hostile input -------------------------------------------------------------------------------


def _hostile(tmp_path: Path) -> list[Path]:
    cases = []
    big = tmp_path / "big.yaml"
    with big.open("w") as handle:
        line = "# " + "x" * 1000 + "\n"
        for _ in range(50 * 1024):
            handle.write(line)
    cases.append(big)
    deep = tmp_path / "deep.yaml"
    deep.write_text("spec: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    cases.append(deep)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "a: &a [x,x,x,x,x,x,x,x,x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
            for i in range(8)
        )
    )
    cases.append(bomb)
    for name in ("../etc/passwd", "a%2Fb", "a/b", "..", "x\u202ey"):
        path = tmp_path / f"name-{len(cases)}.yaml"
        path.write_text(lookup_doc(json.dumps(name), KINDS["static"]))
        cases.append(path)
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(lookup_doc("caf\xe9", KINDS["static"]).encode("latin-1"))
    cases.append(latin)
    nul_dir = tmp_path / "nul"
    (nul_dir / "data").mkdir(parents=True)
    (nul_dir / "data" / "geo.csv").write_bytes(b"ip,country\n10.0.0.1,E\x00S\n")
    (nul_dir / "spec.yaml").write_text(lookup_doc("nul", KINDS["csv_file"]))
    cases.append(nul_dir / "spec.yaml")
    return cases


@pytest.mark.parametrize("command", ["validate", "plan", "apply"])
def test_bad_input_never_sends_a_request(tmp_path: Path, command: str) -> None:
    """Every bad spec ends in a clear error, exit 1, no request (the URL is unreachable), no traceback."""
    runner = CliRunner()
    args = {
        "validate": [],
        "plan": ["--url", UNREACHABLE],
        "apply": ["--url", UNREACHABLE, "--auto-approve"],
    }[command]
    for case in [*CORPUS, *_hostile(tmp_path)]:
        result = runner.invoke(cli, [command, str(case), *args], env={"CI": ""})
        assert result.exit_code == 1, (case.name, result.output)
        assert "Traceback" not in result.output and "Internal error" not in result.stderr, (
            case.name,
            result.stderr,
        )
        assert "no answer" not in result.stderr and "Connect" not in result.stderr, (
            case.name,
            result.stderr,
        )
        assert ": error: " in result.stderr, (case.name, result.stderr)


def test_huge_yaml_is_refused_quickly_in_a_real_process(tmp_path: Path) -> None:
    [big, *_] = _hostile(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(big)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (
        out.returncode == 1
        and "spec files are limited to" in out.stderr
        and "Traceback" not in out.stderr
    )


# --- secrets ------------------------------------------------------------------------------------

CANARY_TOKEN = "canary-token-3e7f9a1b"
CANARY_S3 = "canary-s3-secret-8c2d4e6f"
CANARY_KEY = "canary-access-key-5a5a"


@pytest.mark.waits
def test_canary_secrets_never_appear_anywhere(tmp_path: Path) -> None:
    project = Project(
        tmp_path,
        EmulatorConfig(create_latency=0, deploy_latency=0.02, grants=[Grant(token=CANARY_TOKEN)]),
    )
    project.write(lookup_doc("s3", KINDS["csv_s3"]), lookup_doc("geo", KINDS["csv_file"]))
    token_file = tmp_path / "token"
    token_file.write_text(CANARY_TOKEN)
    wrong_file = tmp_path / "wrong-token"
    wrong_file.write_text(CANARY_TOKEN + "-wrong")
    env = {
        "TEST_S3_ACCESS": CANARY_KEY,
        "TEST_S3_SECRET": CANARY_S3,
        "RECONCILER_STATE": str(project.settings.state_path),
        "CI": "",
    }
    runner = CliRunner()
    outputs: list[str] = []
    specs = str(project.specs)
    plan_file = tmp_path / "plan.json"
    with served(project.app) as base:
        auth = ["--url", base, "--token-file", str(token_file), "--debug"]
        calls = [
            ["plan", specs, *auth],
            ["plan", specs, *auth, "--format", "json"],
            ["plan", specs, *auth, "--format", "markdown", "--out", str(plan_file)],
            ["apply", specs, *auth, "--auto-approve", "--format", "json"],
            ["apply", specs, *auth, "--auto-approve"],
            ["drift", specs, *auth, "--format", "json"],
            ["jobs", "acme/s3", *auth],
            ["import", "acme", "--out", str(tmp_path / "imported"), *auth],
            ["history", "--format", "json"],
            ["history"],
            ["plan", specs, "--url", base, "--token-file", str(wrong_file), "--debug"],  # 403
            ["plan", specs, "--url", base, "--debug"],  # 401
            [
                "plan",
                specs,
                "--url",
                base,
                "--auth-scheme",
                "standalone",
                "--token-file",
                str(wrong_file),
            ],
        ]
        for args in calls:
            result = runner.invoke(cli, args, env=env)
            outputs.append(result.stdout + result.stderr)
    assert "Token invalid or expired" in outputs[-3] and "requires valid auth" in outputs[-2]
    assert "Apply complete!" in outputs[4] or "No changes." in outputs[4]
    files = [
        p for p in tmp_path.rglob("*") if p.is_file() and p.name not in ("token", "wrong-token")
    ]
    texts = outputs + [p.read_bytes().decode("utf-8", "replace") for p in files]
    for secret in (CANARY_TOKEN, CANARY_S3, CANARY_KEY):
        leaks = [i for i, text in enumerate(texts) if secret in text]
        assert not leaks, (secret, [(calls + files)[i] for i in leaks])
