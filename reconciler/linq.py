"""What the tool reads of a LINQ query: the names of the columns it produces, and the lookups it uses.

Used by validation (a key must be one of the query's columns; a lookup it uses must exist and have
the column it reads), by the plan (the ``fields`` a query lookup should report; the order lookups
are created and deleted in; refusing to break a query) and by ``reconciler refs``. Only what can be
read for certain is returned; anything else is None.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_CLAUSE_RE = re.compile(r"\b(select|where|group\s+by|every|from|order\s+by|limit)\b", re.I)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def query_columns(query: str) -> list[str] | None:
    """The column names a LINQ query's ``select``/``group by`` lists produce, when they can be read.

    Returns None when any expression has no readable name (the caller then skips the check).
    """
    names = _query_columns(query)
    return None if names is None else list(names)


@functools.lru_cache(maxsize=4096)
def _query_columns(query: str) -> tuple[str, ...] | None:
    # Remembered: validation, the references and the desired lookup each read the same query.
    parts = _CLAUSE_RE.split(query)
    names: list[str] = []
    saw_select = False
    for i in range(1, len(parts) - 1, 2):
        clause = re.sub(r"\s+", " ", parts[i].lower())
        body = parts[i + 1]
        if clause not in ("select", "group by"):
            continue
        saw_select = saw_select or clause == "select"
        for expr in _split_top_level(body):
            expr = expr.strip()
            if not expr:
                continue
            alias = re.search(r"\bas\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", expr, re.I)
            if alias:
                names.append(alias.group(1))
            elif _IDENT_RE.match(expr):
                names.append(expr)
            elif expr == "*":
                return None
            else:
                return None
    return tuple(names) if saw_select else None


def _split_top_level(text: str) -> list[str]:
    depth, start, out = 0, 0, []
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


# ---------------------------------------------------------------------------------------------
# Which lookups a query uses.
#
# LINQ reads a lookup through its lookup operations. Each form is one entry of ``FORMS``: a call
# whose arguments name the table and the column (``lu("table", "column", key)``), or a back-quoted
# name that holds both (`` `lu/table/column`(key) ``). A new form is one more line there.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallForm:
    """``function("table", "column", ...)``: which arguments name the table and the column."""

    function: str
    table_arg: int
    column_arg: int | None


@dataclass(frozen=True)
class QuotedForm:
    """A back-quoted name whose parts are the table and the column (``pattern``'s groups)."""

    pattern: re.Pattern[str]


FORMS: tuple[CallForm | QuotedForm, ...] = (
    CallForm("lu", table_arg=0, column_arg=1),
    QuotedForm(re.compile(r"lu/(?P<table>[^/`]*)/(?P<column>[^/`]*)")),
)


#: Where any form of ``FORMS`` could start (a call's name and its parenthesis, a back-quote): text
#: without one holds no use, and is not tokenized (most queries).
_MAYBE_USE = re.compile(
    "|".join(
        rf"\b{re.escape(form.function)}\s*\(" if isinstance(form, CallForm) else "`"
        for form in FORMS
    )
)


@dataclass(frozen=True)
class LookupRef:
    """One use of a lookup in a query: its table and column (None when the query computes them:
    a *dynamic* reference, reported as unresolved, never guessed) and where it starts."""

    table: str | None
    column: str | None
    line: int  # 1-based, within the text scanned
    column_no: int  # 1-based character position in that line
    snippet: str  # the form as written (shortened), for messages

    @property
    def dynamic(self) -> bool:
        """True when the table name is not a literal."""
        return self.table is None


_TOKEN_RE = re.compile(
    r"""(?P<space>\s+)
    |(?P<comment>//[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<string>"(?:[^"\\]|\\.)*(?:"|\Z)|'(?:[^'\\]|\\.)*(?:'|\Z))
    |(?P<quoted>`[^`]*(?:`|\Z))
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    |(?P<other>.)""",
    re.S | re.X,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int


def _tokens(text: str) -> list[_Token]:
    """LINQ as tokens; comments and whitespace dropped, so a commented-out use is no use."""
    out = []
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup or "other"
        if kind not in ("space", "comment"):
            out.append(_Token(kind, match.group(), match.start()))
    return out


def _literal(tokens: list[_Token]) -> str | None:
    """The value of an argument that is exactly one string literal, else None (computed)."""
    if len(tokens) != 1 or tokens[0].kind != "string":
        return None
    body = tokens[0].text[1:-1] if len(tokens[0].text) > 1 else ""
    return re.sub(r"\\(.)", r"\1", body, flags=re.S)


def _arguments(tokens: list[_Token], open_at: int) -> tuple[list[list[_Token]], int | None]:
    """The arguments of the call whose ``(`` is ``tokens[open_at]``, split at top-level commas,
    and where its ``)`` is in the text (None when the text ends first)."""
    args: list[list[_Token]] = [[]]
    depth = 0
    for token in tokens[open_at + 1 :]:
        if token.text in "([{" and token.kind == "other":
            depth += 1
        elif token.text in ")]}" and token.kind == "other":
            if depth == 0:
                return args, token.start
            depth -= 1
        elif token.text == "," and token.kind == "other" and depth == 0:
            args.append([])
            continue
        args[-1].append(token)
    return args, None


def _place(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def lookup_refs(text: str) -> list[LookupRef]:
    """Every use of a lookup in ``text`` (a query, or any text holding queries), in order."""
    if not _MAYBE_USE.search(text):
        return []
    tokens = _tokens(text)
    found: list[LookupRef] = []
    for i, token in enumerate(tokens):
        for form in FORMS:
            ref = _match(form, text, tokens, i, token)
            if ref is not None:
                found.append(ref)
                break
    return found


def _match(
    form: CallForm | QuotedForm, text: str, tokens: list[_Token], i: int, token: _Token
) -> LookupRef | None:
    line, col = _place(text, token.start)
    if isinstance(form, QuotedForm):
        if token.kind != "quoted":
            return None
        matched = form.pattern.fullmatch(token.text.strip("`"))
        if matched is None:
            return None
        return LookupRef(
            matched.group("table") or None,
            matched.group("column") or None,
            line,
            col,
            token.text[:80],
        )
    if (
        token.kind != "ident"
        or token.text != form.function
        or i + 1 >= len(tokens)
        or tokens[i + 1].text != "("
    ):
        return None
    args, close = _arguments(tokens, i + 1)
    table = _literal(args[form.table_arg]) if len(args) > form.table_arg else None
    column = (
        _literal(args[form.column_arg])
        if form.column_arg is not None and len(args) > form.column_arg
        else None
    )
    end = len(text) if close is None else close + 1
    snippet = text[token.start : min(end, token.start + 80)]
    return LookupRef(table, column, line, col, " ".join(snippet.split()))
