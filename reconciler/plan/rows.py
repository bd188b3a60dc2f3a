"""Row-level diffs of a ``csv.file`` lookup's CSV against the version apply last deployed.

Apply records, per lookup, the CSV's sha256 and the git commit of its repository. When a plan sees
the content changed, this step asks git for the file at that commit (``git show``) and, only if its
sha256 is the one recorded (so it is exactly what was deployed), compares the two by key: rows added,
removed and changed, with a few samples. Files over ``MAX_BYTES`` are not diffed row by row (the plan
still shows the row counts). This is I/O, so it runs after the pure plan builder, as its own step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.plan.model import Plan
from reconciler.sources.csv import key_columns
from reconciler.spec.model import CsvSource

MAX_BYTES = 20 * 1024 * 1024
SAMPLES = 3


def _git(folder: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def head_commit(folder: Path) -> str | None:
    """The commit checked out in the git repository holding ``folder``, if any."""
    out = _git(folder, "rev-parse", "HEAD")
    return out.decode().strip() if out else None


def _why_missing(commit: str, path: Path) -> str:
    """Why git cannot show ``path`` at ``commit``: said in the plan instead of a silent gap."""
    shallow = _git(path.parent, "rev-parse", "--is-shallow-repository")
    if shallow is not None and shallow.decode().strip() == "true":
        return (
            f"rows not diffed by key: commit {commit[:12]} is not in this shallow clone "
            "(check out with full history: actions/checkout fetch-depth: 0, GIT_DEPTH: 0)"
        )
    if _git(path.parent, "rev-parse", "--show-toplevel") is None:
        return "rows not diffed by key: the CSV is not in a git repository"
    return f"rows not diffed by key: git has no {path.name} at commit {commit[:12]}"


def file_at(commit: str, path: Path) -> bytes | None:
    """The content of ``path`` at ``commit`` in its repository, or None."""
    top = _git(path.parent, "rev-parse", "--show-toplevel")
    if not top:
        return None
    try:
        relative = path.resolve().relative_to(Path(top.decode().strip()).resolve())
    except ValueError:
        return None
    return _git(path.parent, "show", f"{commit}:{relative.as_posix()}")


def _rows(data: bytes, source: CsvSource) -> Iterator[list[str]]:
    text = io.StringIO(data.decode("utf-8-sig", errors="replace"), newline="")
    lines: Iterator[str] = iter(text)
    if source.skipPreface:
        preface = re.compile(source.skipPreface)
        kept: list[str] = []
        skipping = True
        for line in lines:
            if skipping and preface.search(line.rstrip("\r\n")):
                continue
            skipping = False
            kept.append(line)
        lines = iter(kept)
    reader = csv.reader(lines)
    header = source.hasHeader
    for row in reader:
        if not row or row == [""]:
            continue
        if header:
            header = False
            continue
        yield row


@dataclass
class RowDelta:
    """What changed between two versions of a CSV, by key, and the rows a delta upload sends."""

    added: int
    removed: int
    changed: int
    samples: list[str]
    deletes: list[list[str]]  # old rows whose keys go: removed rows and changed rows' old versions
    adds: list[list[str]]  # new rows: added rows and changed rows' new versions


def delta_file(rows: list[list[str]], source: CsvSource) -> bytes:
    """One upload of a delta: the header (when the lookup has one) and the rows, as CSV."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    if source.hasHeader:
        writer.writerow([c.name for c in source.columns])
    writer.writerows(rows)
    return out.getvalue().encode()


def diff_rows(old: bytes, new: bytes, source: CsvSource) -> tuple[int, int, int, list[str]]:
    """(added, removed, changed, samples) between two versions of a CSV, by the lookup's key."""
    delta = row_delta(old, new, source)
    return delta.added, delta.removed, delta.changed, delta.samples


