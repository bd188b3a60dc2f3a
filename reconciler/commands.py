"""The bodies of the networked commands: glue between resolved options and the engine.

Each returns a ``Result`` (the exit code and what to print); ``reconciler.cli`` parses options,
calls one of these and writes the result. Nothing here writes to a stream or prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from reconciler import gitrepo, views
from reconciler.apply.executor import ApplyOptions, Executor
from reconciler.apply.outcome import Outcome, override_entry
from reconciler.client import LookupClient, LookupMeta, LookupReader, PollPolicy, RetryPolicy
from reconciler.clock import SYSTEM_CLOCK, Clock
from reconciler.connect import transport_for
from reconciler.engine import (
    PlanRun,
    judge,
    load_workspace,
    make_plan,
    preflight,
    with_row_detail,
    with_waves,
)
from reconciler.errors import PlanError, SettingsError, StalePlanError
from reconciler.plan.builder import Selector, build_plan
from reconciler.plan.guards import Guards
from reconciler.plan.model import Plan
from reconciler.plan.references import annotate
from reconciler.plan.saved import SavedPlan, stale_reasons
from reconciler.result import Listener, Result
from reconciler.settings import Settings
from reconciler.spec.csvcheck import ScanProgress
from reconciler.state import State, StateLock
from reconciler.state.backends import write_atomically
from reconciler.state.journal import Journal, current_actor, current_commit
from reconciler.state.snapshots import referenced


def render(
    run: PlanRun, output_format: str, *, color: bool, drift: bool = False, verbose: bool = False
) -> str:
    """The plan in the requested format."""
    return views.plan_view(output_format)(run.plan, color=color, drift=drift, verbose=verbose)


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write JSON atomically (a reader sees the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(document, indent=2).encode())


async def run_plan(
    settings: Settings,
    paths: list[str],
    *,
    output_format: str = "text",
    out: Path | None = None,
    targets: list[str] | None = None,
    excludes: list[str] | None = None,
    color: bool = False,
    verbose: bool = False,
    detailed_exitcode: bool = False,
    strict: bool = False,
    allow_outside: bool = False,
    guards: Guards | None = None,
    replace: list[str] | None = None,
    progress: ScanProgress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    listener: Listener | None = None,
) -> Result:
    """``reconciler plan``."""
    said = Result(live=listener)
    run = await _read_plan(
        settings,
        paths,
        targets,
        excludes,
        transport,
        allow_outside=allow_outside,
        guards=guards,
        replace=tuple(replace or ()),
        progress=progress,
    )
    for warning in run.workspace.warnings:
        said.err(warning.render())
    said.out(render(run, output_format, color=color, verbose=verbose), coloured=color)
    if out is not None:
        saved = SavedPlan.of(
            run.plan,
            run.workspace.by_address(),
            run.live_by_address(),
            paths,
            allow_outside=allow_outside,
            guards=guards,
            replace=replace,
        )
        try:
            write_json_atomic(out, saved.document(run.plan))
        except OSError as exc:
            raise SettingsError(
                f"cannot write the plan to {out}: {exc.strerror or exc}",
                hint="pass --out a file in a folder you can write to",
            ) from exc
        # On stderr: the plan's text must end with its summary line (the contract).
        said.err(f"Saved the plan to {out}. Apply it with: reconciler apply --plan {out}")
    if strict and _strict_refusal(run.plan, said):
        return said.ends(1)
    if run.plan.blocking:
        said.err(_policy_refusal(run.plan, "this plan may not be applied"))
        return said.ends(1)
    return said.ends(2 if detailed_exitcode and run.plan.can_apply() else 0)


async def _read_plan(
    settings: Settings,
    paths: list[str],
    targets: list[str] | None,
    excludes: list[str] | None,
    transport: httpx.AsyncBaseTransport | None,
    **options: Any,
) -> PlanRun:
    """The plan of plan and drift, made through a read-only client."""
    selector = Selector(tuple(targets or ()), tuple(excludes or ()))
    async with LookupReader(settings, transport=transport_for(settings, transport)) as reader:
        return await make_plan(reader, paths, settings.state_location, selector, **options)


def run_show(
    plan_file: Path,
    output_format: str = "text",
    *,
    color: bool = False,
    listener: Listener | None = None,
) -> Result:
    """``reconciler show PLANFILE``: a saved plan rendered offline (no request, no state)."""
    try:
        document = json.loads(plan_file.read_text())
        SavedPlan.read(document)
        plan = Plan.from_json(document)
    except (OSError, ValueError, RecursionError):
        raise SettingsError(
            f"{plan_file} is not a saved plan", hint="create one with: reconciler plan --out FILE"
        ) from None
    said = Result(live=listener)
    said.out(views.plan_view(output_format)(plan, color=color), coloured=color)
    return said


def _policy_refusal(plan: Plan, what: str) -> str:
    """The error line for a plan that mandatory (or not overridden soft-mandatory) rules refuse."""
    names = sorted({v.policy for v in plan.blocking})
    soft = sorted({v.policy for v in plan.blocking if v.enforcement == "soft-mandatory"})
    hint = (
        f"\n  hint: a soft-mandatory policy can be overridden: --override-policy {soft[0]}"
        if soft
        else ""
    )
    return (
        f"Error: {len(plan.blocking)} policy violation(s) ({', '.join(names)}): {what}; "
        f"nothing was sent{hint}"
    )


def _strict_refusal(plan: Plan, said: Result) -> bool:
    """Under ``--strict``: say on stderr what could not be verified; True when anything could not."""
    if not plan.unverified:
        return False
    said.err(
        f"Error: --strict: {len(plan.unverified)} lookup(s) could not be verified: "
        + "; ".join(f"{c.address} ({', '.join(c.unverified)})" for c in plan.unverified)
    )
    said.err(
        "  hint: the service shows no deployConfig for them and the state has no record: point "
        "--state at the state that has their records, or re-send them once with "
        "reconciler apply --replace ADDR"
    )
    return True


async def run_drift(
    settings: Settings,
    paths: list[str],
    *,
    output_format: str = "text",
    targets: list[str] | None = None,
    excludes: list[str] | None = None,
    color: bool = False,
    strict: bool = False,
    allow_outside: bool = False,
    progress: ScanProgress | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    guards: Guards | None = None,
    listener: Listener | None = None,
) -> Result:
    """``reconciler drift``: read-only (a LookupReader has no write calls)."""
    said = Result(live=listener)
    run = await _read_plan(
        settings,
        paths,
        targets,
        excludes,
        transport,
        strict_protect=False,
        allow_outside=allow_outside,
        progress=progress,
        guards=guards,
    )
    said.out(render(run, output_format, color=color, drift=True), coloured=color)
    if strict and _strict_refusal(run.plan, said):
        return said.ends(1)
    return said.ends(0 if run.plan.in_sync else 2)  # a failed check is drift too


def _approve(run: PlanRun, r: ApplyRequest) -> None:
    """Go on only with approval: ``--auto-approve``, or ``r.approve`` (the command line asks on
    the terminal) saying yes. Commands never prompt themselves."""
    if r.auto_approve or not run.plan.can_apply():
        return
    if r.approve is None:
        raise SettingsError(
            "refusing to apply without approval: nobody to ask",
            hint="pass --auto-approve, or apply a reviewed plan with --plan FILE",
        )
    if not r.approve():
        raise SettingsError("apply cancelled")


async def _planned_run(
    reader: LookupReader,
    settings: Settings,
    plan_file: Path,
    progress: ScanProgress | None = None,
) -> PlanRun:
    """Re-read only the lookups a saved plan read, and refuse it when anything changed."""
    if not plan_file.is_file():
        raise SettingsError(
            f"saved plan {plan_file} not found",
            hint="create one with: reconciler plan --out FILE",
        )
    try:
        saved = SavedPlan.read(json.loads(plan_file.read_text()))
    except (OSError, ValueError, RecursionError):  # not an assert: python -O skips those
        raise SettingsError(
            f"{plan_file} is not a saved plan", hint="create one with: reconciler plan --out FILE"
        ) from None
    workspace = load_workspace(saved.paths, allow_outside=saved.allow_outside, progress=progress)
    reader.use_domain_credentials(workspace.credentials(os.environ))
    reader.use_domain_endpoints(workspace.endpoints)
    found: dict[str, LookupMeta | None] = {}
    live: dict[str, list[LookupMeta]] = {}
    for address in sorted(saved.addresses):
        domain, name = address.split("/", 1)
        found[address] = meta = await reader.find_lookup(domain, name)
        if meta is not None:
            live.setdefault(domain, []).append(meta)
    stale = stale_reasons(saved, workspace.by_address(), found)
    if stale:
        raise StalePlanError(
            "the saved plan is stale: " + "; ".join(stale),
            hint="make a new plan: reconciler plan --out FILE",
        )
    state = State.load(settings.state_location)
    planned = saved.addresses
    subset = [d for d in workspace.desired if d.address in planned]
    if not planned:
        return PlanRun(Plan(), workspace, live, state)
    selector = Selector(targets=tuple(sorted(planned)))
    plan = build_plan(
        subset,
        live,
        state.lookups,
        workspace.policies,
        selector,
        guards=saved.guards.guards(),
        replace=tuple(saved.replace),
    )
    plan = with_waves(plan, workspace.waves)
    plan = annotate(plan, workspace.references)
    plan = judge(plan, workspace, saved.guards.guards())
    # The rows again, as the saved plan's were: the delta a reviewer read is the one sent.
    plan = with_row_detail(plan, workspace, live, state)
    return PlanRun(plan, workspace, live, state)


@dataclass(frozen=True)
class ApplyRequest:
    """Everything ``reconciler apply`` is asked for, besides where (settings) and which specs."""

    plan_file: Path | None = None
    auto_approve: bool = False
    approve: Callable[[], bool] | None = None  # asks a person (the command line's prompt)
    parallelism: int = 8
    wait: bool = True
    job_timeout: float = 600.0
    output_format: str = "text"
    targets: list[str] | None = None
    excludes: list[str] | None = None
    color: bool = False
    interactive: bool = False
    strict: bool = False
    replace: list[str] | None = None
    allow_outside: bool = False
    guards: Guards | None = None
    poll: PollPolicy | None = None
    clock: Clock = SYSTEM_CLOCK
    lock_timeout: float = 0.0
    endpoint_transports: dict[str, httpx.AsyncBaseTransport] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    env: dict[str, str] | None = None
    progress: ScanProgress | None = None
    listener: Listener | None = None  # hears every line as it is said (else the Result keeps them)


async def run_apply(
    settings: Settings, paths: list[str], request: ApplyRequest | None = None
) -> Result:
    """``reconciler apply``: under the state's lock for the whole run (see ``StateLock``)."""
    r = request or ApplyRequest()
    said = Result(live=r.listener)
    if r.parallelism < 1:
        raise SettingsError("--parallelism must be at least 1")
    guards = r.guards or Guards()
    planning = [
        flag
        for flag, given in (
            ("--target", r.targets),
            ("--exclude", r.excludes),
            ("--replace", r.replace),
            ("--max-destroy", guards.max_destroy is not None),
            ("--allow-mass-destroy", guards.allow_mass_destroy),
            ("--allow-prune-without-state", guards.allow_prune_without_state),
            ("--allow-breaking", guards.allow_breaking),
            ("--ignore-references", guards.ignore_references),
            ("--override-policy", guards.override_policies),
        )
        if given
    ]
    if r.plan_file is not None and planning:
        # A reviewed plan is applied as it was reviewed: a subset or a replacement chosen now
        # would apply something nobody saw.
        raise SettingsError(
            f"{', '.join(planning)} cannot be combined with --plan: the saved plan decides",
            hint=f"make the plan with them: reconciler plan {' '.join(planning)} ... --out "
            f"{r.plan_file}, then reconciler apply --plan {r.plan_file}",
        )
    actor = current_actor(gitrepo.folder_of(paths))
    retry = RetryPolicy(budget=settings.timeout, max_in_flight=max(16, r.parallelism * 2))
    async with (
        _state_locked(settings.state_location, actor, r.lock_timeout, said) as (journal, states),
        LookupClient(
            settings,
            retry=retry,
            transport=transport_for(settings, r.transport),
            sleep=r.clock.sleep,
            clock=r.clock.monotonic,
            wall_clock=r.clock.wall,
            transports=r.endpoint_transports,
        ) as client,
    ):
        if r.plan_file is not None:
            run = await _planned_run(client, settings, r.plan_file, r.progress)
        else:
            selector = Selector(tuple(r.targets or ()), tuple(r.excludes or ()))
            run = await make_plan(
                client,
                paths,
                settings.state_location,
                selector,
                replace=r.replace or (),
                env=r.env,
                allow_outside=r.allow_outside,
                guards=guards,
                progress=r.progress,
            )
            if r.output_format == "text":
                said.out(render(run, "text", color=r.color), coloured=r.color)
            if r.strict and _strict_refusal(run.plan, said):
                return said.ends(1)
            _approve(run, r)
        if run.plan.blocking:
            if r.output_format != "text" or r.plan_file is not None:
                for v in run.plan.blocking:
                    said.err(f"{v.address}: {v.policy} / {v.rule} [{v.enforcement}]: {v.message}")
            said.err(_policy_refusal(run.plan, "apply refused"))
            return said.ends(1)
        states.append(run.state)
        options = ApplyOptions(
            parallelism=r.parallelism,
            wait=r.wait,
            job_timeout=r.job_timeout,
            actor=actor,
            commit=current_commit(run.workspace.folder),
            clock=r.clock,
            poll=r.poll or PollPolicy(),
            waves=run.workspace.waves,
            checks=run.workspace.checks,
        )
        executor = Executor(
            client, run.workspace.by_address(), run.state, journal, None, options, r.env
        )
        for address in executor.adopt(run.plan, run.live_by_address()):
            said.err(f"{address}: already matched its spec; recorded in the state")
        for address in executor.forget_gone(run.plan, run.live):
            said.err(f"{address}: no spec names it any more; its record is forgotten")
        if not run.plan.can_apply():
            if r.output_format == "json":  # the same summary event as a run with changes
                said.out(views.apply_view("json")([], warnings=run.plan.warnings))
            elif r.plan_file is not None:
                said.out("No changes.")
            return said
        console = views.apply_console(
            r.output_format, interactive=r.interactive, total=len(run.plan.actionable)
        )
        executor.console = console
        await preflight(client, run.plan)
        _record_overrides(journal, run.plan, actor, options)
        outcomes = await _execute(executor, run, console)
        if all(o.ok for o in outcomes):
            # Under the lock, after a run that did all it meant to: what no record names goes.
            kept = executor.snapshots
            removed = await asyncio.to_thread(kept.collect, referenced(run.state.lookups))
            if removed:
                said.err(f"Removed {len(removed)} snapshot(s) no record names any more.")
    return _report(said, outcomes, r.output_format, run.plan.warnings)


