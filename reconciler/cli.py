"""The command line: options → objects → engine → exit code. No diff or API logic lives here.

Heavy modules (httpx, rich tables, deepdiff, the emulator) are imported inside the commands that use
them, so ``reconciler --help`` and ``reconciler validate`` start fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from reconciler import views
from reconciler.cli_groups import ci_app, emulator_app, state_app, state_location
from reconciler.cli_options import (
    AllowBreakingOpt,
    AllowMassDestroyOpt,
    AllowOutsideOpt,
    AllowPruneWithoutStateOpt,
    ApplyFormatOpt,
    ChecksFormatOpt,
    Connection,
    ExcludeOpt,
    HistoryFormatOpt,
    IgnoreReferencesOpt,
    JobsFormatOpt,
    MaxDestroyOpt,
    OverridePolicyOpt,
    PathsArg,
    PlanFormatOpt,
    RefsFormatOpt,
    ReplaceOpt,
    StateOpt,
    StrictOpt,
    TargetOpt,
    ValidateFormatOpt,
    ask_approval,
    connected,
    csv_progress,
    emit,
    err,
    guards_of,
    handle_errors,
    spec_paths,
    use_color,
    write_line,
)
from reconciler.errors import SpecError, printable

app = typer.Typer(
    name="reconciler",
    help="Keep Devo lookups in git: validate, plan, apply, drift, import, jobs and history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from reconciler import __version__

        print(f"reconciler {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    state_key_file: Annotated[
        Path | None,
        typer.Option(
            "--state-key-file",
            help="A file holding the key that encrypts the state, snapshots and journal "
            "(instead of RECONCILER_STATE_KEY). Give it before the command.",
            metavar="FILE",
        ),
    ] = None,
) -> None:
    """Keep Devo lookups in git: validate, plan, apply, drift, import, jobs and history."""
    if state_key_file is not None:
        # The path, never the key, goes where the state code reads it.
        os.environ["RECONCILER_STATE_KEY_FILE"] = str(state_key_file)


# --- options shared by every command that talks to the Lookups API ---------------------------


@app.command()
@handle_errors
def validate(
    paths: PathsArg = None,
    no_csv: Annotated[
        bool, typer.Option("--no-csv", help="Skip reading local CSV files (faster).")
    ] = False,
    output_format: ValidateFormatOpt = "text",
    allow_outside: AllowOutsideOpt = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="A query using a lookup no spec defines is an error, not a warning."
        ),
    ] = False,
    ignore_references: IgnoreReferencesOpt = None,
    policies: Annotated[
        bool,
        typer.Option(
            "--policies",
            help="Also judge every spec by the Policies, as the plan creating it (offline).",
        ),
    ] = False,
    override_policy: OverridePolicyOpt = None,
) -> None:
    """Check spec documents (schema, semantic rules, local CSVs, lookup references). No network."""
    from reconciler import views
    from reconciler.spec import validate_paths

    views.check_format("validate", output_format)
    result = validate_paths(
        spec_paths(paths),
        csv=not no_csv,
        allow_outside=allow_outside,
        progress=csv_progress(),
        strict=strict,
        ignore_references=ignore_references or [],
    )
    if policies and not result.errors:
        from reconciler.plan.policies import offline_violations

        result.diagnostics.extend(offline_violations(result, override_policy or []))
    if output_format == "text" and result.errors:
        raise SpecError(result.diagnostics)
    if output_format == "text":
        for diagnostic in result.diagnostics:
            err(diagnostic.render())
    print(printable(views.validate_view(output_format)(result)))
    raise typer.Exit(1 if result.errors else 0)


@app.command()
@handle_errors
def refs(
    address: Annotated[
        str | None,
        typer.Argument(
            help="A lookup's DOMAIN/NAME (a glob): who uses it and what it uses (default: all).",
            show_default=False,
            metavar="ADDRESS",
        ),
    ] = None,
    specs: Annotated[
        list[Path] | None,
        typer.Option("--specs", help="Spec files or folders (default: specs/).", metavar="PATH"),
    ] = None,
    output_format: RefsFormatOpt = "text",
    ignore_references: IgnoreReferencesOpt = None,
) -> None:
    """Who uses which lookup: query lookups and the files Domains name in spec.references. No
    network."""
    from reconciler import views
    from reconciler.spec import validate_paths
    from reconciler.spec.references import refs_report

    views.check_format("refs", output_format)
    result = validate_paths(spec_paths(specs), csv=False, ignore_references=ignore_references or [])
    for diagnostic in result.diagnostics:
        err(diagnostic.render())
    report = refs_report(result, result.references, address)
    print(printable(views.refs_view(output_format)(report)))
    raise typer.Exit(1 if result.errors else 0)


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of spec documents (for editors and CI)."""
    from reconciler.spec.model import json_schema

    print(json.dumps(json_schema(), indent=2))


