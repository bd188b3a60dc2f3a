"""Apply: carry out a plan's changes, follow every job to its end, and report each lookup honestly.

The executor is the only code that changes the remote, and it branches on the change's action alone:
create → POST, update → PUT, delete → DELETE, on the change's endpoint. ``--parallelism`` bounds how
many requests are being *submitted* at once; jobs are then followed concurrently, so N changes take
about one job latency plus N / parallelism round trips, not N job latencies.

Safety rules:

* Every ``${env:...}`` secret is resolved before the first request; a missing one sends nothing.
* A create answered 409 is re-read: a no-op if it already matches, else an update. An update
  answered 404 becomes a create. A delete answered 404 is already done.
* One failed lookup never stops the others. Each lookup that succeeds is written to the state file
  (atomically) and the journal at once, so a crash or Ctrl-C loses nothing already done.
* Ctrl-C stops submitting, reports the jobs in flight by id, and exits non-zero.
* Order inside a wave: a change starts once the changes in its ``depends_on`` (a query lookup
  after the lookups it reads; a lookup's delete after its readers' deletes) have ended, and is not
  attempted when one of them failed. Changes with no such relation run in parallel.
* Waves (``Domain.spec.wave``): each wave starts once every job of the one before has ended; a
  wave with a failure stops the waves after it, whose lookups are reported as not attempted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import gitrepo
from reconciler.apply.checks import check_secrets, failed_checks
from reconciler.apply.delta import delta_files, deploy_delta
from reconciler.apply.outcome import (
    DONE,
    FAILED,
    INTERRUPTED,
    SUBMITTED,
    TIMED_OUT,
    ApplyConsole,
    NullConsole,
    Outcome,
    journal_entry,
)
from reconciler.canonical import flatten
from reconciler.client import DeployResult, LookupClient, LookupMeta, PollPolicy
from reconciler.clock import SYSTEM_CLOCK, Clock
from reconciler.desired import DesiredLookup, placeholders, resolve_secrets
from reconciler.errors import (
    ConflictError,
    JobFailed,
    JobTimeout,
    NotFoundError,
    ReconcilerError,
    SettingsError,
    redact,
)
from reconciler.plan.builder import compare, observed_facts
from reconciler.plan.model import Action, Change, Plan
from reconciler.spec.policies import Expression
from reconciler.state import DEPLOYED, CsvRecord, LookupState, Observed, State, secret_digest
from reconciler.state import SUBMITTED as RECORDED_SUBMITTED
from reconciler.state.journal import Journal
from reconciler.state.snapshots import Snapshots


@dataclass
class ApplyOptions:
    """How to apply."""

    parallelism: int = 8
    wait: bool = True
    job_timeout: float = 600.0
    poll: PollPolicy = field(default_factory=PollPolicy)
    actor: str = "unknown"
    commit: str | None = None
    clock: Clock = SYSTEM_CLOCK  # durations, record and journal times
    waves: Mapping[str, int] = field(default_factory=dict)  # domain → apply wave (default 0)
    checks: Mapping[str, Sequence[Expression]] = field(default_factory=dict)  # spec.checks


class Executor:
    """Runs one plan's changes against a LookupClient."""

    def __init__(
        self,
        client: LookupClient,
        desired: Mapping[str, DesiredLookup],
        state: State,
        journal: Journal | None = None,
        console: ApplyConsole | None = None,
        options: ApplyOptions | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.desired = desired
        self.state = state
        self.journal = journal
        self.console = console or NullConsole()
        self.snapshots = Snapshots(state.location, state.backend)
        self.options = options or ApplyOptions()
        self.env = os.environ if env is None else env
        self.stopping = asyncio.Event()
        self._submit = asyncio.Semaphore(max(1, self.options.parallelism))
        # Changes waiting for a submission slot or being submitted; polls give way to them.
        self._unsubmitted = 0
        self._all_submitted = asyncio.Event()
        self._all_submitted.set()
        self._scratch: list[Path] = []  # delta uploads' temporary folders, removed after the run
        self._commits: dict[Path, str | None] = {}  # folder → its checked-out commit, this run
        self._commits_lock = threading.Lock()
        # Records and journal entries: one thread of their own (see _written).
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None

    def _commit_of(self, folder: Path) -> str | None:
        """The commit checked out where ``folder`` is: git is asked once per folder per run
        (a run of 500 CSV lookups in one repository starts one git process, not 500)."""
        with self._commits_lock:  # records run in threads, several at once
            if folder not in self._commits:
                self._commits[folder] = gitrepo.head_commit(folder)
            return self._commits[folder]

    async def run(self, plan: Plan) -> list[Outcome]:
        """Carry out every actionable change; return one Outcome per change, in plan order."""
        changes = plan.actionable
        check_secrets(changes, self.desired, self.env)
        outcomes = {c.address: Outcome(c.address, c.action) for c in changes}
        waves = sorted({self.options.waves.get(c.domain, 0) for c in changes})
        if len(waves) > 1 and not self.options.wait:
            raise SettingsError(
                "--no-wait cannot be used with several waves: a wave starts only after every job "
                "of the waves before it has ended",
                hint="drop --no-wait, or apply one wave at a time with --target",
            )
        ordered_pairs = [(c.address, a) for c in changes for a in c.depends_on if a in outcomes]
        if ordered_pairs and not self.options.wait:
            first, then = ordered_pairs[0][1], ordered_pairs[0][0]
            raise SettingsError(
                f"--no-wait cannot be used here: {then} may start only after the job of {first} "
                f"has ended (a query lookup and a lookup it reads; {len(ordered_pairs)} such "
                "pair(s))",
                hint="drop --no-wait, or apply the lookups read first with --target",
            )
        finished = {c.address: asyncio.Event() for c in changes}
        failed_wave: int | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "reconciler-state")
        try:
            for wave in waves:
                batch = [c for c in changes if self.options.waves.get(c.domain, 0) == wave]
                if failed_wave is not None:
                    for change in batch:
                        outcomes[
                            change.address
                        ].message = f"wave {wave} not started: wave {failed_wave} had a failure"
                    continue
                tasks = [asyncio.create_task(self._in_order(c, outcomes, finished)) for c in batch]
                await asyncio.gather(*tasks)
                if self.stopping.is_set():
                    break
                if len(waves) > 1 and not all(outcomes[c.address].ok for c in batch):
                    failed_wave = wave
        finally:
            for folder in self._scratch:
                shutil.rmtree(folder, ignore_errors=True)
            writer, self._writer = self._writer, None
            writer.shutdown(wait=True)  # every record queued is written before run returns
        ordered = [outcomes[c.address] for c in changes]
        if self.options.wait and not self.stopping.is_set():
            await self.observe(ordered)
        return ordered

    def adopt(self, plan: Plan, live: Mapping[str, LookupMeta]) -> list[str]:
        """Record lookups the plan found already matching their spec but the state does not know.

        That is how a run interrupted after its requests (SIGKILL, a lost runner) is completed:
        the re-run sees the lookups as up to date and records them, with a journal entry. Only
        fully verified ones: a record vouches for what the service does not show, so a lookup
        nothing could verify is never recorded this way (``apply --replace`` re-sends it).
        """
        adopted = []
        for change in plan.changes:
            meta = live.get(change.address)
            if (
                change.action is not Action.NOOP
                or meta is None
                or change.unverified
                or (
                    change.address in self.state.lookups
                    and self.state.lookups[change.address].canonical
                )
                or change.address not in self.desired
                or self.desired[change.address].state != "present"
            ):
                continue
            outcome = Outcome(change.address, Action.NOOP, status=DONE, effective=Action.NOOP)
            outcome.message = (
                "already matched its spec; recorded (e.g. completed after an interrupted apply)"
            )
            self._record(change, outcome, None, meta)
            self._finish(change, outcome)
            adopted.append(change.address)
        return adopted

    def forget_gone(self, plan: Plan, live: Mapping[str, list[LookupMeta]]) -> list[str]:
        """Forget records nothing will need again, in the domains this run read: of lookups gone
        and meant to be (not live, and no spec wants them present: a delete whose run was
        killed before it could forget the record, a lookup deleted by hand after its spec went),
        and of lookups no spec names any more and no plan deletes (left in Devo, unmanaged), so
        ``state show`` does not list them for ever. A protected record is kept: it is what makes
        a later prune of that lookup an error."""
        shown = {f"{domain}/{meta.name}" for domain, metas in live.items() for meta in metas}
        deleting = {c.address for c in plan.changes if c.action is Action.DELETE}
        gone = []
        for address, record in sorted(self.state.lookups.items()):
            if address.split("/", 1)[0] not in live or address in deleting:
                continue
            want = self.desired.get(address)
            if (
                address not in shown
                and (want is None or want.state == "absent")
                or want is None
                and not record.protect
            ):
                gone.append(address)
        for address in gone:
            self.state.forget(address)
        return gone

    def stop(self) -> None:
        """Stop submitting; in-flight jobs are reported as interrupted (Ctrl-C)."""
        self.stopping.set()

    async def _in_order(
        self, change: Change, outcomes: Mapping[str, Outcome], finished: Mapping[str, asyncio.Event]
    ) -> None:
        """``_one`` once every change it depends on has ended (its job followed to the end);
        not attempted at all when one of them did not succeed."""
        outcome = outcomes[change.address]
        try:
            for address in change.depends_on:
                if address not in finished:
                    continue
                await finished[address].wait()
                if not outcomes[address].ok:
                    outcome.message = (
                        f"not started: it must follow {address}, whose change did not succeed"
                    )
                    return
            previous = self.state.lookups.get(change.address)
            await self._one(change, outcome)
            if (
                outcome.status == DONE
                and change.action is not Action.DELETE
                and self.options.checks.get(change.address)
            ):
                await self._check(change, outcome, previous)
        finally:
            finished[change.address].set()

    async def _check(self, change: Change, outcome: Outcome, previous: LookupState | None) -> None:
        """The lookup's checks once its job has ended; one that fails makes the change a failed
        one (nothing is rolled back), with a journal entry of its own."""
        failed = await failed_checks(
            self.client,
            change,
            self.desired[change.address],
            self.options.checks[change.address],
            previous,
            settled=outcome.settled,
        )
        if not failed:
            return
        outcome.status = FAILED
        outcome.message = "; ".join(failed) + " (applied; not rolled back)"
        await self._written(self._journal, change, outcome, "check")
        self.console.change_finished(change, outcome)

    async def _one(self, change: Change, outcome: Outcome) -> None:
        started = self.options.clock.monotonic()
        if not change.request:  # only the state changes (protect): nothing to send
            outcome.status, outcome.effective = DONE, Action.UPDATE
            outcome.message = "recorded protect: " + str(change.protect).lower() + " (no request)"
            self._record(change, outcome, None, None)
            self._finish(change, outcome)
            return
        self._unsubmitted += 1
        self._all_submitted.clear()
        try:
            async with self._submit:
                if self.stopping.is_set():
                    return  # not attempted
                try:
                    result, effective = await self._submit_change(change)
                except ReconcilerError as exc:
                    outcome.status, outcome.message = FAILED, self._safe(str(exc))
                    outcome.seconds = self.options.clock.monotonic() - started
                    self._finish(change, outcome)
                    return
        finally:
            self._unsubmitted -= 1
            if not self._unsubmitted:
                self._all_submitted.set()
        outcome.effective = effective
        outcome.job_id = result.job_id if result else None
        if result is None:  # nothing left to do: a delete found it gone, or a 409 already matched
            outcome.status = DONE
            outcome.message = "already gone" if effective is Action.DELETE else "already up to date"
        elif not self.options.wait or result.job_id is None:
            outcome.status = SUBMITTED
            outcome.message = (
                "job not followed (--no-wait)" if result.job_id else "no job id returned"
            )
        else:
            # Written down before the job is followed, as --no-wait does: a run killed (or a
            # disk that fills) while the job runs leaves a record the next plan settles by
            # reading the job, never a lookup the state knows nothing of. A delete forgets its
            # record here: the lookup may be gone before the run can say so.
            previous = self.state.lookups.get(change.address)
            outcome.status = SUBMITTED
            await self._written(self._record, change, outcome, result, None)
            await self._follow(change, outcome, result)
            if outcome.status == FAILED:
                # The job ended and failed: what was there before is what Devo holds. (A job
                # that timed out or was interrupted keeps its record: the next plan reads it.)
                await self._written(self._restore, change.address, previous)
        outcome.seconds = self.options.clock.monotonic() - started
        # Off the event loop (see _written), one trip for both: the record first, since the
        # journal tells of what the state holds.
        await self._written(self._settle, change, outcome, result)
        self.console.change_finished(change, outcome)

    async def _written(self, write: Callable[..., None], *args: Any) -> None:
        """``write(*args)`` on the state's writer thread, off the event loop (a record is a file
        append or an object PUT; a CSV's commit is asked of git). One thread, in order: each
        system call of a write hands the GIL to and from the loop, and the default pool's threads
        side by side kept it waiting (500 changes of 0.5 s jobs: 1.80 → 1.66 s; two: 1.73 s)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, functools.partial(write, *args))

    async def _give_way(self) -> None:
        """Before a poll of a job whose end is expected: the changes waiting for a slot go first
        (at most the policy's longest interval, so a long run still reports jobs as they end).
        Polls made meanwhile delayed those changes' requests, hence their jobs' ends, and lose
        nothing by waiting: when a job ended is read from its statuses (``JobLatency``). 500
        changes of 0.5 s jobs: 2.42 → 1.92 s, medians of 6. A leading job does not give way."""
        if self._unsubmitted:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll.maximum):
                    await self._all_submitted.wait()

    def _settle(self, change: Change, outcome: Outcome, job: DeployResult | None) -> None:
        if outcome.ok:  # (a delete's record went when its job started: forgetting it is a no-op)
            self._record(change, outcome, job, None)
        self._journal(change, outcome)

    async def observe(self, outcomes: list[Outcome]) -> None:
        """Record what the service now shows for every lookup this run deployed.

        Read with the same paged list call a plan uses (one request per domain and 1,000
        lookups, not one per lookup), so the next plan compares live with exactly what this
        listing showed. Until then a record holds the 201's echo; if the listing fails, it keeps it.
        """
        deployed = {
            o.address
            for o in outcomes
            if o.status == DONE
            and o.action is not Action.DELETE
            and o.address in self.state.lookups
        }
        # A job counted as done at create.ok may not have its rows yet: its count proves nothing.
        settled = {o.address for o in outcomes if o.settled}
        for domain in sorted({a.split("/", 1)[0] for a in deployed}):
            try:
                metas = await self.client.all_lookups(domain)
            except ReconcilerError:
                continue
            seen: dict[str, LookupState] = {}
            for meta in metas:
                address = f"{domain}/{meta.name}"
                record = self.state.lookups.get(address)
                if address in deployed and record is not None:
                    echoed = flatten(meta.deployConfig) or record.echoed
                    observed = observed_facts(meta)
                    if address in settled:
                        observed = observed.model_copy(update={"numEntries": None})
                    seen[address] = record.model_copy(
                        update={"echoed": echoed, "observed": observed}
                    )
            await asyncio.to_thread(self.state.record_many, seen)  # one log entry per domain

    async def _follow(self, change: Change, outcome: Outcome, job: DeployResult) -> None:
        job_id = str(job.job_id)  # the caller follows only jobs with an id
        waiter = asyncio.create_task(
            self.client.wait_for_job(
                change.domain,
                change.name,
                job_id,
                timeout=self.options.job_timeout,
                policy=self.options.poll,
                on_status=lambda status: self.console.job_status(change, status),
                deleting=change.action is Action.DELETE,
                kind="delete" if change.action is Action.DELETE else change.endpoint,
                sent=job.sent,
                answered=job.answered,
                give_way=self._give_way,
            )
        )
        stopper = asyncio.create_task(self.stopping.wait())
        try:
            finished, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in finished:
                waiter.cancel()
                outcome.status = INTERRUPTED
                outcome.message = f"interrupted while job {job_id} was running; check it with: reconciler jobs {change.address} --job {job_id}"
                return
            try:
                result = waiter.result()
            except JobFailed as exc:
                outcome.status, outcome.message = FAILED, self._safe(str(exc))
                outcome.polls = exc.polls
            except JobTimeout as exc:
                outcome.status, outcome.message = TIMED_OUT, self._safe(str(exc))
                outcome.polls = exc.polls
            except ReconcilerError as exc:
                outcome.status, outcome.message = FAILED, self._safe(str(exc))
            else:
                outcome.status, outcome.polls = DONE, result.polls
                outcome.settled = result.settled
                outcome.message = result.last.msg or result.last.code if result.last else "done"
                if result.note:
                    outcome.message += f" ({result.note})"
        finally:
            stopper.cancel()

    async def _submit_change(self, change: Change) -> tuple[DeployResult | None, Action]:
        if change.action is Action.DELETE:
            self.console.change_started(change, "DELETE")
            try:
                return await self.client.delete(change.domain, change.name), Action.DELETE
            except NotFoundError as exc:
                if exc.missing == "domain":
                    raise
                return None, Action.DELETE  # already gone
        want = self.desired[change.address]
        body = resolve_secrets(want.body, self.env)
        csv_file = want.csv.path if want.csv else None
        if not (want.endpoint is not None):
            raise RuntimeError("invariant broken: want.endpoint is not None")
        if change.action is Action.CREATE:
            self.console.change_started(change, "POST")
            try:
                result = await self.client.deploy(
                    "POST", want.endpoint, want.domain, want.name, body, csv_file=csv_file
                )
                return result, Action.CREATE
            except ConflictError:
                meta = await self.client.find_lookup(want.domain, want.name)
                if meta is not None:
                    previous = self.state.lookups.get(want.address)
                    comparison = compare(want, meta, previous)
                    proven = not comparison.diff and not comparison.unverified
                    if proven and comparison.csv is None and not want.uploads_csv:
                        return None, Action.NOOP
        # Update (or a create that met an existing lookup).
        wants_delta = (
            change.action is Action.UPDATE
            and change.csv is not None
            and change.csv.strategy == "delta"
            and want.csv is not None
        )
        if wants_delta:
            record = (self.state.lookups.get(change.address) or LookupState()).csv or CsvRecord()
            # Its scratch folder joins self._scratch (removed at the end of the run) as soon as
            # it is made, in the worker thread: an interrupted run removes it too.
            files = await asyncio.to_thread(
                delta_files, record, want, self.snapshots, self._scratch
            )
            if files:  # None: the old content is gone; []: nothing by key (the file is sent)
                deployed = await deploy_delta(
                    self.client,
                    self.console,
                    change,
                    want,
                    body,
                    files,
                    job_timeout=self.options.job_timeout,
                    poll=self.options.poll,
                )
                return deployed, Action.UPDATE
        self.console.change_started(change, "PUT")
        try:
            result = await self.client.deploy(
                "PUT", want.endpoint, want.domain, want.name, body, csv_file=csv_file
            )
            return result, Action.UPDATE
        except NotFoundError as exc:
            if exc.missing == "domain":
                raise
            self.console.change_started(change, "POST")
            result = await self.client.deploy(
                "POST", want.endpoint, want.domain, want.name, body, csv_file=csv_file
            )
            return result, Action.CREATE

    def _record(
        self,
        change: Change,
        outcome: Outcome,
        result: DeployResult | None,
        meta: LookupMeta | None,
    ) -> None:
        """Write what was sent and what the service showed for it (see ``reconciler.state``)."""
        now = self.options.clock.now().isoformat(timespec="seconds")
        if change.action is Action.DELETE:
            self.state.forget(change.address)
            return
        want = self.desired[change.address]
        previous = self.state.lookups.get(change.address)
        if not change.request:
            # Only protect changed: keep everything else the record says. Without a record, keep
            # protect alone: nothing was sent, so nothing else may be vouched for.
            base = previous or LookupState(kind=want.kind, endpoint=want.endpoint, canonical={})
            self.state.record(change.address, base.model_copy(update={"protect": want.protect}))
            return
        csv = None
        if want.csv is not None:
            # The content first, the record that points at it after (see state.snapshots).
            self.snapshots.put(want.csv.path, want.csv.sha256)
            csv = CsvRecord(
                sha256=want.csv.sha256,
                rows=want.csv.rows,
                path=str(want.csv.path),
                commit=self._commit_of(want.csv.path.parent),
            )
        echoed: dict[str, Any] = {}
        observed = Observed()
        if meta is not None:
            echoed = flatten(meta.deployConfig)
            observed = observed_facts(meta)
        if not echoed and result is not None:
            echoed = flatten(result.deploy_config)
        if result is None and previous is not None and not echoed:
            echoed = previous.echoed  # a 409 that already matched: nothing new was shown
        values = [self.env.get(name, "") for name in placeholders(want.body)]
        self.state.record(
            change.address,
            LookupState(
                kind=want.kind,
                endpoint=want.endpoint,
                canonical=dict(want.canonical),
                protect=want.protect,
                job_id=outcome.job_id,
                applied_at=now,
                csv=csv,
                echoed=echoed,
                observed=observed,
                secrets=secret_digest(values) if values else None,
                status=RECORDED_SUBMITTED if outcome.status == SUBMITTED else DEPLOYED,
            ),
        )

    def _restore(self, address: str, previous: LookupState | None) -> None:
        """Put back the record a failed job's submission replaced."""
        if previous is None:
            self.state.forget(address)
        else:
            self.state.record(address, previous)

    def _finish(self, change: Change, outcome: Outcome) -> None:
        self._journal(change, outcome)
        self.console.change_finished(change, outcome)

    def _journal(self, change: Change, outcome: Outcome, action: str | None = None) -> None:
        """The change's journal entry (``action="check"``: its checks failed after it)."""
        if self.journal is not None:
            entry = journal_entry(
                change, outcome, self.options.actor, self.options.commit, self.options.clock.now()
            )
            if action is not None:
                entry = entry.model_copy(update={"action": action, "type": action})
            self.journal.append(entry)

    def _safe(self, text: str) -> str:
        secrets = [
            self.env[name]
            for want in self.desired.values()
            for name in placeholders(want.body)
            if self.env.get(name)
        ]
        return redact(text, secrets)
