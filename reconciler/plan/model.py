"""The plan as frozen data: what would change, per lookup, and why. No I/O here.

``Plan`` is built by ``plan.builder.build_plan`` (a pure function) and read by the renderers
(``plan.render``) and the executor (``apply``). ``Action`` values are the contract's words; their
``symbol`` is what the text view prints.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT_VERSION = "1.0"


class Action(StrEnum):
    """What apply does to one lookup."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def symbol(self) -> str:
        """The text view's marker (display only)."""
        return {"create": "+", "update": "~", "delete": "-", "no-op": " "}[self.value]

    @property
    def method(self) -> str | None:
        """The HTTP method apply uses."""
        return {"create": "POST", "update": "PUT", "delete": "DELETE"}.get(self.value)


#: Which side of a three-way comparison moved: the spec, Devo, or only the record (``protect``).
ChangeSource = Literal["spec", "live", "state"]
#: Why a CSV lookup's content is sent: the file changed, Devo's rows changed, or nothing proves
#: what Devo holds (no record of an upload).
CsvChangeSource = Literal["spec", "live", "unproven"]
#: How a CSV is sent: the whole file, or Devo's row protocol with only the rows that changed.
UploadStrategy = Literal["full", "delta"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class AttributeChange(_Frozen):
    """One attribute that differs: its canonical path, the value before and the desired value.

    ``source`` says which side moved: ``spec`` (the spec changed since the last apply; ``before`` is
    what was sent), ``live`` (Devo changed since the last apply, or there is no record; ``before``
    is what Devo shows), or ``state`` (the state file records a choice only the reconciler knows,
    such as ``protect``).
    """

    path: str
    before: Any = None
    after: Any = None
    source: ChangeSource = "live"
    details: list[str] = Field(default_factory=list)  # element-level lines (display only)


class CsvChange(_Frozen):
    """How a ``csv.file`` lookup's content changed (rows by key, when a previous CSV is known)."""

    before_sha256: str | None = None
    after_sha256: str | None = None
    before_rows: int | None = None
    after_rows: int | None = None
    added: int | None = None
    removed: int | None = None
    changed: int | None = None
    samples: list[str] = Field(default_factory=list)
    # "spec": the file changed; "live": Devo's data changed (numEntries); "unproven": no record
    # of an upload vouches for the rows in Devo, so the file is sent again.
    source: CsvChangeSource = "spec"
    strategy: UploadStrategy = "full"  # "full": the whole file; "delta": only the rows that changed
    send_rows: int | None = None  # rows the upload sends (a delta: deleted + added)
    send_bytes: int | None = None  # bytes the upload sends
    note: str | None = None  # why rows could not be diffed by key (display only)


class UsedBy(_Frozen):
    """One reference to a changed lookup: where it is (``file:line``), the query lookup holding it
    (None: a file a Domain's ``references`` names), the column it reads, the form as written."""

    where: str
    user: str | None = None
    column: str | None = None
    snippet: str = ""


class Change(_Frozen):
    """What apply would do to one lookup, and why."""

    address: str
    domain: str
    name: str
    action: Action
    kind: str | None = None
    endpoint: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    diff: list[AttributeChange] = Field(default_factory=list)
    reason: str = ""
    unverified: list[str] = Field(default_factory=list)
    csv: CsvChange | None = None
    protect: bool = False
    spec: str | None = None  # file:line of the spec (display only)
    overlay: str | None = None  # file:line of the Overlay merged onto it, for this domain
    request: bool = True  # False: apply only records it (a change of ``protect``), sends nothing
    wave: int = 0  # the apply wave of its domain (Domain.spec.wave): waves go in ascending order
    used_by: list[UsedBy] = Field(default_factory=list)  # references using this lookup
    depends_on: list[str] = Field(default_factory=list)  # changes whose jobs end before it starts


class Violation(_Frozen):
    """A policy rule a planned change does not pass: which policy and rule, how hard it holds,
    which lookup, the rule's message (and the evaluation error, when it could not be evaluated),
    and whether ``--override-policy`` overrode it (soft-mandatory only)."""

    policy: str
    rule: str
    enforcement: Literal["advisory", "soft-mandatory", "mandatory"]
    address: str
    message: str
    expr: str = ""
    where: str = ""  # file:line of the rule
    error: str | None = None
    overridden: bool = False

    @property
    def blocking(self) -> bool:
        """True when it makes the plan an error: mandatory, or soft-mandatory not overridden."""
        return self.enforcement == "mandatory" or (
            self.enforcement == "soft-mandatory" and not self.overridden
        )

    @property
    def level(self) -> str:
        """How hard it holds, as the views show it: ``soft-mandatory, overridden``."""
        return self.enforcement + (", overridden" if self.overridden else "")


class CheckResult(_Frozen):
    """One check of one lookup: the expression, where it was written, whether it passed, and
    what the lookup showed (the values a message needs)."""

    address: str
    expr: str
    where: str
    passed: bool
    error: str | None = None
    observed: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        """``check 'numEntries >= 1000' failed (numEntries = 3.0)`` for messages."""
        shown = ", ".join(
            f"{k} = {v!r}" for k, v in self.observed.items() if not isinstance(v, dict | list)
        )
        why = f": {self.error}" if self.error else ""
        return f"check {self.expr!r} failed{why}" + (f" ({shown})" if shown else "")


class Plan(_Frozen):
    """Every change, in address order, plus live lookups no spec manages and warnings."""

    format_version: str = FORMAT_VERSION
    changes: tuple[Change, ...] = ()
    unmanaged: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # the unmanaged lookups a Domain's keep globs cover: not drift
    hints: tuple[str, ...] = ()  # what to do about unmanaged lookups, per domain (display only)
    warnings: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()  # policy rules the changes do not pass
    checks: tuple[CheckResult, ...] = ()  # the live lookups' checks (spec.checks), evaluated

    @property
    def failed_checks(self) -> list[CheckResult]:
        """The checks a live lookup does not pass."""
        return [c for c in self.checks if not c.passed]

    @property
    def blocking(self) -> list[Violation]:
        """The violations that make the plan an error (nothing may be applied)."""
        return [v for v in self.violations if v.blocking]

    @property
    def summary(self) -> dict[str, int]:
        """Counts in the contract's words: add, change, destroy, unchanged."""
        counts = {"add": 0, "change": 0, "destroy": 0, "unchanged": 0}
        key = {
            Action.CREATE: "add",
            Action.UPDATE: "change",
            Action.DELETE: "destroy",
            Action.NOOP: "unchanged",
        }
        for change in self.changes:
            counts[key[change.action]] += 1
        return counts

    @property
    def unverified(self) -> list[Change]:
        """Changes with attributes nobody could verify (no ``deployConfig``, no state record)."""
        return [c for c in self.changes if c.unverified and c.action is not Action.CREATE]

    @property
    def actionable(self) -> list[Change]:
        """The changes apply must carry out (everything but no-ops)."""
        return [c for c in self.changes if c.action is not Action.NOOP]

    @property
    def drifted_unmanaged(self) -> list[str]:
        """Unmanaged lookups that count as drift: those no ``keep`` glob covers."""
        kept = set(self.kept)
        return [a for a in self.unmanaged if a not in kept]

    @property
    def in_sync(self) -> bool:
        """Drift's verdict: nothing to do, no unmanaged lookup outside the ``keep`` globs, and
        every check of the live lookups passes."""
        return not self.can_apply() and not self.drifted_unmanaged and not self.failed_checks

    def can_apply(self) -> bool:
        """True when there is anything to do."""
        return bool(self.actionable)

    @classmethod
    def from_json(cls, document: Any) -> Plan:
        """A plan read back from its JSON (``plan --out``), for ``show``; ``ValueError`` when the
        document is not one."""
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        fields = (
            "format_version",
            "changes",
            "unmanaged",
            "kept",
            "warnings",
            "violations",
            "checks",
        )
        try:
            return cls.model_validate({k: document[k] for k in fields if k in document})
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"])) from None

    def to_json(self) -> dict[str, Any]:
        """The contract's plan JSON."""
        return {
            "format_version": self.format_version,
            "summary": self.summary,
            "changes": [c.model_dump(mode="json") for c in self.changes],
            "unmanaged": list(self.unmanaged),
            "kept": list(self.kept),
            "warnings": list(self.warnings),
            "unverified": [
                {"address": c.address, "paths": list(c.unverified)} for c in self.unverified
            ],
            "violations": [v.model_dump(mode="json") for v in self.violations],
            "checks": [c.model_dump(mode="json") for c in self.checks],
        }