@app.command()
@handle_errors
@connected
def plan(
    paths: PathsArg = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Save the plan for apply --plan.")
    ] = None,
    output_format: PlanFormatOpt = "text",
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 2 when there are changes.")
    ] = False,
    target: TargetOpt = None,
    exclude: ExcludeOpt = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also list lookups that are up to date.")
    ] = False,
    strict: StrictOpt = False,
    allow_outside: AllowOutsideOpt = False,
    max_destroy: MaxDestroyOpt = None,
    allow_mass_destroy: AllowMassDestroyOpt = False,
    allow_prune_without_state: AllowPruneWithoutStateOpt = False,
    replace: ReplaceOpt = None,
    allow_breaking: AllowBreakingOpt = None,
    ignore_references: IgnoreReferencesOpt = None,
    override_policy: OverridePolicyOpt = None,
    *,
    connection: Connection,
) -> None:
    """Show what apply would do: diff the specs against the live lookups."""
    import asyncio

    from reconciler.commands import run_plan

    views.check_format("plan", output_format)
    result = asyncio.run(
        run_plan(
            connection.settings(),
            spec_paths(paths),
            progress=csv_progress(),
            output_format=output_format,
            out=out,
            targets=target or [],
            excludes=exclude or [],
            color=use_color(),
            verbose=verbose,
            detailed_exitcode=detailed_exitcode,
            strict=strict,
            allow_outside=allow_outside,
            guards=guards_of(
                max_destroy,
                allow_mass_destroy,
                allow_prune_without_state,
                allow_breaking,
                ignore_references,
                override_policy,
            ),
            replace=replace or [],
            listener=write_line,
        )
    )
    raise typer.Exit(emit(result))


@app.command()
@handle_errors
def show(
    plan_file: Annotated[
        Path, typer.Argument(help="A plan saved with plan --out.", metavar="PLANFILE")
    ],
    output_format: PlanFormatOpt = "text",
) -> None:
    """Show a saved plan without contacting Devo."""
    from reconciler.commands import run_show

    views.check_format("plan", output_format)
    shown = run_show(plan_file, output_format, color=use_color(), listener=write_line)
    raise typer.Exit(emit(shown))


@app.command()
@handle_errors
@connected
def drift(
    paths: PathsArg = None,
    output_format: PlanFormatOpt = "text",
    target: TargetOpt = None,
    exclude: ExcludeOpt = None,
    strict: StrictOpt = False,
    allow_outside: AllowOutsideOpt = False,
    ignore_references: IgnoreReferencesOpt = None,
    *,
    connection: Connection,
) -> None:
    """Read-only: report where Devo differs from the specs (exit 2 on drift)."""
    import asyncio

    from reconciler.commands import run_drift
    from reconciler.plan.guards import Guards

    views.check_format("plan", output_format)
    result = asyncio.run(
        run_drift(
            connection.settings(),
            spec_paths(paths),
            progress=csv_progress(),
            output_format=output_format,
            targets=target or [],
            excludes=exclude or [],
            color=use_color(),
            strict=strict,
            allow_outside=allow_outside,
            guards=Guards(ignore_references=tuple(ignore_references or ())),
            listener=write_line,
        )
    )
    raise typer.Exit(emit(result))


@app.command()
@handle_errors
@connected
def check(
    paths: PathsArg = None,
    output_format: ChecksFormatOpt = "text",
    target: TargetOpt = None,
    allow_outside: AllowOutsideOpt = False,
    *,
    connection: Connection,
) -> None:
    """Run the lookups' checks (spec.checks) against the live service (exit 1 when one fails)."""
    import asyncio

    from reconciler.browse import run_check

    views.check_format("checks", output_format)
    result = asyncio.run(
        run_check(
            connection.settings(),
            spec_paths(paths),
            output_format=output_format,
            targets=target or [],
            allow_outside=allow_outside,
            listener=write_line,
        )
    )
    raise typer.Exit(emit(result))


