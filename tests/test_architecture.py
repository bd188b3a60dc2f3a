"""The import rules of ARCHITECTURE.md, checked on every module's source (imports inside functions
and under TYPE_CHECKING included): data flows one way, and the emulator stays independent."""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# One worker runs this file's tests, one after another: it parses each module once for all the
# rules (0.3 CPU-s for the package, which four workers paid four times), and the trees go when
# the file is done (see _parsed_once).
pytestmark = pytest.mark.xdist_group("architecture")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reconciler"


def _layer_table() -> tuple[dict[str, str], dict[str, set[str]]]:
    """ARCHITECTURE.md's "Layers" table, read: (top-level module or package → layer, layer →
    the layers it may import). The document is the rule; this test holds no copy of it."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| layer")
    ]
    layer_of: dict[str, str] = {"__init__": "foundation"}  # the package's version string
    wants: dict[str, str] = {}
    for layer, modules, _what, may in rows:
        for name in re.findall(r"`([^`]+)`", modules):
            layer_of[name.removesuffix(".py").removesuffix("/")] = layer
        wants[layer] = may
    layers = set(wants)
    may_import: dict[str, set[str]] = {}
    for layer, may in wants.items():
        if may == "nothing of ours":
            may_import[layer] = set()
        elif may == "everything":
            may_import[layer] = layers - {layer}
        elif may.startswith("everything but "):
            may_import[layer] = layers - {layer, *may.removeprefix("everything but ").split(", ")}
        else:
            may_import[layer] = set(may.split(", "))
        unknown = may_import[layer] - layers
        assert not unknown, f"ARCHITECTURE.md: {layer} may import unknown layers {unknown}"
    return layer_of, may_import


LAYER_OF, MAY_IMPORT = _layer_table()


def test_the_layer_table_reads_as_intended() -> None:
    """The parse itself: the rows it must have said what they say."""
    assert MAY_IMPORT["foundation"] == set() and MAY_IMPORT["emulator"] == set()
    assert MAY_IMPORT["plan"] == {"foundation", "sources", "spec", "desired", "client", "state"}
    assert "cli" not in MAY_IMPORT["engine"] and "emulator" in MAY_IMPORT["engine"]
    assert MAY_IMPORT["cli"] == set(MAY_IMPORT) - {"cli"}
    assert LAYER_OF["commands"] == "engine" and LAYER_OF["plan"] == "plan"


def _part(module: str) -> str | None:
    """``reconciler.plan.builder`` → ``plan``; None for modules outside reconciler."""
    parts = module.split(".")
    if parts[0] != "reconciler":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


@functools.cache
def _tree(source: str) -> ast.Module:
    """A module's syntax tree, parsed once for all the rules that read it."""
    return ast.parse(source)


@pytest.fixture(scope="module", autouse=True)
def _parsed_once() -> Iterator[None]:
    """The parsed package (~190,000 objects) is dropped when this file's tests end: kept, every
    later full collection of the worker walked it again (0.09 s each, a dozen times a run)."""
    yield
    _imports.cache_clear()
    _tree.cache_clear()


