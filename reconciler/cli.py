"""The command line: options → objects → engine → exit code. No diff or API logic lives here.

Heavy modules (httpx, rich tables, deepdiff, the emulator) are imported inside the commands that use
them, so ``reconciler --help`` and ``reconciler validate`` start fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from reconciler.errors import ReconcilerError, SpecError

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
    typer.Argument(help="Spec files or folders (default: specs/).", show_default=False),
]


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


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


@app.command()
@handle_errors
def validate(
    paths: PathsArg = None,
    no_csv: Annotated[
        bool, typer.Option("--no-csv", help="Skip reading local CSV files (faster).")
    ] = False,
    output_format: Annotated[
        str, typer.Option("--format", help="text or json.", metavar="FORMAT")
    ] = "text",
) -> None:
    """Check spec documents (schema, semantic rules, local CSVs). No network."""
    from reconciler.spec import validate_paths

    result = validate_paths(_paths(paths), csv=not no_csv)
    if output_format == "json":
        print(
            json.dumps(
                {
                    "valid": not result.errors,
                    "files": len(result.files),
                    "lookups": len(result.lookups),
                    "domains": len(result.domains),
                    "diagnostics": [
                        {
                            "path": d.path,
                            "line": d.line,
                            "column": d.column,
                            "field": d.field,
                            "severity": d.severity,
                            "message": d.message,
                            "hint": d.hint,
                        }
                        for d in result.diagnostics
                    ],
                },
                indent=2,
            )
        )
        raise typer.Exit(1 if result.errors else 0)
    if result.errors:
        raise SpecError(result.diagnostics)
    for diagnostic in result.diagnostics:
        _err(diagnostic.render())
    print(
        f"✓ {len(result.lookups)} lookup(s) and {len(result.domains)} domain(s) valid "
        f"in {len(result.files)} file(s)."
    )


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
            help="Accept a token: env:NAME or file:PATH, optionally =DOMAIN_GLOBS (comma-separated)."
        ),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Accept signed requests: KEYSOURCE,SECRETSOURCE[=DOMAIN_GLOBS], sources as for --token."
        ),
    ] = None,
    known_domain: Annotated[
        list[str] | None, typer.Option(help="Only these domains exist (default: every domain).")
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
    _err(f"Lookups API emulator on http://{host}:{port}/lookup-api (database {db})")
    serve(config, host=host, port=port, db=db)


def main() -> None:
    """Console-script entry point."""
    app()
