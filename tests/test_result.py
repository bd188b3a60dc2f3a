"""A command's Result: lines kept in order, or handed to a listener as they are said; and how the
command line writes them."""

from __future__ import annotations

import pytest

from reconciler.cli_options import emit, write_line
from reconciler.result import Line, Result


def test_without_a_listener_every_line_is_kept_in_order_per_stream() -> None:
    said = Result()
    said.out("plan")
    said.err("warning")
    said.out("summary")
    assert said.ends(2) is said and said.code == 2
    assert said.stdout == "plan\nsummary\n" and said.stderr == "warning\n"
    assert [line.stream for line in said.lines] == ["out", "err", "out"]


def test_a_listener_hears_every_line_as_it_is_said_and_nothing_is_kept() -> None:
    heard: list[Line] = []
    said = Result(live=heard.append)
    said.out("the plan", coloured=True)
    said.err("waiting for the lock")
    said.out("summary")
    assert heard == [
        Line("the plan", "out", True),
        Line("waiting for the lock", "err"),
        Line("summary", "out"),
    ]
    assert said.lines == [] and said.stdout == said.stderr == ""


def test_emit_escapes_what_a_spec_could_plant_and_keeps_our_colour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = Result(code=1)
    said.out("name \x1b]0;pwned\x07 here")
    said.out("\x1b[32mours\x1b[0m", coloured=True)
    said.err("bell \x07")
    assert emit(said) == 1
    out, err = capsys.readouterr()
    assert "\x1b]0;pwned\x07" not in out and "pwned" in out
    assert "\x1b[32mours\x1b[0m" in out
    assert "\x07" not in err and "bell" in err
    write_line(Line("live \x1b[2J", "err"))
    assert "\x1b[2J" not in capsys.readouterr().err
