"""The import rules of ARCHITECTURE.md, checked on every module's source (imports inside functions
and under TYPE_CHECKING included): data flows one way, and the emulator stays independent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reconciler"

# Every top-level module and package of reconciler/, by layer (ARCHITECTURE.md, "Layers").
LAYER_OF: dict[str, str] = {
    "errors": "foundation",
    "settings": "foundation",
    "coltypes": "foundation",
    "timeframe": "foundation",
    "linq": "foundation",
    "canonical": "foundation",
    "clock": "foundation",
    "gitrepo": "foundation",
    "sources": "sources",
    "spec": "spec",
    "desired": "desired",
    "client": "client",
    "state": "state",
    "plan": "plan",
    "apply": "apply",
    "views": "views",
    "engine": "engine",
    "commands": "engine",
    "importer": "engine",
    "connect": "engine",
    "ci": "engine",
    "browse": "engine",
    "cli": "cli",
    "cli_options": "cli",
    "cli_groups": "cli",
    "__main__": "cli",
    "__init__": "foundation",
    "emulator": "emulator",
}
# What each layer may import besides itself.
MAY_IMPORT: dict[str, set[str]] = {
    "foundation": set(),
    "sources": {"foundation"},
    "spec": {"foundation", "sources"},
    "desired": {"foundation", "sources", "spec"},
    "client": {"foundation"},
    "state": {"foundation"},
    "plan": {"foundation", "sources", "spec", "desired", "client", "state"},
    "apply": {"foundation", "sources", "spec", "desired", "client", "state", "plan"},
    "views": {"foundation", "spec", "client", "state", "plan", "apply"},
    "engine": {
        "foundation",
        "sources",
        "spec",
        "desired",
        "client",
        "state",
        "plan",
        "apply",
        "views",
        "emulator",
    },
    "cli": {
        "foundation",
        "sources",
        "spec",
        "desired",
        "client",
        "state",
        "plan",
        "apply",
        "views",
        "engine",
        "emulator",
    },
    # The stand-in for a service nobody here wrote: it shares no code with the tool.
    "emulator": set(),
}


def _part(module: str) -> str | None:
    """``reconciler.plan.builder`` → ``plan``; None for modules outside reconciler."""
    parts = module.split(".")
    if parts[0] != "reconciler":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(source: str, dotted: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (module ``dotted``)."""
    tree = ast.parse(source)
    package = dotted.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the module's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "reconciler":  # from reconciler import views → reconciler.views
                found.extend((node.lineno, f"reconciler.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, module))
    return found


def _violations(source: str, dotted: str) -> list[str]:
    own = LAYER_OF[_part(dotted) or "__init__"]
    allowed = MAY_IMPORT[own] | {own}
    wrong = []
    for line, module in _imports(source, dotted):
        target = _part(module)
        if target is None or target not in LAYER_OF or target == "__init__":
            continue  # outside reconciler, or reconciler/__init__ (its version string)
        if LAYER_OF[target] not in allowed:
            wrong.append(f"{dotted}:{line} ({own}) imports {module} ({LAYER_OF[target]})")
    return wrong


def _dotted(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer() -> None:
    parts = {_part(_dotted(p)) for p in _modules()}
    assert parts - set(LAYER_OF) == set(), "add the new module to ARCHITECTURE.md and LAYER_OF"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    wrong = _violations(path.read_text(), _dotted(path))
    assert not wrong, "\n".join(wrong)


def test_the_rules_catch_wrong_imports() -> None:
    """The checker itself: upward imports are found (the test above cannot pass vacuously)."""
    lazy = "def f():\n    from reconciler.plan.builder import compare\n"
    assert _violations(lazy, "reconciler.spec.checks") == [
        "reconciler.spec.checks:2 (spec) imports reconciler.plan.builder (plan)"
    ]
    relative = "from ..client import LookupMeta\n"
    assert _imports(relative, "reconciler.plan.builder") == [(1, "reconciler.client")]
    assert _violations("from reconciler import views\n", "reconciler.state.records")
    assert _violations("import reconciler.coltypes\n", "reconciler.emulator.app")
    assert not _violations(
        "from reconciler.emulator.values import TYPES\n", "reconciler.emulator.app"
    )


def test_the_views_registry_reads_what_each_format_module_defines() -> None:
    """``--help`` reads the formats from the modules' source; importing them must agree."""
    import importlib

    from reconciler import views

    assert views.formats_for("plan") == ("text", "json", "markdown", "html")
    assert views.formats_for("apply") == ("text", "json")
    assert views.formats_for("nothing") == ()
    for module in views.FORMATS.values():
        imported = importlib.import_module(module)
        for name in views._offered(module):
            assert callable(getattr(imported, name)), (module, name)


def test_no_module_is_over_600_lines_and_none_asserts() -> None:
    """Modules that do one job (issue 27), and no ``assert`` guarding anything (``python -O``
    skips them)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 600, f"{path.relative_to(ROOT)} is over 600 lines"
        tree = ast.parse(text)
        asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        assert not asserts, f"{path.relative_to(ROOT)}: assert on line(s) {asserts}"
