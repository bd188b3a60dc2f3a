"""A command's Result: kept lines, lines said while it runs, and how the command line writes it."""

from __future__ import annotations

import pytest

from reconciler.cli_options import emit, write_line
from reconciler.result import Line, Result


def test_lines_are_kept_in_order_per_stream_without_a_listener() -> None:
    said = Result()
    said.out("plan")
    said.err("warning", now=True)  # nobody listens: kept like the rest
    said.out("summary")
    assert said.ends(2) is said and said.code == 2
    assert said.stdout == "plan\nsummary\n" and said.stderr == "warning\n"


def test_a_listener_hears_the_lines_said_now_and_only_those() -> None:
    heard: list[Line] = []
    said = Result(live=heard.append)
    said.out("the plan", coloured=True, now=True)
    said.err("waiting for the lock", now=True)
    said.out("summary")
    assert heard == [Line("the plan", "out", True), Line("waiting for the lock", "err")]
    assert said.stdout == "summary\n" and said.stderr == ""


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
