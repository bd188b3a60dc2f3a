"""Apply: carry out a plan's changes through the client, follow every job, record what happened.

``executor`` holds the Executor (ordering, concurrency, delta uploads, recording and journaling) and
the outcome vocabulary; ``jobs`` reads a lookup's jobs for the ``jobs`` command with the same rule.
"""

from reconciler.apply.executor import (
    DONE,
    FAILED,
    INTERRUPTED,
    NOT_ATTEMPTED,
    SUBMITTED,
    TIMED_OUT,
    ApplyConsole,
    ApplyOptions,
    Executor,
    NullConsole,
    Outcome,
    check_secrets,
    completion_line,
    summarize,
)

__all__ = [
    "DONE",
    "FAILED",
    "INTERRUPTED",
    "NOT_ATTEMPTED",
    "SUBMITTED",
    "TIMED_OUT",
    "ApplyConsole",
    "ApplyOptions",
    "Executor",
    "NullConsole",
    "Outcome",
    "check_secrets",
    "completion_line",
    "summarize",
]
