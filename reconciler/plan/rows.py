"""Row-level diffs of a ``csv.file`` lookup's CSV against the version apply last deployed.

Apply records, per lookup, the CSV's sha256 and the git commit of its repository. When a plan sees
the content changed, this step asks git for the file at that commit (``git show``, streamed to a
temporary file) and, only if its sha256 is the one recorded (so it is exactly what was deployed),
compares the two by key: rows added, removed and changed, with a few samples. There is no size
limit: files of a few megabytes are compared in Python, bigger ones by DuckDB (the ``big`` extra),
which joins the two by key in bounded memory and writes the delta uploads itself. This is I/O, so
it runs after the pure plan builder, as its own step.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from reconciler import gitrepo
from reconciler.desired import CsvContent
from reconciler.plan.model import Plan
from reconciler.sources.csv import key_columns
from reconciler.spec.csvcheck import csv_rows
from reconciler.spec.csvengine import RowDelta
from reconciler.spec.model import CsvSource
from reconciler.state import CsvRecord
from reconciler.state.snapshots import Snapshots

SAMPLES = 3


def _why_missing(commit: str, path: Path) -> str:
    """Why git cannot show ``path`` at ``commit``: said in the plan instead of a silent gap."""
    if gitrepo.is_shallow(path.parent):
        return (
            f"rows not diffed by key: commit {commit[:12]} is not in this shallow clone "
            "(check out with full history: actions/checkout fetch-depth: 0, GIT_DEPTH: 0)"
        )
    if gitrepo.toplevel(path.parent) is None:
        return "rows not diffed by key: the CSV is not in a git repository"
    return f"rows not diffed by key: git has no {path.name} at commit {commit[:12]}"


def applied_content(
    known: CsvRecord, path: Path, folder: Path, snapshots: Snapshots | None
) -> tuple[Path | None, str | None]:
    """The content last applied for a CSV whose record is ``known``: (a copy, None), or (None,
    why not). The snapshot the state keeps comes first; git at the recorded commit is the
    fallback (a state written before snapshots, or one whose snapshots were lost)."""
    sha = known.sha256
    if sha is None:
        return None, "rows not diffed by key: no recorded content to compare with"
    if snapshots is not None:
        kept = snapshots.fetch(sha, folder / f"snapshot-{path.name}")
        if kept is not None:
            return kept, None
    commit = known.commit
    if commit is None:
        return None, (
            "rows not diffed by key: the content last applied is neither in the state's "
            "snapshots nor in git"
        )
    old = gitrepo.file_at(commit, path, folder)
    if old is None:
        return None, _why_missing(commit, path)
    if old[1] != sha:
        return None, (
            f"rows not diffed by key: the file applied was not the one committed at {commit[:12]}"
        )
    return old[0], None


def _rows(data: bytes, source: CsvSource) -> Iterator[list[str]]:
    _, rows = csv_rows(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""), source)
    return (row for _, row in rows)


def delta_file(rows: list[list[str]], source: CsvSource) -> bytes:
    """One upload of a delta: the header (when the lookup has one) and the rows, as CSV."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    if source.hasHeader:
        writer.writerow([c.name for c in source.columns])
    writer.writerows(rows)
    return out.getvalue().encode()


def row_delta(old: Path, new: Path, source: CsvSource, folder: Path) -> RowDelta:
    """The rows that changed between two versions of a CSV by the lookup's key; the delta
    uploads are written into ``folder``."""
    from reconciler.spec import csvengine

    big = max(old.stat().st_size, new.stat().st_size) >= csvengine.ENGINE_MIN_BYTES
    if big and csvengine.available():
        found = engine_delta(old, new, source, folder)
        if found is not None:
            return found
    return _python_delta(old.read_bytes(), new.read_bytes(), source, folder)


def engine_delta(old: Path, new: Path, source: CsvSource, folder: Path) -> RowDelta | None:
    """The comparison through DuckDB (``csvengine.keyed_delta``), or None when it cannot."""
    from reconciler.spec import csvengine

    return csvengine.keyed_delta(old, new, source, folder, SAMPLES)


def _python_delta(old: bytes, new: bytes, source: CsvSource, folder: Path) -> RowDelta:
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
    delta = RowDelta(len(added), len(removed), len(changed), samples)
    deletes = [before[k] for k in [*removed, *changed]]
    adds = [after[k] for k in [*added, *changed]]
    if deletes:
        delta.deletes = folder / "delta.del.csv"
        delta.deletes.write_bytes(delta_file(deletes, source))
    if adds:
        delta.adds = folder / "delta.add.csv"
        delta.adds.write_bytes(delta_file(adds, source))
    delta.send_rows = len(deletes) + len(adds)
    return delta


#: ``auto`` sends a delta when it is at most this share of the file's bytes.
AUTO_DELTA_SHARE = 0.25


def enrich(
    plan: Plan,
    sources: Mapping[str, CsvContent],
    recorded: Mapping[str, CsvRecord],
    live_rows: Mapping[str, int | None] | None = None,
    snapshots: Snapshots | None = None,
) -> Plan:
    """The plan with row-level detail and an upload strategy for each CSV change.

    ``sources``: address → the local CSV (path, rows, csv block); ``recorded``: address → the
    state's csv record; ``live_rows``: address → ``numEntries`` Devo reports now.
    """
    live_rows = live_rows or {}
    with tempfile.TemporaryDirectory(prefix="reconciler-rows-") as scratch:
        return _enrich(plan, sources, recorded, live_rows, Path(scratch), snapshots)


def _enrich(
    plan: Plan,
    sources: Mapping[str, CsvContent],
    recorded: Mapping[str, CsvRecord],
    live_rows: Mapping[str, int | None],
    scratch: Path,
    snapshots: Snapshots | None,
) -> Plan:
    changes = []
    for change in plan.changes:
        detail = change.csv
        local = sources.get(change.address)
        if detail is None or local is None:
            changes.append(change)
            continue
        path, source = local.path, local.spec
        folder = scratch / str(len(changes))
        folder.mkdir()
        known = recorded.get(change.address) or CsvRecord()
        delta: RowDelta | None = None
        note = None
        if detail.source in ("live", "unproven"):
            note = "the data in Devo is not what was applied: the whole file is sent"
        elif not detail.before_sha256:
            note = "rows not diffed by key: no recorded content to compare with"
        else:
            old, note = applied_content(known, path, folder, snapshots)
            if old is not None:
                delta = row_delta(old, path, source, folder)
        update: dict[str, object] = {}
        if delta is not None:
            update.update(
                added=delta.added,
                removed=delta.removed,
                changed=delta.changed,
                samples=delta.samples,
            )
        strategy, rows, size, why = _strategy(
            source, local, delta, live_rows.get(change.address), known.rows
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
    local: CsvContent,
    delta: RowDelta | None,
    live_rows: int | None,
    recorded_rows: int | None,
) -> tuple[str, int, int, str | None]:
    """(strategy, rows to send, bytes to send, why not a delta when one was asked for)."""
    size, full_rows = local.size, local.rows
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
    delta_bytes, delta_rows = delta.send_bytes, delta.send_rows
    if source.upload == "auto" and delta_bytes > AUTO_DELTA_SHARE * size:
        return "full", full_rows, size, None
    return "delta", delta_rows, delta_bytes, None
