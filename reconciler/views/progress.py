"""Apply consoles: how progress reaches a person or a tool. The executor never prints.

* ``LineConsole``: plain lines, one per event (CI logs, or any output that is not a terminal);
* ``JsonConsole``: one JSON object per line (``apply --format json``);
* ``RichConsole``: on a terminal, a bar for the whole run and one line per lookup in flight with its
  latest status code and message.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from rich.markup import escape

from reconciler.apply.outcome import Outcome
from reconciler.client import JobStatus
from reconciler.errors import printable
from reconciler.plan.model import Change


class LineConsole:
    """Plain lines on a stream."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def _say(self, text: str) -> None:
        self.stream.write(printable(text) + "\n")
        self.stream.flush()

    def change_started(self, change: Change, method: str) -> None:
        self._say(
            f"{change.address}: {change.action.value} started ({method} {change.endpoint or ''})".rstrip()
        )

    def job_status(self, change: Change, status: JobStatus) -> None:
        self._say(f"{change.address}: {status.code} {status.msg or ''}".rstrip())

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        job = f" (job {outcome.job_id})" if outcome.job_id else ""
        self._say(
            f"{change.address}: {outcome.status}{job}: {outcome.message} [{outcome.seconds:.1f}s]"
        )


class JsonConsole:
    """One JSON event per line: change_started, job_status, change_finished, summary."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, event: str, **data: Any) -> None:
        """Write one event."""
        record = {"event": event, "time": round(time.time(), 3), **data}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def change_started(self, change: Change, method: str) -> None:
        self.emit(
            "change_started",
            address=change.address,
            action=change.action.value,
            method=method,
            endpoint=change.endpoint,
        )

    def job_status(self, change: Change, status: JobStatus) -> None:
        self.emit(
            "job_status",
            address=change.address,
            code=status.code,
            msg=status.msg,
            eventdata=status.eventdata,
        )

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        self.emit(
            "change_finished",
            address=change.address,
            action=(outcome.effective or outcome.action).value,
            status=outcome.status,
            job_id=outcome.job_id,
            message=outcome.message,
            polls=outcome.polls,
            seconds=round(outcome.seconds, 3),
        )


class RichConsole:
    """A progress bar for the run and a line per lookup in flight (terminals only)."""

    def __init__(self, total: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.overall = self.progress.add_task("apply", total=total)
        self.lines: dict[str, Any] = {}

    def __enter__(self) -> RichConsole:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def change_started(self, change: Change, method: str) -> None:
        if change.address not in self.lines:
            self.lines[change.address] = self.progress.add_task(
                escape(printable(f"  {change.address}: {method}", one_line=True)), total=None
            )

    def job_status(self, change: Change, status: JobStatus) -> None:
        task = self.lines.get(change.address)
        if task is not None:
            text = f"  {change.address}: {status.code} {status.msg or ''}"
            self.progress.update(task, description=escape(printable(text, one_line=True)))

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        task = self.lines.pop(change.address, None)
        if task is not None:
            self.progress.remove_task(task)
        color = "green" if outcome.ok else "red"
        job = f" (job {outcome.job_id})" if outcome.job_id else ""
        self.progress.console.print(
            f"[{color}]{escape(printable(change.address))}: {outcome.status}[/{color}]"
            f"{escape(printable(job))}: {escape(printable(outcome.message))}",
            markup=True,
            highlight=False,
        )
        self.progress.advance(self.overall)
