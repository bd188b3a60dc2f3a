"""YAML text to node trees, safely: libyaml (with each plain scalar's tag remembered) or PyYAML's
own parser where libyaml refuses, strict UTF-8, and the alias-bomb and depth limits found on the
node graph before anything is expanded. The loader turns the nodes into data with positions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from reconciler.errors import Diagnostic

MAX_NODES = 200_000  # values a document may expand to
MAX_DEPTH = 64  # levels a document may nest


# libyaml composes ten times faster than the pure-Python parser (a 10,000-lookup repository is
# mostly YAML); both build the same nodes with the same marks. PyYAML without libyaml falls back.
_BASE_LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_BASE_LOADER):  # type: ignore[misc]
    """libyaml, with the tag of each plain scalar remembered.

    Resolving a scalar's implicit tag (null, bool, int, float, timestamp, str) is PyYAML's
    Python code matching regular expressions, once per scalar: a third of composing a big
    repository, where the same keys and values come back thousands of times. The safe loader has
    no path resolvers, so a tag depends only on the text and how it was quoted.
    """

    _tags: ClassVar[dict[tuple[str, Any], str]] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= 256 and len(self._tags) < 100_000:  # bounded
                self._tags[key] = tag
        return tag


FAST_LOADER: type[Any] = _FastLoader


class TooLarge(Exception):
    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


TOO_MANY = "document expands to too many values (YAML alias bomb?)"


TOO_DEEP = f"document is nested more than {MAX_DEPTH} levels deep"


def _values_of(node: yaml.Node) -> list[yaml.Node]:
    """The nodes the loader's conversion descends into from ``node``, in its order (keys aside)."""
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [value for _, value in node.value]
    return []


def too_large(root: yaml.Node) -> TooLarge | None:
    """What the loader's conversion would raise on ``root``, found without expanding aliases.

    An alias bomb is a small graph of nodes that expands to billions of values; converting it up
    to ``MAX_NODES`` costs a second per document. Sizes and heights are summed once per distinct
    node instead (a cycle, ``&a [*a]``, counts as endless), and only when a limit is crossed is the
    walk repeated, skipping every subtree that fits, to name the node the converter would stop at.
    """
    endless = float("inf")
    measured: dict[int, tuple[float, float]] = {}  # id -> (values, levels)
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if not leaving:
            if key in measured or key in entered:
                continue
            entered.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(_values_of(node)))
            continue
        size, height = 1.0, 1.0
        for child in _values_of(node):
            child_size, child_height = measured.get(id(child), (endless, endless))  # a cycle
            size += child_size
            height = max(height, child_height + 1)
        measured[key] = (size, height)
        entered.discard(key)
    if measured[id(root)][0] <= MAX_NODES and measured[id(root)][1] - 1 <= MAX_DEPTH:
        return None

    count = 0

    def locate(node: yaml.Node, depth: int) -> TooLarge | None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            return TooLarge(node, TOO_MANY)
        if depth > MAX_DEPTH:
            return TooLarge(node, TOO_DEEP)
        for child in _values_of(node):
            size, height = measured[id(child)]
            if count + size <= MAX_NODES and depth + height <= MAX_DEPTH:
                count += int(size)
                continue
            return locate(child, depth + 1)
        return None  # pragma: no cover - a crossed limit is always found below

    return locate(root, 0)


def decode(path: Path, raw: bytes) -> tuple[str | None, Diagnostic | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, Diagnostic(
            str(path),
            line,
            column,
            "",
            f"byte 0x{raw[exc.start]:02x} is not valid UTF-8",
            hint="save the file as UTF-8",
        )


def compose_each(text: str) -> Iterator[yaml.Node | None]:
    """Every document's node tree as libyaml composes it, one at a time; a YAMLError where
    libyaml refuses the text (``compose_all`` words that error)."""
    return iter(yaml.compose_all(text, Loader=FAST_LOADER))


def compose_all(text: str) -> list[yaml.Node | None]:
    """Every document's node tree: libyaml's when it parses, else the pure-Python parser's.

    A document libyaml refuses is composed again by the Python parser, whose error marks and
    wording (and whose RecursionError on deep nesting) the messages below are written for; it
    raises the error the user sees. libyaml's limit of 1000 nesting levels lands here too.
    """
    try:
        return list(yaml.compose_all(text, Loader=FAST_LOADER))
    except yaml.YAMLError:
        return compose_python(text)


def compose_python(text: str) -> list[yaml.Node | None]:
    """Every document's node tree as the pure-Python parser composes it (``compose_all``'s
    second reader: for text libyaml has refused already)."""
    return list(yaml.compose_all(text, Loader=yaml.SafeLoader))


__all__ = [
    "FAST_LOADER",
    "MAX_DEPTH",
    "MAX_NODES",
    "TOO_DEEP",
    "TOO_MANY",
    "TooLarge",
    "compose_all",
    "compose_each",
    "compose_python",
    "decode",
    "too_large",
]
