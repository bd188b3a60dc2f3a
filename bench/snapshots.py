"""Benchmarks of the state's content snapshots and its encryption (issue 28), one run, printed:

* snapshot bytes ÷ CSV bytes for a generated CSV (100 MB by default), zstd level 3, and the time
  to make it, against gzip -6 on the same bytes;
* apply of a CSV lookup to the in-process emulator with and without snapshots, same run (median
  of the repeats, each a fresh state);
* writing a state of N records plain and encrypted (AES-256-GCM), MB/s, same run.

    python bench/snapshots.py [--megabytes 100] [--apply-megabytes 8] [--records 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import io
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(path: Path, megabytes: float) -> None:
    """The CSV of bench/run.py's CSV section: ip, n, name."""
    with path.open("w") as handle:
        handle.write("ip,n,name\n")
        i = 0
        while handle.tell() < megabytes * 1024 * 1024:
            rows = []
            for _ in range(10_000):
                rows.append(f"10.{i % 256}.{i // 256 % 256}.{i // 65536 % 256},{i},host-{i}\n")
                i += 1
            handle.write("".join(rows))


def snapshot_ratio(work: Path, megabytes: float) -> dict[str, float]:
    import hashlib

    from reconciler.state.snapshots import Snapshots

    csv = work / "big.csv"
    generate(csv, megabytes)
    size = csv.stat().st_size
    sha = hashlib.sha256(csv.read_bytes()).hexdigest()
    started = time.perf_counter()
    written = Snapshots(str(work / "state") + "/").put(csv, sha)
    zstd_seconds = time.perf_counter() - started
    data = csv.read_bytes()
    started = time.perf_counter()
    gzipped = len(gzip.compress(data, 6))
    gzip_seconds = time.perf_counter() - started
    return {
        "csv_mb": size / 1e6,
        "zstd_ratio": written / size,
        "zstd_s": zstd_seconds,
        "gzip_ratio": gzipped / size,
        "gzip_s": gzip_seconds,
    }


def apply_times(work: Path, megabytes: float, repeats: int) -> dict[str, float]:
    from reconciler.state import snapshots
    from tests.planning import Project, lookup_doc

    body = """
        csv:
          file: data/big.csv
          hasHeader: true
          columns: [{name: ip, type: IP4}, {name: n, type: INT8}, {name: name, type: STRING}]
          key: {type: column, column: n}
    """
    real_put = snapshots.Snapshots.put
    times: dict[str, list[float]] = {"with": [], "without": []}
    for index in range(repeats):
        for mode in ("with", "without"):
            folder = work / f"apply-{mode}-{index}"
            project = Project(folder)
            generate(project.specs / "data" / "big.csv", megabytes)
            project.write(lookup_doc("big", body))
            snapshots.Snapshots.put = (  # type: ignore[method-assign]
                real_put if mode == "with" else (lambda self, path, sha: 0)
            )
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # apply's progress lines
                assert asyncio.run(project.apply()) == 0
            times[mode].append(time.perf_counter() - started)
    snapshots.Snapshots.put = real_put  # type: ignore[method-assign]
    return {f"{mode}_s": statistics.median(values) for mode, values in times.items()}


def state_write(work: Path, records: int, repeats: int) -> dict[str, float]:
    from reconciler.state import LookupState, State

    result = {}
    for mode in ("plain", "encrypted"):
        if mode == "encrypted":
            os.environ["RECONCILER_STATE_KEY"] = secrets.token_hex(32)
        else:
            os.environ.pop("RECONCILER_STATE_KEY", None)
        seconds, size = [], 0
        for index in range(repeats):
            state = State.load(str(work / f"state-{mode}-{index}") + "/")
            for i in range(records):
                state.lookups[f"acme/l{i:05d}"] = LookupState(
                    kind="staticQuery",
                    endpoint="deploy-static-query",
                    canonical={"query": f"from siem.t select user, role, {i}", "i": i},
                )
            state._ops.append(("record", "acme/l00000", state.lookups["acme/l00000"].to_json()))
            started = time.perf_counter()
            state.commit()
            seconds.append(time.perf_counter() - started)
            size = state.bytes_written
        os.environ.pop("RECONCILER_STATE_KEY", None)
        result[f"{mode}_mb_s"] = size / statistics.median(seconds) / 1e6
        result[f"{mode}_mb"] = size / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=100)
    parser.add_argument("--apply-megabytes", type=float, default=8)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconciler-bench-snapshots-") as scratch:
        work = Path(scratch)
        ratio = snapshot_ratio(work, args.megabytes)
        print(
            f"snapshot of a {ratio['csv_mb']:.1f} MB CSV: zstd-3 {ratio['zstd_ratio']:.3f} of its "
            f"bytes in {ratio['zstd_s']:.2f} s; gzip-6 {ratio['gzip_ratio']:.3f} in "
            f"{ratio['gzip_s']:.2f} s"
        )
        times = apply_times(work, args.apply_megabytes, args.repeats)
        print(
            f"apply of a {args.apply_megabytes:g} MB CSV lookup (median of {args.repeats}): "
            f"{times['with_s']:.2f} s with snapshots, {times['without_s']:.2f} s without "
            f"(×{times['with_s'] / times['without_s']:.2f})"
        )
        state = state_write(work, args.records, args.repeats)
        print(
            f"state of {args.records} records ({state['plain_mb']:.1f} MB): written at "
            f"{state['plain_mb_s']:.0f} MB/s plain, {state['encrypted_mb_s']:.0f} MB/s encrypted "
            f"(×{state['encrypted_mb_s'] / state['plain_mb_s']:.2f})"
        )


if __name__ == "__main__":
    main()
