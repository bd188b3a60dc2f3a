"""The benchmark script runs end to end (quick sizes), so it cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_runs_and_reports_every_section() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for heading in (
        "## 1. Refresh",
        "## 2. Apply",
        "## 3. Start-up",
        "## 4. CSV",
        "## 5. State",
        "## 6. Many domains",
    ):
        assert heading in out.stdout
    assert "| local | 50 |" in out.stdout and "| s3 (moto) | 50 |" in out.stdout
    # The refresh makes one list request per domain (10 domains), whatever N is.
    assert "| 100 | 1 | 10 |" in out.stdout
    # The same plan over 6 times more domains costs 50 more list calls (one per domain).
    assert "| 120 | 10 | 10 |" in out.stdout and "| 120 | 60 | 60 |" in out.stdout
