"""A CSV lookup's update sent as a delta: the rows that changed by key, not the whole file.

Devo's row protocol (``append`` with a ``contribution``): PUT the deleted keys' old rows (``del``),
wait for that job, then PUT the added and changed rows (``add``). The plan chose the delta
(``CsvChange.strategy``); here it is computed from the content last applied (its snapshot) and sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.apply.outcome import ApplyConsole
from reconciler.client import DeployResult, LookupClient, PollPolicy
from reconciler.desired import DesiredLookup
from reconciler.plan.model import Change
from reconciler.state import CsvRecord
from reconciler.state.snapshots import Snapshots


def delta_files(
    record: CsvRecord, want: DesiredLookup, snapshots: Snapshots, scratch: list[Path]
) -> list[tuple[str, Path]] | None:
    """The delta's uploads as files in a new scratch folder: the deleted keys' old rows, then the
    new rows. The folder goes into ``scratch`` as soon as it exists, for the caller to remove
    after the run: whether this ends, fails, or runs on in its thread after an interrupted apply
    stopped waiting for it.

    None (send the whole file) unless the content last applied (``record``) is still exactly
    available; [] when nothing differs by key.
    """
    import tempfile

    from reconciler.plan import rows as row_diff

    if want.csv is None:
        raise RuntimeError("invariant broken: a delta for a lookup with no CSV")
    folder = Path(tempfile.mkdtemp(prefix="reconciler-delta-"))
    scratch.append(folder)
    old, _ = row_diff.applied_content(record, want.csv.path, folder, snapshots)
    if old is None:
        return None
    return row_diff.row_delta(old, want.csv.path, want.csv.spec, folder).uploads()


async def deploy_delta(
    client: LookupClient,
    console: ApplyConsole,
    change: Change,
    want: DesiredLookup,
    body: dict[str, Any],
    files: list[tuple[str, Path]],
    *,
    job_timeout: float,
    poll: PollPolicy,
) -> DeployResult:
    """PUT each upload of ``files`` in turn, waiting for each job but the last (the caller follows
    that one, as any change's).

    If the second upload fails, the lookup holds fewer rows than the state records: the next
    plan sees ``numEntries`` differ and repairs it with the whole file.
    """
    if want.endpoint is None:
        raise RuntimeError("invariant broken: a delta for a lookup with no endpoint")
    try:
        result: DeployResult | None = None
        for index, (kind, path) in enumerate(files):
            console.change_started(change, f"PUT ({kind} {path.stat().st_size} bytes)")
            phase = {**body, "append": True, "contribution": {"type": kind}}
            result = await client.deploy(
                "PUT", want.endpoint, want.domain, want.name, phase, csv_file=path
            )
            if index < len(files) - 1 and result.job_id is not None:
                await client.wait_for_job(
                    want.domain,
                    want.name,
                    result.job_id,
                    timeout=job_timeout,
                    policy=poll,
                    on_status=lambda status: console.job_status(change, status),
                )
        if result is None:
            raise RuntimeError("invariant broken: a delta with no upload")
        return result
    finally:
        for _, path in files:  # their folder goes at the end of the run
            path.unlink(missing_ok=True)
