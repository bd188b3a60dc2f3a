"""The one exception tree of the reconciler.

Every error a user can meet is one of these; YAML, pydantic and httpx errors are translated at their
boundary (the loader, the client) and re-raised ``from`` the original, so the CLI only ever sees this
tree and turns it into a message and an exit code in one place (``reconciler.cli``)::

    ReconcilerError                    exit 1
    ├── SpecError                      spec documents are invalid (carries every Diagnostic)
    ├── SettingsError                  endpoint, credentials or flags are unusable
    ├── ApiError                       the Lookups API answered with an error
    │   ├── BadRequestError            400
    │   ├── AuthError                  401 / 403 (names the credential used, never its value)
    │   ├── NotFoundError              404 (says whether the domain or the lookup is missing)
    │   ├── ConflictError              409 (create of an existing lookup)
    │   └── ServerError                429 / 5xx still failing when the retry budget ran out
    ├── TransportError                 no answer at all (connection refused, reset, timed out)
    ├── JobError                       a deploy job did not end well
    │   ├── JobFailed                  it ended in a ``*.err`` status
    │   └── JobTimeout                 it did not end within the job timeout
    ├── PlanError                      a plan cannot be built or applied (protect, stale plan)
    │   ├── StalePlanError             a saved plan no longer matches live state or the specs
    │   └── PreflightError             a domain to be written did not answer an authorised read
    └── StateError                     the state file or journal is unreadable

Messages never contain secret values: tokens, API secrets and S3 keys are not passed to any of
these constructors, and ``redact`` is applied to server messages that echo request bodies.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


class ReconcilerError(Exception):
    """Root of every error the reconciler raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a spec: where it is, which field, what is wrong and how to fix it."""

    path: str
    line: int | None
    column: int | None
    field: str
    message: str
    hint: str | None = None
    severity: str = "error"  # "error" or "warning"

    @classmethod
    def for_file(
        cls, path: str | os.PathLike[str], message: str, *, hint: str | None = None
    ) -> Diagnostic:
        """A finding about a whole file (no line, no field)."""
        return cls(str(path), None, None, "", message, hint)

    def location(self) -> str:
        """``file:line:col`` as editors and CI annotations expect it; a file under the working
        folder is named relative to it (``specs/data/geo.csv``, as it was typed)."""
        loc = self.path
        if os.path.isabs(loc):
            try:
                relative = os.path.relpath(loc)
            except ValueError:  # another drive
                relative = loc
            if not relative.startswith(".."):
                loc = relative
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc

    def render(self) -> str:
        """The one-line form: ``file:12:5: error: spec.csv.key.column: ... (hint)``.

        One line whatever it holds: a file name, a link's target or a value with a line break in
        it (a pull request chooses them) is escaped, so it cannot start a line of its own, such as
        a CI runner's ``::error::`` or ``::add-mask::`` command."""
        text = f"{self.location()}: {self.severity}: "
        if self.field:
            text += f"{self.field}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return printable(text, one_line=True)


class SpecError(ReconcilerError):
    """The spec documents are invalid; ``diagnostics`` holds every finding of the run."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        errors = [d for d in diagnostics if d.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in spec documents")
        self.diagnostics = diagnostics


class SettingsError(ReconcilerError):
    """The endpoint, credentials or command-line options cannot be used as given."""


class ApiError(ReconcilerError):
    """The Lookups API answered a request with an error status."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None,
        server_message: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url
        self.status = status
        self.server_message = server_message


class BadRequestError(ApiError):
    """400: the service rejected the request body or parameters."""


class AuthError(ApiError):
    """401 or 403: the credential is missing, wrong, expired or not allowed in this domain."""


class NotFoundError(ApiError):
    """404: the domain or the lookup does not exist (``missing`` says which, when known)."""

    missing: str = "lookup"


class ConflictError(ApiError):
    """409: a create was sent for a lookup that already exists."""


class ServerError(ApiError):
    """429 or 5xx that kept failing until the retry budget ran out."""


class TransportError(ReconcilerError):
    """No HTTP answer at all: connection refused or dropped, or a read timed out."""

    def __init__(self, message: str, *, method: str, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.method = method
        self.url = url


class JobError(ReconcilerError):
    """A deploy job did not reach a successful terminal status."""

    def __init__(self, message: str, *, job_id: str, last_code: str | None, polls: int = 0) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.last_code = last_code
        self.polls = polls  # how many times the job was read before it was given up on


class JobFailed(JobError):
    """The job ended in a ``*.err`` status; the message is Devo's."""


class JobTimeout(JobError):
    """The job did not end within the job timeout; ``last_code`` is the last status seen."""


class PlanError(ReconcilerError):
    """A plan cannot be built or applied (for example a protected lookup would be deleted)."""


class StalePlanError(PlanError):
    """A saved plan no longer matches the live lookups or the specs it was made from."""


class PreflightError(PlanError):
    """Before the first write, a domain the plan touches did not answer an authorised list call."""


class StateError(ReconcilerError):
    """The state file or the journal exists but cannot be read or written."""


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace every occurrence of each secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


# Control characters (C0 but tab and newline, DEL, C1) and the bidirectional overrides that
# reorder what a reader sees ("Trojan source"): none may reach a terminal raw from outside.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# The colour sequences the text view itself writes (rich, standard colours); kept only where a
# caller says the text was coloured by us (its data was made printable before colouring).
_SGR = re.compile("(\x1b\\[[0-9;]*m)")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False, keep_colour: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``): names,
    cells, server messages and job codes come from outside, and an ESC or OSC sequence in one
    must not clear a screen or retitle a window. ``one_line`` escapes newlines and tabs too (a
    name that could forge a line of output). ``keep_colour`` keeps SGR colour sequences: only for
    text whose outside parts were made printable before it was coloured."""
    pattern = _CONTROL_ONE_LINE if one_line else _CONTROL
    if keep_colour:
        parts = _SGR.split(text)
        return "".join(
            part if i % 2 else pattern.sub(_escaped, part) for i, part in enumerate(parts)
        )
    return pattern.sub(_escaped, text)