def row_delta(old: bytes, new: bytes, source: CsvSource) -> RowDelta:
    """The rows that changed between two versions of a CSV, by the lookup's key."""
    positions = key_columns(source)

    def index(data: bytes) -> dict[tuple[str, ...], list[str]]:
        rows: dict[tuple[str, ...], list[str]] = {}
        for row in _rows(data, source):
            rows[tuple(row[i] for i in positions if i < len(row)) if positions else tuple(row)] = (
                row
            )
        return rows

    before, after = index(old), index(new)
    added = [k for k in after if k not in before]
    removed = [k for k in before if k not in after]
    changed = [k for k in after if k in before and after[k] != before[k]]
    samples = [f"+ {','.join(after[k])}" for k in added[:SAMPLES]]
    samples += [f"- {','.join(before[k])}" for k in removed[:SAMPLES]]
    samples += [f"~ {','.join(before[k])} → {','.join(after[k])}" for k in changed[:SAMPLES]]
    return RowDelta(
        added=len(added),
        removed=len(removed),
        changed=len(changed),
        samples=samples,
        deletes=[before[k] for k in [*removed, *changed]],
        adds=[after[k] for k in [*added, *changed]],
    )


#: ``auto`` sends a delta when it is at most this share of the file's bytes.
AUTO_DELTA_SHARE = 0.25


def enrich(
    plan: Plan,
    sources: dict[str, tuple[Path, CsvSource]],
    recorded: dict[str, dict[str, object]],
    live_rows: Mapping[str, int | None] | None = None,
) -> Plan:
    """The plan with row-level detail and an upload strategy for each CSV change.

    ``sources``: address → (local CSV path, csv block); ``recorded``: address → the state's csv
    record; ``live_rows``: address → ``numEntries`` Devo reports now.
    """
    live_rows = live_rows or {}
    changes = []
    for change in plan.changes:
        detail = change.csv
        local = sources.get(change.address)
        if detail is None or local is None:
            changes.append(change)
            continue
        path, source = local
        known = recorded.get(change.address) or {}
        commit = known.get("commit")
        delta: RowDelta | None = None
        note = None
        if detail.source == "live":
            note = "the data in Devo is not what was applied: the whole file is sent"
        elif not isinstance(commit, str) or not detail.before_sha256:
            note = "rows not diffed by key: no recorded content to compare with"
        elif path.stat().st_size > MAX_BYTES:
            note = f"rows not diffed by key: files over {MAX_BYTES // 2**20} MB are not"
        else:
            old = file_at(commit, path)
            if old is None:
                note = _why_missing(commit, path)
            elif len(old) > MAX_BYTES:
                note = f"rows not diffed by key: files over {MAX_BYTES // 2**20} MB are not"
            elif hashlib.sha256(old).hexdigest() != known.get("sha256"):
                note = (
                    f"rows not diffed by key: the file applied was not the one committed "
                    f"at {commit[:12]}"
                )
            else:
                delta = row_delta(old, path.read_bytes(), source)
        update: dict[str, object] = {}
        if delta is not None:
            update.update(
                added=delta.added,
                removed=delta.removed,
                changed=delta.changed,
                samples=delta.samples,
            )
        strategy, rows, size, why = _strategy(
            source, path, delta, live_rows.get(change.address), known.get("rows")
        )
        update.update(strategy=strategy, send_rows=rows, send_bytes=size)
        if why is not None and detail.source == "spec":
            note = why if note is None else f"{note}; {why}"
        if note is not None and (detail.source == "live" or delta is None or why is not None):
            update["note"] = note
        changes.append(change.model_copy(update={"csv": detail.model_copy(update=update)}))
    return plan.model_copy(update={"changes": tuple(changes)})


def _strategy(
    source: CsvSource,
    path: Path,
    delta: RowDelta | None,
    live_rows: int | None,
    recorded_rows: object,
) -> tuple[str, int, int, str | None]:
    """(strategy, rows to send, bytes to send, why not a delta when one was asked for)."""
    size = path.stat().st_size
    full_rows = sum(1 for _ in _rows(path.read_bytes(), source)) if size <= MAX_BYTES else 0
    if source.upload == "full":
        return "full", full_rows, size, None
    if delta is None:
        why = "a delta needs the content last applied" if source.upload == "delta" else None
        return "full", full_rows, size, why
    if live_rows is not None and isinstance(recorded_rows, int) and live_rows != recorded_rows:
        return (
            "full",
            full_rows,
            size,
            f"Devo holds {live_rows} rows, not the {recorded_rows} last applied (an interrupted "
            "delta?): the whole file repairs it",
        )
    delta_bytes = len(delta_file(delta.deletes, source)) + len(delta_file(delta.adds, source))
    delta_rows = len(delta.deletes) + len(delta.adds)
    if source.upload == "auto" and delta_bytes > AUTO_DELTA_SHARE * size:
        return "full", full_rows, size, None
    return "delta", delta_rows, delta_bytes, None
