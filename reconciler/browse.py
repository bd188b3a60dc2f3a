"""The commands that read what exists and write no state: ``import`` (specs for live lookups),
``jobs`` (a lookup's jobs), ``history`` (the journal) and ``check`` (the live lookups' checks).
Like ``commands``, each returns a ``Result`` the command line writes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from reconciler import views
from reconciler.client import LookupReader
from reconciler.connect import transport_for
from reconciler.errors import NotFoundError, SettingsError, SpecError
from reconciler.result import Listener, Result
from reconciler.settings import Settings
from reconciler.state import State
from reconciler.state.journal import Journal


async def run_import(
    settings: Settings,
    domain: str,
    *,
    name_glob: str | None = None,
    out_dir: Path = Path("specs"),
    force: bool = False,
    everything: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    listener: Listener | None = None,
) -> Result:
    """``reconciler import``: one spec file per live lookup the specs under ``out_dir`` (and the
    state) do not manage yet (every one with ``everything``), plus the Domain document unless
    those specs have one."""
    import fnmatch
    import re

    from reconciler.importer import import_lookup, invalid_import, write_import
    from reconciler.spec.model import DOMAIN_PATTERN

    if not re.fullmatch(DOMAIN_PATTERN, domain):
        # It names a folder under --out: "../x" would write outside it, "''" a file nothing reads.
        raise SettingsError(
            f"{domain!r} is not a Devo domain name",
            hint="letters, digits, '_', '.', '@' and '-', starting with a letter, digit or '_'",
        )
    managed, has_domain = _managed_by_specs(out_dir, domain)
    if not everything:
        managed |= {
            a for a in State.load(settings.state_location).lookups if a.startswith(domain + "/")
        }
    async with LookupReader(settings, transport=transport_for(settings, transport)) as reader:
        live = await reader.all_lookups(domain)
    chosen = [
        m
        for m in live
        if (name_glob is None or fnmatch.fnmatchcase(m.name, name_glob))
        and (everything or f"{domain}/{m.name}" not in managed)
    ]
    already = len([m for m in live if f"{domain}/{m.name}" in managed])
    imported, skipped = [], []
    for meta in chosen:
        item = import_lookup(domain, meta)
        problems = invalid_import(domain, item)
        if problems:
            skipped.append((meta.name, problems))
        else:
            imported.append(item)
    paths = write_import(out_dir, domain, imported, force=force, domain_file=not has_domain)
    said = Result(live=listener)
    for name, problems in skipped:
        said.err(f"{domain}/{name}: skipped, the spec it would need is not valid: {problems}")
    for item, path in zip(imported, paths, strict=False):
        said.out(f"{domain}/{item.name}: wrote {path} ({item.kind})")
        for note in item.notes:
            said.out(f"  note: {note}")
    inexact = [i.name for i in imported if not i.exact]
    said.out(f"\nImported {len(imported)} lookup(s) of {domain} into {out_dir / domain}.")
    if already and not everything:
        said.out(
            f"{already} lookup(s) of {domain} are managed already (specs or state): not written; --all writes them too."
        )
    if skipped:
        said.err(f"Skipped {len(skipped)} lookup(s) that no valid spec can describe (see above).")
    if inexact:
        said.err(
            f"Warning: {len(inexact)} lookup(s) imported from metadata only (deployConfig was not "
            f"readable): {', '.join(inexact)}. Check the lines marked UNKNOWN."
        )
    return said


def _managed_by_specs(out_dir: Path, domain: str) -> tuple[set[str], bool]:
    """The addresses the specs under ``out_dir`` define in ``domain``, and whether they hold its
    Domain document (then import adds no second one)."""
    from reconciler.spec import load_specs

    if not out_dir.exists():
        return set(), False
    loaded = load_specs([out_dir], allow_outside=True)  # --out: the command line's choice
    if loaded.errors:
        raise SpecError(loaded.diagnostics)  # which lookups they define is not known
    addresses = {
        lookup.address for lookup in loaded.lookups if lookup.address.startswith(domain + "/")
    }
    return addresses, any(d.model.metadata.name == domain for d in loaded.domains)


async def run_jobs(
    settings: Settings,
    address: str,
    *,
    job_id: str | None = None,
    output_format: str = "text",
    watch: bool = False,
    watch_timeout: float = 600.0,
    transport: httpx.AsyncBaseTransport | None = None,
    listener: Listener | None = None,
) -> Result:
    """``reconciler jobs DOMAIN/NAME`` (``--watch`` tells ``listener`` each status as it comes)."""
    said = Result(live=listener)
    from reconciler.client.job_views import job_views
    from reconciler.errors import JobFailed, JobTimeout

    domain, sep, name = address.partition("/")
    if not sep or not domain or not name:
        raise SettingsError(
            f"{address!r} is not DOMAIN/NAME", hint="e.g. reconciler jobs acme/geo_ranges"
        )
    async with LookupReader(settings, transport=transport_for(settings, transport)) as reader:
        if watch:
            ids = [job_id] if job_id else await reader.job_ids(domain, name)
            if not ids:
                said.out(f"{address}: no jobs.")
                return said
            try:  # a typo'd --job is an error now, not a 24-hour wait
                await reader.job_statuses(domain, name, ids[-1])
            except NotFoundError as exc:
                exc.hint = (
                    f"no job {ids[-1]} for {address}: list its jobs with reconciler jobs {address}"
                )
                raise
            said.out(f"Watching job {ids[-1]} of {address}...")
            try:
                await reader.wait_for_job(
                    domain,
                    name,
                    ids[-1],
                    timeout=watch_timeout,
                    on_status=lambda s: said.out(
                        f"  {s.eventdata or '-':<24} {s.code:<14} {s.msg or ''}"
                    ),
                )
            except (JobFailed, JobTimeout) as exc:
                said.out(f"{address}: {exc}")
                return said.ends(1)
            said.out(f"{address}: job {ids[-1]} done.")
            return said
        found = await job_views(reader, domain, name, job_id)
    said.out(views.jobs_view(output_format)(address, found))
    return said


def run_history(
    state_location: str | Path,
    *,
    name: str | None = None,
    domain: str | None = None,
    action: str | None = None,
    since: str | None = None,
    until: str | None = None,
    offset: int = 0,
    page_size: int = 50,
    output_format: str = "text",
    listener: Listener | None = None,
) -> Result:
    """``reconciler history``: query the journal of what apply changed."""
    from reconciler.state.journal import HistoryQuery, query
    from reconciler.timeframe import parse_time

    def moment(flag: str, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise SettingsError(f"{flag}: {exc}") from None

    from reconciler.state.journal import ACTIONS

    if offset < 0 or not 1 <= page_size <= 1000:
        raise SettingsError("--offset must be ≥ 0 and --page-size between 1 and 1000")
    if action is not None and action not in ACTIONS:
        raise SettingsError(
            f"--action {action!r} is not an action", hint="one of: " + ", ".join(ACTIONS)
        )
    q = HistoryQuery(
        name, domain, action, moment("--since", since), moment("--until", until), offset, page_size
    )
    journal = Journal.for_state(str(state_location))
    page = query(journal, q)
    said = Result(live=listener)
    if journal.skipped:
        lines = ", ".join(map(str, journal.skipped[:10])) + (
            " ..." if len(journal.skipped) > 10 else ""
        )
        said.err(
            f"Warning: {journal.where}: skipped {len(journal.skipped)} line(s) that are not "
            f"journal entries (line {lines})"
        )
    said.out(views.history_view(output_format)(page, offset))
    return said


__all__ = ["run_history", "run_import", "run_jobs"]


async def run_check(
    settings: Settings,
    paths: list[str],
    *,
    output_format: str = "text",
    targets: list[str] | None = None,
    allow_outside: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    listener: Listener | None = None,
) -> Result:
    """``reconciler check``: every lookup's checks against the live service, nothing else; exit 1
    when one fails (a lookup with checks that does not exist fails them)."""
    import fnmatch

    from reconciler.engine import evaluate_checks, fetch_live, load_workspace

    workspace = load_workspace(paths, allow_outside=allow_outside)
    chosen = {
        a
        for a in workspace.checks
        if not targets or any(fnmatch.fnmatchcase(a, t) for t in targets)
    }
    async with LookupReader(settings, transport=transport_for(settings, transport)) as reader:
        reader.use_domain_credentials(workspace.credentials(os.environ))
        reader.use_domain_endpoints(workspace.endpoints)
        domains = sorted({a.split("/", 1)[0] for a in chosen})
        live = await fetch_live(reader, domains)
        state = State.load(settings.state_location)
        results = await evaluate_checks(reader, workspace, live, state, chosen, missing_fails=True)
    said = Result(live=listener)
    if not workspace.checks:
        said.err("No lookup has checks (spec.checks of a Lookup or a Domain).")
    said.out(views.checks_view(output_format)(results))
    return said.ends(1 if any(not r.passed for r in results) else 0)