def _record_overrides(journal: Journal, plan: Plan, actor: str, options: ApplyOptions) -> None:
    """One journal entry per soft-mandatory violation this apply goes ahead with: who overrode
    which policy, for which lookup, at which commit."""
    for violation in plan.violations:
        if violation.overridden:
            journal.append(override_entry(violation, actor, options.commit, options.clock.now()))


@contextlib.asynccontextmanager
async def _state_locked(
    location: str, actor: str, lock_timeout: float, said: Result
) -> AsyncIterator[tuple[Journal, list[State]]]:
    """Hold the state's lock; on the way out, whatever happened, compact every state the run
    loaded (its record log already holds what was done), close the journal, release the lock."""
    lock = StateLock(location, actor)
    await lock.acquire(lock_timeout, waiting=lambda text: said.err(text))
    journal = Journal.for_state(location)
    states: list[State] = []
    try:
        yield journal, states
    finally:
        try:
            for state in states:
                state.commit()
            journal.close()
        finally:
            lock.release()


async def run_state_rm(
    location: str,
    addresses: list[str],
    *,
    lock_timeout: float = 0.0,
    listener: Listener | None = None,
) -> Result:
    """``reconciler state rm ADDRESS...``: forget records without deleting the lookups (Terraform's
    ``state rm``), under the state's lock. The next plan sees each as unmanaged (or, if a spec
    still names it, compares it with live state only)."""
    actor = current_actor(Path.cwd())
    said = Result(live=listener)
    async with _state_locked(location, actor, lock_timeout, said) as (_, states):
        state = State.load(location)
        states.append(state)
        unknown = [a for a in addresses if a not in state.lookups]
        if unknown:
            raise SettingsError(
                f"the state records no {', '.join(unknown)}; nothing was forgotten",
                hint="reconciler state show lists the recorded addresses (DOMAIN/NAME)",
            )
        for address in addresses:
            state.forget(address)
            said.err(f"{address}: forgotten (the lookup itself is left as it is in Devo)")
    return said


async def _execute(executor: Executor, run: PlanRun, console: Any) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, executor.stop)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):
        installed = False
    try:
        if hasattr(console, "__enter__"):
            with console:
                return await executor.run(run.plan)
        return await executor.run(run.plan)
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


def _report(
    said: Result, outcomes: list[Outcome], output_format: str, warnings: Sequence[str] = ()
) -> Result:
    from reconciler.apply.outcome import INTERRUPTED, summarize

    said.out(views.apply_view(output_format)(outcomes, warnings=warnings))
    if output_format != "text":
        # A CI log shows why without anyone opening the JSON artifact.
        for outcome in outcomes:
            if not outcome.ok:
                job = f" (job {outcome.job_id})" if outcome.job_id else ""
                said.err(f"{outcome.address}: {outcome.status}{job}: {outcome.message}")
    if any(o.status == INTERRUPTED for o in outcomes):
        return said.ends(130)
    return said.ends(1 if summarize(outcomes)["failed"] else 0)


__all__ = [
    "ApplyRequest",
    "Result",
    "PlanError",
    "render",
    "run_apply",
    "run_drift",
    "run_show",
    "run_state_rm",
    "run_plan",
    "write_json_atomic",
]
