"""What a command said and how it ended, as data.

The commands' bodies (``commands``, ``browse``) never write to a stream nor prompt: they return a
``Result`` (the exit code and the lines for stdout and stderr, in order), and whoever called them
decides where the lines go. Given a ``Listener``, a command hands it each line as it is said (the
command line passes one that writes it, escaping control characters: ``cli_options.write_line``,
so a long apply shows its plan, its lock wait and its notes as they happen, and what was said
before an error is not lost); without one, the result keeps every line, so a test or a library
caller reads them from the returned value.
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
    """A command's exit code and its lines; with ``live``, each line goes there instead."""

    code: int = 0
    lines: list[Line] = field(default_factory=list)
    live: Listener | None = field(default=None, repr=False, compare=False)

    def out(self, text: str = "", *, coloured: bool = False) -> None:
        """A line of the command's document (stdout)."""
        self._say(Line(text, "out", coloured))

    def err(self, text: str) -> None:
        """A note on stderr: a warning, where something was saved, why it refused."""
        self._say(Line(text, "err"))

    def ends(self, code: int) -> Result:
        """This result with its exit code set (for ``return result.ends(1)``)."""
        self.code = code
        return self

    def _say(self, line: Line) -> None:
        if self.live is not None:
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
