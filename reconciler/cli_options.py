"""The command line's shared parts: every option declared once (as ``Annotated`` types), the
connection options resolved into one ``Connection``, and the error handling every command wears
(a message and an exit code, never a traceback)."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from reconciler import views
from reconciler.errors import ReconcilerError, SpecError, printable
from reconciler.result import Line, Result

F = TypeVar("F", bound=Callable[..., Any])


PathsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Spec files or folders (default: specs/).", show_default=False, metavar="PATHS"
    ),
]


def csv_progress() -> Any:
    """What shows a long CSV scan: the spinner on a terminal, else nothing (None)."""
    return scan_status if sys.stderr.isatty() else None


def scan_status(path: Path, size: int) -> Any:
    """A spinner with the elapsed time on stderr while a big CSV is checked."""
    from rich.console import Console

    return Console(stderr=True).status(f"Checking {path.name} ({size / 2**20:,.0f} MB)…")


def err(text: str) -> None:
    """A note on stderr, as a command's notes are written."""
    write_line(Line(text, "err"))


def write_line(line: Line) -> None:
    """One line of a command's output on its stream, control characters escaped (our own colour
    kept); a ``Listener`` for what a command says while it runs."""
    stream = sys.stdout if line.stream == "out" else sys.stderr
    stream.write(printable(line.text, keep_colour=line.coloured) + "\n")
    stream.flush()


def emit(result: Result) -> int:
    """Write what a command kept to say, in order; its exit code."""
    for line in result.lines:
        write_line(line)
    return result.code


def handle_errors(fn: F) -> F:
    """Turn every error into a message on stderr and an exit code; never show a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SpecError as exc:
            for diagnostic in exc.diagnostics:
                err(diagnostic.render())
            err(f"✗ {exc.message}")
            raise typer.Exit(exc.exit_code) from None
        except ReconcilerError as exc:
            err(f"Error: {exc.message}")
            if exc.hint:
                err(f"  hint: {exc.hint}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err("Interrupted.")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: say so plainly, traceback only on request
            if os.environ.get("RECONCILER_DEBUG"):
                raise
            err(f"Internal error: {type(exc).__name__}: {exc}")
            err("  hint: set RECONCILER_DEBUG=1 for the traceback, and please report it")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def ask_approval() -> bool:
    """apply's question on the terminal: True only for ``yes``; an error when stdin is not a
    terminal (a CI job must say --auto-approve or apply a saved plan)."""
    from reconciler.errors import SettingsError

    if not sys.stdin.isatty():
        raise SettingsError(
            "refusing to apply without approval: stdin is not a terminal",
            hint="pass --auto-approve, or apply a reviewed plan with --plan FILE",
        )
    answer = input("\nDo you want to perform these actions? Only 'yes' will be accepted: ")
    return answer.strip() == "yes"


def guards_of(
    max_destroy: int | None,
    allow_mass_destroy: bool,
    allow_prune_without_state: bool,
    allow_breaking: list[str] | None,
    ignore_references: list[str] | None,
    override_policy: list[str] | None,
) -> Any:
    """The plan's guards (``reconciler.plan.guards.Guards``) from plan's and apply's options."""
    from reconciler.plan.guards import Guards

    return Guards(
        max_destroy,
        allow_mass_destroy,
        allow_prune_without_state,
        tuple(allow_breaking or ()),
        tuple(ignore_references or ()),
        tuple(override_policy or ()),
    )


def spec_paths(paths: list[Path] | None) -> list[str]:
    """The spec paths given (``specs`` by default). A path the system refuses to look at (a name
    too long, a folder without permission on the way) is an error here, before any command
    asks it ``is_dir()``; a missing one is left to discovery, which says so with the others."""
    import errno

    from reconciler.errors import SettingsError

    given = [str(p) for p in paths] if paths else ["specs"]
    for path in given:
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise SettingsError(
                    f"cannot read {printable(path[:200], one_line=True)}: "
                    f"{exc.strerror or type(exc).__name__}",
                    hint="pass spec files or folders (default: specs/)",
                ) from None
    return given


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


def formats_help(view: str, note: str = "") -> str:
    """``--format`` help for a command showing ``view``: its choices come from the views registry."""
    choices = views.formats_for(view)
    listed = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    return f"{listed}{note}."


PlanFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("plan"), metavar="FORMAT")
]


ApplyFormatOpt = Annotated[
    str,
    typer.Option(
        "--format", help=formats_help("apply", " (json: one event per line)"), metavar="FORMAT"
    ),
]


JobsFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("jobs"), metavar="FORMAT")
]


HistoryFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("history"), metavar="FORMAT")
]


ValidateFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("validate"), metavar="FORMAT")
]


ChecksFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("checks"), metavar="FORMAT")
]


RefsFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("refs"), metavar="FORMAT")
]


StateFormatOpt = Annotated[
    str, typer.Option("--format", help=formats_help("state"), metavar="FORMAT")
]


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


AllowBreakingOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-breaking",
        help="Allow this change to break the queries using DOMAIN/NAME (a glob; repeatable): a "
        "destroy, a dropped column, a changed key or column type.",
        metavar="ADDRESS",
    ),
]


OverridePolicyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--override-policy",
        help="Go ahead despite this soft-mandatory Policy (by name; repeatable); apply records "
        "who did in the journal.",
        metavar="NAME",
    ),
]


IgnoreReferencesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore-references",
        help="Lookups (NAME or DOMAIN/NAME glob; repeatable) used by queries but managed "
        "elsewhere, e.g. built-in ones: not reported as missing.",
        metavar="GLOB",
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
            err(settings.notice)
        choice = settings.credentials.choice()
        if choice:
            err(choice)
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


def use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