@app.command()
@handle_errors
@connected
def apply(
    paths: PathsArg = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="Apply a saved plan (counts as approval).")
    ] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Apply without asking.")
    ] = False,
    parallelism: Annotated[
        int, typer.Option("--parallelism", help="Requests submitted at once.")
    ] = 8,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Do not follow the jobs to their end.")
    ] = False,
    job_timeout: Annotated[
        float, typer.Option("--job-timeout", help="Seconds each job may take.")
    ] = 600.0,
    output_format: ApplyFormatOpt = "text",
    target: TargetOpt = None,
    exclude: ExcludeOpt = None,
    replace: ReplaceOpt = None,
    strict: StrictOpt = False,
    allow_outside: AllowOutsideOpt = False,
    max_destroy: MaxDestroyOpt = None,
    allow_mass_destroy: AllowMassDestroyOpt = False,
    allow_prune_without_state: AllowPruneWithoutStateOpt = False,
    allow_breaking: AllowBreakingOpt = None,
    ignore_references: IgnoreReferencesOpt = None,
    override_policy: OverridePolicyOpt = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            help="Seconds to wait for another apply's lock on the state (default: fail at once).",
            metavar="S",
        ),
    ] = 0.0,
    *,
    connection: Connection,
) -> None:
    """Make the live lookups match the specs, and follow every job to its end."""
    import asyncio

    from reconciler.commands import ApplyRequest, run_apply

    views.check_format("apply", output_format)
    result = asyncio.run(
        run_apply(
            connection.settings(),
            spec_paths(paths),
            ApplyRequest(
                progress=csv_progress(),
                plan_file=plan_file,
                auto_approve=auto_approve,
                approve=ask_approval,
                listener=write_line,
                parallelism=parallelism,
                wait=not no_wait,
                job_timeout=job_timeout,
                output_format=output_format,
                targets=target or [],
                excludes=exclude or [],
                color=use_color(),
                interactive=sys.stdout.isatty() and output_format == "text",
                strict=strict,
                allow_outside=allow_outside,
                replace=replace or [],
                lock_timeout=lock_timeout,
                guards=guards_of(
                    max_destroy,
                    allow_mass_destroy,
                    allow_prune_without_state,
                    allow_breaking,
                    ignore_references,
                    override_policy,
                ),
            ),
        )
    )
    raise typer.Exit(emit(result))


@app.command("import")
@handle_errors
@connected
def import_(
    domain: Annotated[str, typer.Argument(help="The Devo domain to import.", metavar="DOMAIN")],
    name: Annotated[
        str | None, typer.Option("--name", help="Only lookups whose name matches this glob.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder to write specs into.")] = Path("specs"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    everything: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also lookups the specs under --out (or the state) manage already.",
        ),
    ] = False,
    *,
    connection: Connection,
) -> None:
    """Write specs for live lookups no spec manages yet (a plan right after is empty)."""
    import asyncio

    from reconciler.browse import run_import

    result = asyncio.run(
        run_import(
            connection.settings(),
            domain,
            name_glob=name,
            out_dir=out,
            force=force,
            everything=everything,
            listener=write_line,
        )
    )
    raise typer.Exit(emit(result))


@app.command()
@handle_errors
@connected
def jobs(
    address: Annotated[
        str, typer.Argument(help="DOMAIN/NAME of the lookup.", metavar="DOMAIN/NAME")
    ],
    job: Annotated[str | None, typer.Option("--job", help="Only this job id.")] = None,
    output_format: JobsFormatOpt = "text",
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the latest (or --job) job until it ends.")
    ] = False,
    watch_timeout: Annotated[
        float,
        typer.Option(
            "--watch-timeout",
            min=0.1,
            help="With --watch: give up (exit 1) after this many seconds (default 600).",
            metavar="S",
        ),
    ] = 600.0,
    *,
    connection: Connection,
) -> None:
    """A lookup's recent jobs: statuses in order, stage, submitted/stopped times, duration."""
    import asyncio

    from reconciler.browse import run_jobs

    views.check_format("jobs", output_format)
    result = asyncio.run(
        run_jobs(
            connection.settings(),
            address,
            job_id=job,
            output_format=output_format,
            watch=watch,
            watch_timeout=watch_timeout,
            listener=write_line,
        )
    )
    raise typer.Exit(emit(result))


@app.command()
@handle_errors
def history(
    name: Annotated[
        str | None, typer.Option("--name", help="Glob on the lookup name or DOMAIN/NAME.")
    ] = None,
    domain: Annotated[str | None, typer.Option("--domain", help="Only this domain.")] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help="create (or add), update (or change), delete (or destroy), or no-op.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Epoch ms, ISO-8601, or now-1d, now-2h/h (inclusive)."),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Same formats as --since (exclusive).")
    ] = None,
    offset: Annotated[int, typer.Option("--offset", help="Entries to skip.")] = 0,
    page_size: Annotated[int, typer.Option("--page-size", help="Entries per page.")] = 50,
    output_format: HistoryFormatOpt = "text",
    state: StateOpt = None,
) -> None:
    """The audit trail of what apply changed (newest first)."""
    from reconciler.browse import run_history

    views.check_format("history", output_format)
    result = run_history(
        state_location(state),
        name=name,
        domain=domain,
        action=action,
        since=since,
        until=until,
        offset=offset,
        page_size=page_size,
        output_format=output_format,
        listener=write_line,
    )
    raise typer.Exit(emit(result))


app.add_typer(emulator_app, name="emulator")
app.add_typer(state_app, name="state")
app.add_typer(ci_app, name="ci")


def main() -> None:
    """Console-script entry point: usage errors exit 1, because 2 means "changes" or "drift".

    Click exits 2 on a usage error (an unknown flag, a bad option value); a CI job that typo'd a
    flag would then read as drift. Here every usage error is reported the same way and exits 1.
    """
    try:  # typer vendors click from 0.2x on; before that it used click itself
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_errors  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except click_errors.UsageError as exc:
        exc.show()
        sys.exit(1)
    except click_errors.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code or 1)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