@functools.cache
def _imports(source: str, dotted: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source`` (module ``dotted``)."""
    tree = _tree(source)
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


def test_the_views_registry_says_what_each_format_module_defines() -> None:
    """``--help`` reads the formats from ``OFFERS`` without importing them: each module must
    define exactly the views its entry names (and the registry imports no module by string)."""
    from reconciler import views

    assert views.formats_for("plan") == ("text", "json", "markdown", "html")
    assert views.formats_for("apply") == ("text", "json")
    assert views.formats_for("nothing") == ()
    for name, offered in views.OFFERS.items():
        module = views._module(name)
        defined = {view for view in views.VIEWS if callable(getattr(module, view, None))}
        assert defined == offered, name
    source = (PACKAGE / "views" / "__init__.py").read_text()
    assert "importlib" not in source and "ast." not in source


def test_no_module_is_over_600_lines_and_none_asserts() -> None:
    """Modules that do one job (issue 27), and no ``assert`` guarding anything (``python -O``
    skips them)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 600, f"{path.relative_to(ROOT)} is over 600 lines"
        asserts = [node.lineno for node in ast.walk(_tree(text)) if isinstance(node, ast.Assert)]
        assert not asserts, f"{path.relative_to(ROOT)}: assert on line(s) {asserts}"


def _graph() -> dict[str, set[str]]:
    """Module → the modules of reconciler it imports (``from pkg import submodule`` counts as
    importing the submodule), lazy imports included."""
    names = {_dotted(p).removesuffix(".__init__"): p for p in _modules()}

    def resolve(module: str) -> str:
        while module and module not in names:
            module = module.rsplit(".", 1)[0] if "." in module else ""
        return module

    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        edges = set()
        for node in ast.walk(_tree(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler"):
                edges.update(resolve(f"{node.module}.{alias.name}") for alias in node.names)
            elif isinstance(node, ast.Import):
                edges.update(resolve(a.name) for a in node.names if a.name.startswith("reconciler"))
        graph[name] = {e for e in edges if e and e != name and e != "reconciler"}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _refused(source: str, dotted: str) -> list[str]:
    """A private module of another package, ``import reconciler...`` (whose attribute access the
    layer check cannot follow), and modules imported by string (``importlib``, ``__import__``),
    which no import check can see."""
    own = dotted.split(".")[:2]
    wrong = []
    for node in ast.walk(_tree(source)):
        if isinstance(node, ast.Name) and node.id == "__import__":
            wrong.append(f"{dotted}:{node.lineno} imports by string (__import__)")
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "importlib" for a in node.names
        ):
            wrong.append(f"{dotted}:{node.lineno} imports importlib (modules by string)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "importlib":
            wrong.append(f"{dotted}:{node.lineno} imports from importlib (modules by string)")
        if isinstance(node, ast.Import):
            wrong.extend(
                f"{dotted}:{node.lineno} imports {a.name} whole: import names from it instead"
                for a in node.names
                if a.name == "reconciler" or a.name.startswith("reconciler.")
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler."):
            parts = node.module.split(".")  # type: ignore[union-attr]
            private = any(p.startswith("_") and not p.startswith("__") for p in parts[2:])
            if private and parts[:2] != own:
                wrong.append(f"{dotted}:{node.lineno} imports the private {node.module}")
    return wrong


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_module_of_another_package_and_no_bare_import(path: Path) -> None:
    assert not _refused(path.read_text(), _dotted(path))


def test_the_refusals_catch_what_they_are_for() -> None:
    assert _refused("from reconciler.sources._shared import Key\n", "reconciler.spec.model")
    assert not _refused("from reconciler.sources._shared import Key\n", "reconciler.sources.csv")
    assert _refused("import reconciler\n", "reconciler.plan.builder")
    assert _refused("def f():\n    import reconciler.plan.builder\n", "reconciler.spec.checks")
    assert _refused("import importlib\nimportlib.import_module('x')\n", "reconciler.views")
    assert _refused("m = __import__('reconciler.plan')\n", "reconciler.views")


#: Layers that compute and do no I/O of their own: no HTTP, terminal, process or DuckDB work
#: (the client, the views, gitrepo and csvengine do that for them).
PURE = {"sources", "desired", "plan"}
IMPURE_LIBRARIES = {"subprocess", "httpx", "rich", "duckdb"}


def _impure(source: str, dotted: str) -> list[str]:
    if LAYER_OF.get(_part(dotted) or "") not in PURE:
        return []
    return [
        f"{dotted}:{line} imports {module} in a pure layer"
        for line, module in _imports(source, dotted)
        if module.split(".")[0] in IMPURE_LIBRARIES
    ]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_layers_do_no_io_of_their_own(path: Path) -> None:
    assert not _impure(path.read_text(), _dotted(path))


def test_the_purity_rule_catches_a_planted_import() -> None:
    assert _impure("def f():\n    import subprocess\n", "reconciler.plan.rows")
    assert _impure("from rich.text import Text\n", "reconciler.desired")
    assert not _impure("import subprocess\n", "reconciler.gitrepo")


SILENT = {"commands", "browse"}  # the commands' bodies: they return a Result


def _speaks(source: str, dotted: str) -> list[str]:
    """Where a command's body writes to a stream or prompts itself (print, input, sys.stdout,
    sys.stderr, typer): the command line does that with the Result it returns."""
    if _part(dotted) not in SILENT:
        return []
    found = []
    for node in ast.walk(_tree(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in {"print", "input"}:
                found.append(f"{dotted}:{node.lineno} calls {node.func.id}()")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
            and node.attr in {"stdout", "stderr", "stdin"}
        ):
            found.append(f"{dotted}:{node.lineno} uses sys.{node.attr}")
    found += [
        f"{dotted}:{line} imports {module}"
        for line, module in _imports(source, dotted)
        if module.split(".")[0] in {"typer", "rich"}
    ]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_commands_bodies_never_print_nor_prompt(path: Path) -> None:
    assert not _speaks(path.read_text(), _dotted(path))


def test_the_silence_rule_catches_a_planted_print() -> None:
    assert _speaks("def f():\n    print('x')\n", "reconciler.commands")
    assert _speaks("import sys\nsys.stdout.write('x')\n", "reconciler.browse")
    assert _speaks("def f():\n    return input('ok? ')\n", "reconciler.commands")
    assert _speaks("import typer\n", "reconciler.commands")
    assert not _speaks("print('x')\n", "reconciler.cli")


def test_the_lookup_spec_has_one_field_per_source_kind() -> None:
    """LookupSpec is written out (mypy sees ``spec.csv``); it must still name every kind, and only
    kinds, with the model that kind's module declares."""
    from reconciler.sources import KINDS
    from reconciler.spec.model import LookupSpec

    flags = {"visibility", "protect", "state", "notifyStatus", "checks"}
    blocks = {
        name: f.annotation for name, f in LookupSpec.model_fields.items() if name not in flags
    }
    assert blocks == {name: kind.model | None for name, kind in KINDS.items()}
