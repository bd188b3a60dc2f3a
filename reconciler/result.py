"""What a command said and how it ended, as data.

The commands' bodies (``commands``, ``browse``) never write to a stream nor prompt: they return a
``Result`` (the exit code and the lines for stdout and stderr, in order), and the command line
writes it, escaping control characters on the way (``cli_options.emit``). What must be seen while
a command still runs (the plan before its approval, a wait for the state's lock, a watched job's
statuses) goes to a ``Listener`` the caller gives; without one it is kept in the result like the
rest, so a test or a library caller reads everything from the returned value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Stream = Literal["out", "err"]


@dataclass(frozen=True)
class Line:
    """One line (or block) of output: stdout carries the command's document, stderr its notes."""

    text: str
    stream: Stream = "out"
    coloured: bool = False  # the text holds our own colour codes, to be kept when written


Listener = Callable[[Line], None]


@dataclass
class Result:
    """A command's exit code and its lines. ``live`` (when given) receives the lines said with
    ``now=True`` at once instead of keeping them."""

    code: int = 0
    lines: list[Line] = field(default_factory=list)
    live: Listener | None = field(default=None, repr=False, compare=False)

    def out(self, text: str = "", *, coloured: bool = False, now: bool = False) -> None:
        """A line of the command's document (stdout)."""
        self._say(Line(text, "out", coloured), now)

    def err(self, text: str, *, now: bool = False) -> None:
        """A note on stderr: a warning, where something was saved, why it refused."""
        self._say(Line(text, "err"), now)

    def ends(self, code: int) -> Result:
        """This result with its exit code set (for ``return result.ends(1)``)."""
        self.code = code
        return self

    def _say(self, line: Line, now: bool) -> None:
        if now and self.live is not None:
            self.live(line)
        else:
            self.lines.append(line)

    @property
    def stdout(self) -> str:
        """Everything kept for stdout, a line each (what the command line would print)."""
        return "".join(line.text + "\n" for line in self.lines if line.stream == "out")

    @property
    def stderr(self) -> str:
        """Everything kept for stderr."""
        return "".join(line.text + "\n" for line in self.lines if line.stream == "err")


__all__ = ["Line", "Listener", "Result", "Stream"]
