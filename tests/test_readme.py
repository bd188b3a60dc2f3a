"""The README tells the truth (issue 26): its contents list every section, its `validate` example
is what the example specs print, and every command and flag it shows exists."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer

from reconciler.cli import app
from tests.support import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _outside_code(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def test_the_contents_list_every_section_in_order() -> None:
    headings = [line[3:] for line in _outside_code(README) if line.startswith("## ")]
    assert headings[0] == "Contents"
    contents = README.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- \[([^\]]+)\]\(#([a-z0-9-]+)\)$", contents, re.M)
    assert [title for title, _ in listed] == headings[1:]
    for title, anchor in listed:
        assert anchor == re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def test_the_validate_example_is_what_the_example_specs_print(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = re.search(r"```console\n\$ reconciler validate specs/\n(.*?)```", README, re.S)
    assert example is not None
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    spec = tmp_path / "specs" / "acme.yaml"
    spec.write_text(
        spec.read_text().replace(
            "    key: {type: column, column: ip}", "    key: {type: column, column: ipp}", 1
        )
    )
    csv = tmp_path / "specs" / "data" / "geo.csv"
    lines = csv.read_text().splitlines(keepends=True)
    lines[3] = "10.0.0.999," + lines[3].split(",", 1)[1]  # line 4, as the README says
    csv.write_text("".join(lines))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate", "specs/"])
    assert result.exit_code == 1
    assert result.stderr == example.group(1), result.stderr


def _commands() -> dict[str, Any]:
    """Every command by its words (``plan``, ``state rm``, ``ci issue``)."""
    root: Any = typer.main.get_command(app)
    found: dict[str, Any] = {}
    for name, command in root.commands.items():
        if hasattr(command, "commands"):  # a group: state, ci, emulator
            for sub, inner in command.commands.items():
                found[f"{name} {sub}"] = inner
        else:
            found[name] = command
    return found


def _mentions() -> list[tuple[str, str]]:
    """(command words, the text that shows it) for every use the README shows: the headings of
    the command reference and every ``reconciler ...`` line of its shell blocks."""
    commands = _commands()
    shown = []
    group = ""
    for segment in re.findall(r"^### `(reconciler [^`]+)`(.*)$", README, re.M):
        parts = [segment[0], *re.findall(r"`([^`]+)`", segment[1])]
        for part in parts:
            words = part.removeprefix("reconciler ").split()
            name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
            if name not in commands and f"{group} {name}" in commands:
                name = f"{group} {name}"
            group = name.split()[0]
            shown.append((name, part))
    commands_typed = []
    for language, body in re.findall(r"```(sh|console)\n(.*?)```", README, re.S):
        prompt = "$ " if language == "console" else ""
        for line in body.splitlines():
            if line.startswith(prompt + "reconciler "):  # a console block's output is not typed
                commands_typed.extend(
                    part.strip() for part in line[len(prompt) :].split("&&") if part.strip()
                )
    for line in commands_typed:
        if not line.startswith("reconciler ") or line.split()[1].startswith("--"):
            continue  # the program's own options (--version) are checked apart
        words = line.split()[1:]
        name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
        shown.append((name, line.split("#")[0]))
    return shown


def test_every_command_and_flag_the_readme_shows_exists() -> None:
    commands = _commands()
    mentions = _mentions()
    assert len(mentions) >= 25
    seen = set()
    for name, text in mentions:
        assert name in commands, f"the README shows `{text}`, but there is no command {name!r}"
        options = {opt for param in commands[name].params for opt in getattr(param, "opts", [])}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text):
            assert flag in options or flag in ("--help",), f"`{text}`: {name} has no {flag}"
        seen.add(name)
    # And every command is shown somewhere.
    assert not set(commands) - seen, set(commands) - seen


def test_the_programs_own_options_exist(runner: CliRunner) -> None:
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("reconciler ")
    from reconciler import __version__

    assert f"reconciler {__version__}" in README  # the install section shows what it prints


def test_a_command_whose_output_is_no_terminal_imports_no_terminal_libraries() -> None:
    """CI runs commands with markdown or JSON output, or plain text into a log: rich (colour,
    progress) and httpx's own command line (click, pygments) are not imported for them; and the
    entry point turns pydantic's plugins off, unless the variable says otherwise."""
    import os
    import subprocess
    import sys

    # One process per environment: in the first, text then JSON (what one of them imports stays
    # in sys.modules, so the line after the second covers both).
    probe = (
        "import os, sys\n"
        "from reconciler.__main__ import main\n"
        "for output in os.environ['FORMATS'].split():\n"
        "    sys.argv = ['reconciler', 'validate', 'specs', '--format', output]\n"
        "    try:\n        main()\n    except SystemExit as exc:\n        code = exc.code\n"
        "    import httpx\n"
        "    loaded = {m.split('.')[0] for m in sys.modules} & {'rich', 'click', 'pygments'}\n"
        "    loaded = sorted(loaded)\n"
        "    print('probe:', output, code, loaded, os.environ.get('PYDANTIC_DISABLE_PLUGINS'),"
        " callable(httpx.main))\n"
    )
    for outputs, env, plugins in [
        ("text json", {}, "__all__"),
        ("text", {"PYDANTIC_DISABLE_PLUGINS": ""}, ""),
    ]:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "FORMATS": outputs, **env},
        )
        said = [line for line in done.stdout.splitlines() if line.startswith("probe: ")]
        expected = [f"probe: {output} 0 [] {plugins} True" for output in outputs.split()]
        assert said == expected, done.stdout + done.stderr


def test_the_console_scripts_version_is_the_cli_s_without_building_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], runner: CliRunner
) -> None:
    """The entry point answers a bare ``--version`` itself: the same line, typer not imported;
    anything else goes to the command line."""
    import subprocess
    import sys

    from reconciler.__main__ import main

    probe = (
        "import sys; sys.argv = ['reconciler', '--version']\n"
        "from reconciler.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n"
        "    print(exc.code, 'typer' in sys.modules, 'reconciler.cli' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    printed, verdict = done.stdout.splitlines()
    assert printed == runner.invoke(app, ["--version"]).stdout.strip()
    assert verdict == "0 False False", done.stdout + done.stderr
    monkeypatch.setattr("sys.argv", ["reconciler", "--help"])
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")  # what main sets: undone after
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0 and "Usage: reconciler" in capsys.readouterr().out
