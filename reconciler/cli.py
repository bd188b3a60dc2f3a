"""The command line: options → objects → engine → exit code. No diff or API logic lives here.

Heavy modules (httpx, rich tables, deepdiff, the emulator) are imported inside the commands that use
them, so ``reconciler --help`` and ``reconciler validate`` start fast.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from reconciler import views
from reconciler.errors import ReconcilerError, SettingsError, SpecError, printable

app = typer.Typer(
    name="reconciler",
    help="Keep Devo lookups in git: validate, plan, apply, drift, import, jobs and history.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

F = TypeVar("F", bound=Callable[..., Any])

PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec files or folders (default: specs/).", show_default=False, metavar="PATHS"
    ),
]


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
) -> None:
    """Keep Devo lookups in git: validate, plan, apply, drift, import, jobs and history."""


def _csv_progress() -> None:
    """On a terminal, show what a long CSV scan is doing (for the commands that scan CSVs; the
    import stays out of the others' start-up)."""
    if sys.stderr.isatty():
        from reconciler.spec import csvcheck

        csvcheck.scan_progress = _scan_status


def _scan_status(path: Path, size: int) -> Any:
    """A spinner with the elapsed time on stderr while a big CSV is checked."""
    from rich.console import Console

    return Console(stderr=True).status(f"Checking {path.name} ({size / 2**20:,.0f} MB)…")


def _err(text: str) -> None:
    sys.stderr.write(printable(text) + "\n")


def handle_errors(fn: F) -> F:
    """Turn every error into a message on stderr and an exit code; never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SpecError as exc:
            for diagnostic in exc.diagnostics:
                _err(diagnostic.render())
            _err(f"✗ {exc.message}")
            raise typer.Exit(exc.exit_code) from None
        except ReconcilerError as exc:
            _err(f"Error: {exc.message}")
            if exc.hint:
                _err(f"  hint: {exc.hint}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err("Interrupted.")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: say so plainly, traceback only on request
            if os.environ.get("RECONCILER_DEBUG"):
                raise
            _err(f"Internal error: {type(exc).__name__}: {exc}")
            _err("  hint: set RECONCILER_DEBUG=1 for the traceback, and please report it")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _paths(paths: list[Path] | None) -> list[str]:
    return [str(p) for p in paths] if paths else ["specs"]


# --- options shared by every command that talks to the Lookups API ---------------------------

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Lookups API base URL (env DEVO_LOOKUP_URL).",
        show_default=False,
        metavar="URL",
    ),
]
RegionOpt = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="us, eu, ca, apac or es (env DEVO_REGION).",
        show_default=False,
        metavar="REGION",
    ),
]
EmulatorOpt = Annotated[
    bool, typer.Option("--emulator", help="Use the embedded Lookups API emulator.")
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="Read the token from this file (else env DEVO_TOKEN).", metavar="FILE"
    ),
]
AuthSchemeOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-scheme",
        help="bearer (default) or standalone (env DEVO_AUTH_SCHEME).",
        show_default=False,
        metavar="SCHEME",
    ),
]
StateOpt = Annotated[
    str | None,
    typer.Option(
        "--state",
        help="State: a file, or s3://BUCKET/PREFIX, gs://, az:// (env RECONCILER_STATE; "
        "default .reconciler/state.json).",
        show_default=False,
        metavar="PATH",
    ),
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Log every request (method, URL, status, time) to stderr.")
]


def _formats(view: str, note: str = "") -> str:
    """``--format`` help for a command showing ``view``: its choices come from the views registry."""
    choices = views.formats_for(view)
    listed = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    return f"{listed}{note}."


PlanFormatOpt = Annotated[str, typer.Option("--format", help=_formats("plan"), metavar="FORMAT")]
ApplyFormatOpt = Annotated[
    str,
    typer.Option(
        "--format", help=_formats("apply", " (json: one event per line)"), metavar="FORMAT"
    ),
]
JobsFormatOpt = Annotated[str, typer.Option("--format", help=_formats("jobs"), metavar="FORMAT")]
HistoryFormatOpt = Annotated[
    str, typer.Option("--format", help=_formats("history"), metavar="FORMAT")
]
ValidateFormatOpt = Annotated[
    str, typer.Option("--format", help=_formats("validate"), metavar="FORMAT")
]
StateFormatOpt = Annotated[str, typer.Option("--format", help=_formats("state"), metavar="FORMAT")]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option("--allow-outside", help="Accept csv.file paths that leave the spec repository."),
]
MaxDestroyOpt = Annotated[
    int | None,
    typer.Option(
        "--max-destroy",
        min=0,
        help="Refuse (exit 1, nothing sent) a plan that deletes more than N lookups in all.",
        metavar="N",
    ),
]
ReplaceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--replace",
        help="Re-send this DOMAIN/NAME even if it is up to date (repeatable), e.g. to push "
        "a rotated S3 secret.",
        metavar="ADDR",
    ),
]
AllowMassDestroyOpt = Annotated[
    bool,
    typer.Option(
        "--allow-mass-destroy",
        help="With no --max-destroy or maxDestroy, allow deleting more than 20% (and at least 3) "
        "of a domain's managed lookups.",
    ),
]
AllowPruneWithoutStateOpt = Annotated[
    bool,
    typer.Option(
        "--allow-prune-without-state",
        help="Allow prune in a domain the state records nothing of (protection lives in the "
        "state: a missing or empty one cannot tell which lookups were protected).",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds one request may take, its retries included (env RECONCILER_TIMEOUT; "
        "default 60).",
        metavar="SECONDS",
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        envvar="RECONCILER_STRICT",
        help="Exit 1 when some lookups could not be verified (env RECONCILER_STRICT=1).",
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option("--target", help="Only lookups matching this domain/name glob.", metavar="GLOB"),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", help="Skip lookups matching this domain/name glob.", metavar="GLOB"),
]


@dataclass
class Connection:
    """The connection options of one command, resolved lazily."""

    url: str | None = None
    region: str | None = None
    emulator: bool = False
    token_file: Path | None = None
    auth_scheme: str | None = None
    state: str | None = None
    debug: bool = False
    timeout: float | None = None

    def settings(self) -> Any:
        """Resolve into Settings, print the embedded-emulator notice, set up --debug logging."""
        from reconciler.settings import resolve

        if self.debug:
            import logging

            logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
            logging.getLogger("reconciler").setLevel(logging.DEBUG)
        settings = resolve(
            url=self.url,
            region=self.region,
            emulator=self.emulator,
            token_file=self.token_file,
            auth_scheme=self.auth_scheme,
            state=self.state,
            timeout=self.timeout,
        )
        if settings.notice:
            _err(settings.notice)
        choice = settings.credentials.choice()
        if choice:
            _err(choice)
        return settings


_CONNECTION_OPTIONS: dict[str, Any] = {
    "url": (UrlOpt, None),
    "region": (RegionOpt, None),
    "emulator": (EmulatorOpt, False),
    "token_file": (TokenFileOpt, None),
    "auth_scheme": (AuthSchemeOpt, None),
    "state": (StateOpt, None),
    "debug": (DebugOpt, False),
    "timeout": (TimeoutOpt, None),
}


def connected(fn: F) -> F:
    """Give a command the connection options, declared once here, as one ``connection`` argument.

    The command declares ``connection: Connection``; typer sees the eight options in its place
    (``--url``, ``--region``, ``--emulator``, ``--token-file``, ``--auth-scheme``, ``--state``,
    ``--debug``, ``--timeout``), and the command receives them resolved into one object.
    """
    signature = inspect.signature(fn, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "connection"]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=hint, default=default)
        for name, (hint, default) in _CONNECTION_OPTIONS.items()
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options = {name: kwargs.pop(name) for name in _CONNECTION_OPTIONS if name in kwargs}
        return fn(*args, connection=Connection(**options), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must read the new signature, not the command's own
    return wrapper  # type: ignore[return-value]


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@app.command()
@handle_errors
def validate(
    paths: PathsArg = None,
    no_csv: Annotated[
        bool, typer.Option("--no-csv", help="Skip reading local CSV files (faster).")
    ] = False,
    output_format: ValidateFormatOpt = "text",
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Check spec documents (schema, semantic rules, local CSVs). No network."""
    from reconciler import views
    from reconciler.spec import validate_paths

    views.check_format("validate", output_format)
    _csv_progress()
    result = validate_paths(_paths(paths), csv=not no_csv, allow_outside=allow_outside)
    if output_format == "text" and result.errors:
        raise SpecError(result.diagnostics)
    if output_format == "text":
        for diagnostic in result.diagnostics:
            _err(diagnostic.render())
    print(printable(views.render("validate", output_format, result)))
    raise typer.Exit(1 if result.errors else 0)


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of spec documents (for editors and CI)."""
    from reconciler.spec.model import json_schema

    print(json.dumps(json_schema(), indent=2))


emulator_app = typer.Typer(help="The embedded Lookups API emulator.", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")


def _secret_source(source: str, what: str) -> str:
    """Read a secret from ``env:NAME`` or ``file:PATH``: never from the command line itself."""
    from reconciler.errors import SettingsError

    kind, _, ref = source.partition(":")
    if kind == "env" and ref:
        value = os.environ.get(ref)
        if not value:
            raise SettingsError(f"{what}: environment variable {ref} is not set")
        return value
    if kind == "file" and ref:
        try:
            return Path(ref).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"{what}: cannot read {ref}: {exc.strerror}") from None
    raise SettingsError(
        f"{what} must be env:NAME or file:PATH",
        hint="secrets are never accepted as plain command-line values (they leak into process lists)",
    )


@emulator_app.command("serve")
@handle_errors
def emulator_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    db: Annotated[Path, typer.Option(help="SQLite database file.")] = Path(
        ".reconciler/emulator.db"
    ),
    token: Annotated[
        list[str] | None,
        typer.Option(
            help="Accept a token: env:NAME or file:PATH, optionally =DOMAIN_GLOBS (comma-separated).",
            metavar="SOURCE",
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Accept signed requests: KEYSOURCE,SECRETSOURCE[=DOMAIN_GLOBS], sources as for --token.",
            metavar="SOURCES",
        ),
    ] = None,
    known_domain: Annotated[
        list[str] | None,
        typer.Option(help="Only these domains exist (default: every domain).", metavar="DOMAIN"),
    ] = None,
    deploy_config_null: Annotated[
        bool, typer.Option(help="Answer deployConfig: null, as Devo's documented examples do.")
    ] = False,
    create_latency: Annotated[float, typer.Option(help="Seconds of the create phase.")] = 0.1,
    deploy_latency: Annotated[float, typer.Option(help="Seconds of the deploy phase.")] = 0.2,
    delete_latency: Annotated[float, typer.Option(help="Seconds of a delete job.")] = 0.1,
    job_failure_rate: Annotated[float, typer.Option(help="Share of jobs that fail.")] = 0.0,
    job_failure_pattern: Annotated[
        str | None, typer.Option(help="Jobs of lookups whose name matches this glob fail.")
    ] = None,
    rate_5xx: Annotated[float, typer.Option(help="Share of requests answered 503.")] = 0.0,
    rate_429: Annotated[float, typer.Option(help="Share of requests answered 429.")] = 0.0,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds of a 429.")] = 1.0,
    rate_drop: Annotated[float, typer.Option(help="Share of connections dropped.")] = 0.0,
    added_latency: Annotated[float, typer.Option(help="Seconds added to every request.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed of the fault dice.")] = None,
    habit: Annotated[
        list[str] | None,
        typer.Option(
            help="A habit of a less tidy service (repeatable): rewrite-queries, "
            "columns-with-from, empty-for-null, numbers-as-strings, jobs-vanish.",
            metavar="HABIT",
        ),
    ] = None,
) -> None:
    """Serve the Lookups API emulator over HTTP (runs until stopped)."""
    from reconciler.emulator import EmulatorConfig, Grant, serve

    grants = []
    for spec in token or []:
        source, _, domains = spec.partition("=")
        grants.append(
            Grant(
                token=_secret_source(source, "--token"),
                domains=domains.split(",") if domains else ["*"],
            )
        )
    for spec in api_key or []:
        sources, _, domains = spec.partition("=")
        key_source, _, secret_source = sources.partition(",")
        grants.append(
            Grant(
                api_key=_secret_source(key_source, "--api-key"),
                api_secret=_secret_source(secret_source, "--api-key secret"),
                domains=domains.split(",") if domains else ["*"],
            )
        )
    config = EmulatorConfig(
        grants=grants,
        known_domains=known_domain or None,
        deploy_config_null=deploy_config_null,
        create_latency=create_latency,
        deploy_latency=deploy_latency,
        delete_latency=delete_latency,
        job_failure_rate=job_failure_rate,
        job_failure_pattern=job_failure_pattern,
        rate_5xx=rate_5xx,
        rate_429=rate_429,
        retry_after=retry_after,
        rate_drop=rate_drop,
        added_latency=added_latency,
        seed=seed,
    )
    habits = (
        "rewrite-queries",
        "columns-with-from",
        "empty-for-null",
        "numbers-as-strings",
        "jobs-vanish",
    )
    for name in habit or []:
        if name not in habits:
            raise SettingsError(
                f"--habit {name!r} is not a habit", hint="one of: " + ", ".join(habits)
            )
        setattr(config, name.replace("-", "_"), True)
    _err(f"Lookups API emulator on http://{host}:{port}/lookup-api (database {db})")
    serve(config, host=host, port=port, db=db)


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
    *,
    connection: Connection,
) -> None:
    """Show what apply would do: diff the specs against the live lookups."""
    import asyncio

    from reconciler.commands import run_plan
    from reconciler.plan.guards import Guards

    views.check_format("plan", output_format)
    _csv_progress()
    code = asyncio.run(
        run_plan(
            connection.settings(),
            _paths(paths),
            output_format=output_format,
            out=out,
            targets=target or [],
            excludes=exclude or [],
            color=_color(),
            verbose=verbose,
            detailed_exitcode=detailed_exitcode,
            strict=strict,
            allow_outside=allow_outside,
            guards=Guards(max_destroy, allow_mass_destroy, allow_prune_without_state),
            replace=replace or [],
        )
    )
    raise typer.Exit(code)


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
    raise typer.Exit(run_show(plan_file, output_format, color=_color()))


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
    *,
    connection: Connection,
) -> None:
    """Read-only: report where Devo differs from the specs (exit 2 on drift)."""
    import asyncio

    from reconciler.commands import run_drift

    views.check_format("plan", output_format)
    _csv_progress()
    code = asyncio.run(
        run_drift(
            connection.settings(),
            _paths(paths),
            output_format=output_format,
            targets=target or [],
            excludes=exclude or [],
            color=_color(),
            strict=strict,
            allow_outside=allow_outside,
        )
    )
    raise typer.Exit(code)


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

    from reconciler.commands import run_apply
    from reconciler.plan.guards import Guards

    views.check_format("apply", output_format)
    _csv_progress()
    code = asyncio.run(
        run_apply(
            connection.settings(),
            _paths(paths),
            plan_file=plan_file,
            auto_approve=auto_approve,
            parallelism=parallelism,
            wait=not no_wait,
            job_timeout=job_timeout,
            output_format=output_format,
            targets=target or [],
            excludes=exclude or [],
            color=_color(),
            interactive=sys.stdout.isatty() and output_format == "text",
            strict=strict,
            allow_outside=allow_outside,
            replace=replace or [],
            lock_timeout=lock_timeout,
            guards=Guards(max_destroy, allow_mass_destroy, allow_prune_without_state),
        )
    )
    raise typer.Exit(code)


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

    code = asyncio.run(
        run_import(
            connection.settings(),
            domain,
            name_glob=name,
            out_dir=out,
            force=force,
            everything=everything,
        )
    )
    raise typer.Exit(code)


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
    code = asyncio.run(
        run_jobs(
            connection.settings(),
            address,
            job_id=job,
            output_format=output_format,
            watch=watch,
            watch_timeout=watch_timeout,
        )
    )
    raise typer.Exit(code)


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
    code = run_history(
        _state_location(state),
        name=name,
        domain=domain,
        action=action,
        since=since,
        until=until,
        offset=offset,
        page_size=page_size,
        output_format=output_format,
    )
    raise typer.Exit(code)


state_app = typer.Typer(help="Inspect and manage the state.", no_args_is_help=True)
app.add_typer(state_app, name="state")


def _state_location(state: str | None) -> str:
    from reconciler.settings import DEFAULT_STATE

    return state or os.environ.get("RECONCILER_STATE") or str(DEFAULT_STATE)


@state_app.command("show")
@handle_errors
def state_show(
    output_format: StateFormatOpt = "text",
    state: StateOpt = None,
) -> None:
    """The recorded lookups: address, kind, endpoint, applied at, job id, CSV sha256 and rows."""
    from reconciler import views
    from reconciler.state import State, StateLock

    views.check_format("state", output_format)
    location = _state_location(state)
    loaded = State.load(location)
    print(
        printable(
            views.render("state", output_format, loaded, location, StateLock(location, "").holder())
        )
    )
    raise typer.Exit(0)


@state_app.command("unlock")
@handle_errors
def state_unlock(
    lock_id: Annotated[
        str, typer.Argument(help="The id the locked apply reported.", metavar="LOCK_ID")
    ],
    state: StateOpt = None,
) -> None:
    """Release a lock a killed apply left behind (only the one named)."""
    from reconciler.state import unlock

    location = _state_location(state)
    holder = unlock(location, lock_id)
    _err(f"Released {holder.describe()} on {location}.")
    raise typer.Exit(0)


@state_app.command("rm")
@handle_errors
def state_rm(
    addresses: Annotated[
        list[str], typer.Argument(help="Recorded DOMAIN/NAME addresses.", metavar="ADDRESS...")
    ],
    state: StateOpt = None,
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", help="Seconds to wait for another run's lock.", metavar="S"),
    ] = 0.0,
) -> None:
    """Forget records without deleting the lookups (they become unmanaged)."""
    import asyncio

    from reconciler.commands import run_state_rm

    raise typer.Exit(
        asyncio.run(run_state_rm(_state_location(state), addresses, lock_timeout=lock_timeout))
    )


@state_app.command("migrate")
@handle_errors
def state_migrate(
    to: Annotated[
        str, typer.Option("--to", help="The new location (a path or a URL).", metavar="URL")
    ],
    state: StateOpt = None,
) -> None:
    """Copy state and journal to another location; the source is kept."""
    from reconciler.state import migrate

    location = _state_location(state)
    _err(migrate(location, to).describe(location, to))
    raise typer.Exit(0)


ci_app = typer.Typer(
    help="Post reports where CI shows them (GitHub Actions, GitLab CI).", no_args_is_help=True
)
app.add_typer(ci_app, name="ci")


@ci_app.command("comment")
@handle_errors
def ci_comment(
    report: Annotated[Path, typer.Argument(help="The markdown report to post.", metavar="REPORT")],
    key: Annotated[
        str, typer.Option("--key", help="Which comment of the run this is (one per key).")
    ] = "plan",
) -> None:
    """Create, or update in place, one comment on the pull (merge) request with REPORT."""
    from reconciler.ci import detect, upsert_comment

    _err(upsert_comment(detect(), report, key, os.environ))
    raise typer.Exit(0)


@ci_app.command("issue")
@handle_errors
def ci_issue(
    title: Annotated[str, typer.Option("--title", help="The issue's title.")] = "Lookup drift",
    report: Annotated[
        Path | None, typer.Option("--report", help="Open or update the issue with this report.")
    ] = None,
    close: Annotated[bool, typer.Option("--close", help="Close the issue if one is open.")] = False,
) -> None:
    """Open or update the one issue titled TITLE with a report, or close it (--close)."""
    from reconciler.ci import detect, sync_issue

    if (report is None) == (not close):
        raise SettingsError("give --report FILE or --close", hint="one of the two")
    _err(sync_issue(detect(), title, None if close else report))
    raise typer.Exit(0)


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
