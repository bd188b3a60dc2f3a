"""The text view: what a person reads in a terminal or a CI log.

One function per thing the commands show (``plan``, ``apply``, ``jobs``, ``history``, ``validate``,
``state``, ``refs``, ``checks``), each a pure function of its data returning the text;
``reconciler.views`` picks the format. apply's live progress is here too: ``LineConsole`` for logs,
``RichConsole`` on a terminal.
Colour goes through rich, and only when asked for (a terminal without ``NO_COLOR``): rich is
imported then, not before (a command whose output is markdown or JSON, as in CI, never needs it).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from reconciler.apply.outcome import NOT_ATTEMPTED, ApplyConsole, Outcome, summarize
from reconciler.canonical import render_value
from reconciler.errors import printable
from reconciler.plan.model import Action, Change, CheckResult, Plan
from reconciler.spec.loader import LoadResult
from reconciler.spec.references import RefsReport
from reconciler.state import LockInfo, State
from reconciler.views.grid import grid

if TYPE_CHECKING:
    from reconciler.client import JobStatus
    from reconciler.client.job_views import JobView

_STYLES = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.DELETE: "red", Action.NOOP: ""}
_HEADLINE = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in-place",
    Action.DELETE: "will be destroyed",
    Action.NOOP: "is up to date",
}
_ORIGIN = {
    "spec": " (spec changed since the last apply)",
    "state": " (recorded only; nothing is sent for it)",
}
_DRIFT = {
    Action.CREATE: "is missing in Devo",
    Action.UPDATE: "differs from its spec",
    Action.DELETE: "should not exist",
}


def _unverified_note(plan: Plan) -> str:
    count = len(plan.unverified)
    if not count:
        return ""
    return f" {count} lookup(s) could not be verified (no deployConfig from the service, no state)."


def summary_line(plan: Plan) -> str:
    """The contract's last line: ``Plan: X to add, Y to change, Z to destroy.`` or ``No changes.``

    When some lookups could not be verified, the line says how many after the contract's words.
    """
    if not plan.can_apply():
        return "No changes." + _unverified_note(plan)
    s = plan.summary
    return (
        f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy."
        + _unverified_note(plan)
    )


def drift_line(plan: Plan) -> str:
    """``In sync.`` or ``Drift: N lookup(s) differ, M unmanaged.`` (kept ones are not drift)."""
    kept = f" ({len(plan.kept)} kept by keep globs)" if plan.kept else ""
    if plan.in_sync:
        note = f" {len(plan.kept)} unmanaged lookup(s) kept by keep globs (not drift)."
        return "In sync." + (note if plan.kept else "") + _unverified_note(plan)
    failed = f", {len(plan.failed_checks)} check(s) failed" if plan.failed_checks else ""
    return (
        f"Drift: {len(plan.actionable)} lookup(s) differ, "
        f"{len(plan.drifted_unmanaged)} unmanaged{failed}.{kept}" + _unverified_note(plan)
    )


class _Painter:
    """Colours lines through rich (one capturing console per view), or leaves them plain."""

    def __init__(self, color: bool) -> None:
        self.console: Any = None  # a rich Console, imported only when colour is asked for
        if color:
            from rich.console import Console
            from rich.text import Text

            self.text = Text
            self.console = Console(
                file=io.StringIO(),
                force_terminal=True,
                color_system="standard",
                highlight=False,
                soft_wrap=True,
            )

    def __call__(self, text: str, style: str) -> str:
        if self.console is None or not style:
            return text
        with self.console.capture() as capture:
            # Made printable before colouring: the colour sequences are then the only ones.
            self.console.print(self.text(printable(text), style=style), end="")
        return str(capture.get())


def grid_lines(plan: Plan, *, drift: bool = False) -> list[str]:
    """The lookup × domain grid, when the plan spans several domains (else nothing)."""
    table = grid(plan, drift=drift)
    if not table.worth_showing:
        return []
    width = max(len(name) for name, _ in table.rows)
    columns = [max(len(d), 3) for d in table.domains]
    head = (
        " " * width
        + "  "
        + "  ".join(d.ljust(w) for d, w in zip(table.domains, columns, strict=True))
    )
    out = [
        "By domain (+ create, ~ update, - delete, = no change, ? unmanaged):",
        "",
        "  " + head.rstrip(),
    ]
    for name, row in table.rows:
        cells = [
            (row[d].symbol if d in row else "·").ljust(w)
            for d, w in zip(table.domains, columns, strict=True)
        ]
        out.append("  " + (name.ljust(width) + "  " + "  ".join(cells)).rstrip())
    out.append("")
    return out


def attribute_lines(change: Change) -> list[str]:
    lines = []
    if change.action is Action.CREATE and change.after:
        for path, value in sorted(change.after.items()):
            lines.append(f"+ {path} = {render_value(value)}")
    for item in change.diff:
        origin = _ORIGIN.get(item.source, "")
        lines.append(
            f"~ {item.path}: {render_value(item.before)} → {render_value(item.after)}{origin}"
        )
        lines.extend(f"    {detail}" for detail in item.details)
    if change.csv is not None:
        csv = change.csv
        rows = f"{csv.before_rows if csv.before_rows is not None else '?'} → {csv.after_rows} rows"
        detail = ""
        if csv.added is not None:
            detail = f" (+{csv.added} -{csv.removed} ~{csv.changed} by key)"
        what = {
            "spec": "csv content",
            "unproven": "data in Devo (unproven: no record of its upload)",
        }.get(csv.source, "data in Devo (changed outside reconciler)")
        lines.append(f"~ {what}: {rows}{detail}")
        lines.extend(f"    {sample}" for sample in csv.samples)
        if csv.send_bytes is not None:
            lines.append(
                f"# upload: {csv.strategy}, {csv.send_rows} row(s), {_size(csv.send_bytes)}"
            )
        if csv.note:
            lines.append(f"# {csv.note}")
    if change.unverified and change.action is not Action.CREATE:
        lines.append(f"? could not verify: {', '.join(change.unverified)}")
    return lines


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def plan(plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False) -> str:
    """The human view of a plan (like Terraform's). ``verbose`` also lists lookups up to date."""
    paint = _Painter(color)
    out: list[str] = []
    shown = [c for c in plan.changes if verbose or c.action is not Action.NOOP]
    if shown:
        out.append(
            "Devo differs from the specs:"
            if drift
            else "reconciler will perform the following actions:"
        )
        out.append("")
    waves = len({c.wave for c in plan.changes}) > 1  # shown only where the order matters
    for change in shown:
        style = _STYLES[change.action]
        headline = (_DRIFT if drift else _HEADLINE).get(change.action, _HEADLINE[change.action])
        reason = f" ({change.reason})" if change.reason and change.action is not Action.NOOP else ""
        shaped = f" [overlay {change.overlay}]" if change.overlay else ""
        wave = f" [wave {change.wave}]" if waves else ""
        out.append(f"  # {change.address} {headline}{reason}{shaped}{wave}")
        if change.used_by and change.action is not Action.NOOP:
            places = ", ".join(u.where for u in change.used_by[:5])
            more = f", ... ({len(change.used_by) - 5} more)" if len(change.used_by) > 5 else ""
            out.append(f"  # used by {len(change.used_by)} reference(s): {places}{more}")
        if change.depends_on:
            out.append(f"  # starts after: {', '.join(change.depends_on)}")
        kind = f" ({change.kind} → {change.endpoint})" if change.kind else ""
        out.append(paint(f'  {change.action.symbol} lookup "{change.address}"{kind}', style))
        for line in attribute_lines(change):
            out.append(paint(f"      {line}", style if line[0] in "+~-" else ""))
        out.append("")
    if plan.unmanaged:
        kept = set(plan.kept)
        out.append("Unmanaged lookups (no spec names them):")
        out.extend(
            f"  ? {address}" + (" (kept)" if address in kept else "") for address in plan.unmanaged
        )
        out.extend(f"  hint: {hint}" for hint in plan.hints)
        out.append("")
    out.extend(grid_lines(plan, drift=drift))
    out.extend(paint(line, style) for line, style in violation_lines(plan))
    out.extend(paint(line, "red") for line in check_lines(plan))
    for warning in plan.warnings:
        out.append(paint(f"Warning: {warning}", "yellow"))
    if plan.warnings:
        out.append("")
    out.append(drift_line(plan) if drift else summary_line(plan))
    return "\n".join(out)


def violation_lines(plan: Plan) -> list[tuple[str, str]]:
    """The policy violations, one block each (with the style of its level), then a blank line."""
    if not plan.violations:
        return []
    out = [("Policy violations:", "")]
    for v in plan.violations:
        mark, style = ("✗", "red") if v.blocking else ("!", "yellow")
        out.append((f"  {mark} {v.address}: {v.policy} / {v.rule} [{v.level}]: {v.message}", style))
        detail = f"      {v.expr}" + (f"  ({v.where})" if v.where else "")
        out.append((detail, ""))
        if v.error:
            out.append((f"      could not be evaluated: {v.error}", ""))
    out.append(("", ""))
    return out


def check_lines(plan: Plan) -> list[str]:
    """The checks live lookups fail, one line each, then a blank line."""
    if not plan.failed_checks:
        return []
    out = ["Failed checks:"]
    out += [f"  ✗ {c.address}: {c.describe()}  ({c.where})" for c in plan.failed_checks]
    return [*out, ""]


def completion_line(outcomes: list[Outcome]) -> str:
    """``Apply complete! Lookups: X added, Y changed, Z destroyed.`` (or what failed)."""
    counts = summarize(outcomes)
    done = f"Lookups: {counts['added']} added, {counts['changed']} changed, {counts['destroyed']} destroyed."
    if counts["submitted"]:
        done += (
            f" {counts['submitted']} submitted (jobs not followed: the next plan reads them; "
            "reconciler jobs DOMAIN/NAME shows one)."
        )
    if counts["failed"]:
        return f"Apply failed: {counts['failed']} of {len(outcomes)} lookup(s) not done. {done}"
    return f"Apply complete! {done}"


def apply(outcomes: list[Outcome], warnings: Sequence[str] = ()) -> str:
    """What apply did not do (and why), then the completion line (the plan printed before it
    shows the ``warnings``)."""
    out: list[str] = []
    not_done = [o for o in outcomes if not o.ok]
    if not_done:
        out.append("\nNot done:")
        for o in not_done:
            mentioned = o.job_id is not None and o.job_id in (o.message or "")
            job = f" job {o.job_id}" if o.job_id and not mentioned else ""
            out.append(f"  ✗ {o.address} ({o.action.value}): {o.status}{job}: {o.message or '-'}")
        if any(o.status == NOT_ATTEMPTED for o in outcomes):
            out.append("  Run apply again to do the remaining work.")
    out.append("\n" + completion_line(outcomes))
    return "\n".join(out)


def jobs(address: str, views: list[JobView]) -> str:
    """A lookup's jobs, oldest first, each with its statuses."""
    if not views:
        return f"{address}: no jobs."
    lines = [f"Jobs of {address} (oldest first):", ""]
    for view in views:
        took = f", ran {view.seconds:g}s" if view.seconds is not None else ""
        stopped = f", stopped {view.stopped}" if view.stopped else ""
        lines.append(
            f"job {view.id}: {view.stage.upper()} (submitted {view.submitted or '?'}{stopped}{took})"
        )
        for status in view.statuses:
            lines.append(
                f"  {status['time'] or '-':<24} {status['code']:<14} {status['msg'] or ''}"
            )
        lines.append("")
    return "\n".join(lines).rstrip()


def history(page: dict[str, Any], offset: int) -> str:
    """One page of the journal, newest first, with what each update changed."""
    if not page["results"]:
        return (
            "No history entries match." if page["totalResults"] == 0 else "No entries on this page."
        )
    out = []
    for entry in page["results"]:
        job = f" job {entry['jobId']}" if entry.get("jobId") else ""
        out.append(
            f"{entry['time']}  {entry['actor']:<20} {entry['action']:<7} "
            f"{entry['domain']}/{entry['lookup']}  {entry['outcome']}{job}  {entry['message']}"
        )
        changed = sorted(
            set(entry["payload"].get("additions", {})) | set(entry["payload"].get("deletions", {}))
        )
        if changed and entry["action"] == "update":
            out.append(f"    changed: {', '.join(changed)}")
    shown = offset + len(page["results"])
    out.append(f"\n{offset + 1}-{shown} of {page['totalResults']} entries (newest first).")
    return "\n".join(out)


def validate(result: LoadResult) -> str:
    """The line that says how much was valid (diagnostics go to stderr, one per line)."""
    policies = f", {len(result.policies)} polic(ies)" if result.policies else ""
    return (
        f"✓ {len(result.lookups)} lookup(s) and {len(result.domains)} domain(s){policies} valid "
        f"in {len(result.files)} file(s)."
    )


def state(
    loaded: State,
    location: str,
    holder: LockInfo | None,
    snapshots: Mapping[str, int] | None = None,
) -> str:
    """The recorded lookups, one line each, the content snapshots kept, and who holds the lock."""
    out = [] if loaded.lookups else [f"{location}: no lookups recorded."]
    for address, record in sorted(loaded.lookups.items()):
        csv = record.csv
        data = f"  csv {str(csv.sha256)[:12]} {csv.rows} rows" if csv else ""
        flags = " protect" if record.protect else ""
        flags += " (submitted; job not followed)" if record.status == "submitted" else ""
        out.append(
            f"{address:<40} {record.kind or '-':<18} {record.endpoint or '-':<28} "
            f"{record.applied_at or '-':<25} job {record.job_id or '-'}{data}{flags}"
        )
    out.append(f"\n{len(loaded.lookups)} lookup(s) in {location}.")
    if snapshots:
        total = sum(snapshots.values())
        out.append(f"{len(snapshots)} CSV snapshot(s), {_size(total)} compressed:")
        out.extend(f"  {sha[:12]}  {_size(size)}" for sha, size in sorted(snapshots.items()))
    if holder is not None:
        out.append(f"Locked: {holder.describe()}.")
    return "\n".join(out)


def refs(report: RefsReport) -> str:
    """Each lookup: where it is used (file:line, and the query lookup holding the use) and what
    it uses; then the references nobody can resolve (the query computes the lookup's name)."""
    out: list[str] = []
    for entry in report.lookups:
        tag = "" if entry.defined else " (no spec defines it)"
        out.append(f"{entry.address}{tag}")
        if entry.used_by:
            out.append(f"  used by {len(entry.used_by)} reference(s):")
            for use in entry.used_by:
                held = f" in {use.user}" if use.user else ""
                column = f" column {use.column}" if use.column else ""
                out.append(f"    {use.where}{held}:{column} {use.snippet}")
        else:
            out.append("  used by nothing the specs or reference files show")
        if entry.uses:
            out.append(f"  uses {len(entry.uses)} reference(s):")
            for use in entry.uses:
                column = f" column {use.column}" if use.column else ""
                out.append(f"    {use.address or '?'}{column} ({use.where})")
    if report.unresolved:
        out.append("Unresolved (the query computes the lookup's name):")
        out.extend(f"  {use.where}: {use.snippet}" for use in report.unresolved)
    if not out:
        out.append("No lookup matches.")
    return printable("\n".join(out))


def checks(results: Sequence[CheckResult]) -> str:
    """``reconciler check``: each check with ✓ or ✗, then how many failed."""
    out = []
    for r in results:
        if r.passed:
            out.append(f"  ✓ {r.address}: {r.expr}")
        else:
            out.append(f"  ✗ {r.address}: {r.describe()}  ({r.where})")
    failed = sum(1 for r in results if not r.passed)
    out.append(f"{len(results)} check(s), {failed} failed." if results else "No checks to run.")
    return printable("\n".join(out))


class LineConsole:
    """Plain lines on a stream."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def _say(self, text: str) -> None:
        self.stream.write(printable(text) + "\n")
        self.stream.flush()

    def change_started(self, change: Change, method: str) -> None:
        self._say(
            f"{change.address}: {change.action.value} started ({method} {change.endpoint or ''})".rstrip()
        )

    def job_status(self, change: Change, status: JobStatus) -> None:
        self._say(f"{change.address}: {status.code} {status.msg or ''}".rstrip())

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        job = f" (job {outcome.job_id})" if outcome.job_id else ""
        self._say(
            f"{change.address}: {outcome.status}{job}: {outcome.message} [{outcome.seconds:.1f}s]"
        )


class RichConsole:
    """A progress bar for the run and a line per lookup in flight (terminals only)."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.overall = self.progress.add_task("apply", total=total)
        self.lines: dict[str, Any] = {}
        self.escape = escape  # rich's markup escaping, imported with rich above

    def __enter__(self) -> RichConsole:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def change_started(self, change: Change, method: str) -> None:
        if change.address not in self.lines:
            self.lines[change.address] = self.progress.add_task(
                self.escape(printable(f"  {change.address}: {method}", one_line=True)), total=None
            )

    def job_status(self, change: Change, status: JobStatus) -> None:
        task = self.lines.get(change.address)
        if task is not None:
            text = f"  {change.address}: {status.code} {status.msg or ''}"
            self.progress.update(task, description=self.escape(printable(text, one_line=True)))

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        task = self.lines.pop(change.address, None)
        if task is not None:
            self.progress.remove_task(task)
        color = "green" if outcome.ok else "red"
        job = f" (job {outcome.job_id})" if outcome.job_id else ""
        self.progress.console.print(
            f"[{color}]{self.escape(printable(change.address))}: {outcome.status}[/{color}]"
            f"{self.escape(printable(job))}: {self.escape(printable(outcome.message))}",
            markup=True,
            highlight=False,
        )
        self.progress.advance(self.overall)


def console(*, interactive: bool, total: int) -> ApplyConsole:
    """apply's progress for people: a live bar on a terminal, plain lines elsewhere (CI logs)."""
    return RichConsole(total) if interactive else LineConsole()


if TYPE_CHECKING:  # each view has the signature its Protocol states
    from reconciler.views import kinds

    _plan: kinds.PlanView = plan
    _apply: kinds.ApplyView = apply
    _jobs: kinds.JobsView = jobs
    _history: kinds.HistoryView = history
    _validate: kinds.ValidateView = validate
    _state: kinds.StateView = state
    _refs: kinds.RefsView = refs
    _checks: kinds.ChecksView = checks
    _console: kinds.ConsoleFactory = console
