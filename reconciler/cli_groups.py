"""The command groups: ``reconciler emulator``, ``reconciler state`` and ``reconciler ci``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from reconciler import views
from reconciler.cli_options import (
    StateFormatOpt,
    StateOpt,
    emit,
    err,
    handle_errors,
    write_line,
)
from reconciler.errors import SettingsError, printable

emulator_app = typer.Typer(help="The embedded Lookups API emulator.", no_args_is_help=True)


def secret_source(source: str, what: str) -> str:
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
            raise SettingsError(f"{what}: cannot read {ref}: {exc.strerror}") from exc
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
        bool,
        typer.Option(
            help="Answer deployConfig: null and lastStatus: null, as Devo's documented examples do."
        ),
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
                token=secret_source(source, "--token"),
                domains=domains.split(",") if domains else ["*"],
            )
        )
    for spec in api_key or []:
        sources, _, domains = spec.partition("=")
        key_source, _, secret_of = sources.partition(",")
        grants.append(
            Grant(
                api_key=secret_source(key_source, "--api-key"),
                api_secret=secret_source(secret_of, "--api-key secret"),
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
    err(f"Lookups API emulator on http://{host}:{port}/lookup-api (database {db})")
    serve(config, host=host, port=port, db=db)


state_app = typer.Typer(help="Inspect and manage the state.", no_args_is_help=True)


def state_location(state: str | None) -> str:
    from reconciler.settings import DEFAULT_STATE

    return state or os.environ.get("RECONCILER_STATE") or str(DEFAULT_STATE)


@state_app.command("show")
@handle_errors
def state_show(
    output_format: StateFormatOpt = "text",
    state: StateOpt = None,
) -> None:
    """The recorded lookups: address, kind, endpoint, applied at, job id, CSV sha256 and rows."""
    from reconciler.state import State, StateLock
    from reconciler.state.snapshots import Snapshots

    views.check_format("state", output_format)
    location = state_location(state)
    loaded = State.load(location)
    kept = Snapshots(location, loaded.backend).sizes()
    print(
        printable(
            views.state_view(output_format)(
                loaded, location, StateLock(location, "").holder(), kept
            )
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

    location = state_location(state)
    holder = unlock(location, lock_id)
    err(f"Released {holder.describe()} on {location}.")
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

    result = run_state_rm(
        state_location(state), addresses, lock_timeout=lock_timeout, listener=write_line
    )
    raise typer.Exit(emit(asyncio.run(result)))


@state_app.command("rekey")
@handle_errors
def state_rekey(
    state: StateOpt = None,
    lock_timeout: Annotated[
        float,
        typer.Option("--lock-timeout", help="Seconds to wait for another run's lock.", metavar="S"),
    ] = 0.0,
) -> None:
    """Encrypt the state, snapshots and journal again with RECONCILER_STATE_KEY (the key they
    were written with in RECONCILER_STATE_OLD_KEYS; plain ones are read as they are)."""
    import asyncio

    from reconciler.state import StateLock
    from reconciler.state.records import rekey

    location = state_location(state)

    async def locked() -> tuple[int, int]:
        lock = StateLock(location, "state rekey")
        await lock.acquire(lock_timeout, waiting=err)
        try:
            return rekey(location)
        finally:
            lock.release()

    objects, entries = asyncio.run(locked())
    err(f"Sealed {objects} object(s) and {entries} journal entr(y/ies) of {location} again.")
    raise typer.Exit(0)


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

    location = state_location(state)
    err(migrate(location, to).describe(location, to))
    raise typer.Exit(0)


ci_app = typer.Typer(
    help="Post reports where CI shows them (GitHub Actions, GitLab CI).", no_args_is_help=True
)


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

    err(upsert_comment(detect(), report, key, os.environ))
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
    err(sync_issue(detect(), title, None if close else report))
    raise typer.Exit(0)


__all__ = ["ci_app", "emulator_app", "state_app", "state_location"]
