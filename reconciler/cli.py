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


def main() -> None:
    """Console-script entry point."""
    app()
