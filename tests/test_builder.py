"""``build_plan`` and ``compare`` as pure functions, table-driven: specs, what the service shows and
what the state recorded in; the plan out. No server, no HTTP."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.client import LookupMeta
from reconciler.desired import DesiredLookup, expand
from reconciler.engine import load_workspace
from reconciler.errors import PlanError
from reconciler.plan.builder import _differing, build_plan, compare
from reconciler.plan.guards import DomainPolicy, Guards
from reconciler.plan.model import Action
from reconciler.state import LookupState

STATIC = "staticQuery: {query: 'from a select user, role', key: {type: column, column: user}}"
PERIODIC = "periodicQuery: {query: 'from a select ip group by ip every 1h', refreshPeriod: 1h}"


def spec(name: str, body: str = STATIC, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: Lookup
        metadata: {{domain: acme, name: {name}}}
        spec:
          {body}
          {extra}
        """)


def desired(tmp_path: Path, *documents: str) -> list[DesiredLookup]:
    (tmp_path / "specs").mkdir(exist_ok=True)
    (tmp_path / "specs" / "l.yaml").write_text("---\n".join(documents) if documents else "")
    if not documents:
        return []
    return load_workspace([str(tmp_path / "specs")]).desired


def shown(want: DesiredLookup, **changes: Any) -> LookupMeta:
    """What a tidy service shows for ``want`` (its expected echo), with ``changes`` to recipe."""
    from reconciler.spec.loader import load_file

    [loaded] = [
        lookup
        for lookup in load_file(Path(want.source.rsplit(":", 1)[0])).lookups
        if lookup.address == want.address
    ]
    _, config, _ = expand(loaded.model.spec)
    config["recipe"].update(changes)
    return LookupMeta(name=want.name, deployConfig=config)


def other(name: str) -> LookupMeta:
    """A live lookup no spec names."""
    return LookupMeta(
        name=name,
        deployConfig={"visibility": {"type": "creator-only"}, "recipe": {"recipeType": "once"}},
    )


def recorded(want: DesiredLookup, **update: Any) -> LookupState:
    return LookupState(kind=want.kind, endpoint=want.endpoint, canonical=want.canonical).model_copy(
        update=update
    )


CASES: list[dict[str, Any]] = [
    {
        "name": "a spec with nothing live is a create",
        "specs": [spec("q")],
        "live": [],
        "expect": {"acme/q": Action.CREATE},
    },
    {
        "name": "live as the spec says is a no-op",
        "specs": [spec("q")],
        "live": ["q"],
        "expect": {"acme/q": Action.NOOP},
    },
    {
        "name": "live changed by hand is an update from live",
        "specs": [spec("q")],
        "live": [("q", {"columnFilter": ["user"]})],
        "expect": {"acme/q": Action.UPDATE},
        "source": "live",
    },
    {
        "name": "the spec changed since the record is an update from the spec",
        "specs": [spec("q")],
        "live": ["q"],
        "state": {"q": {"canonical": {"visibility": "all-subdomains"}}},
        "expect": {"acme/q": Action.UPDATE},
    },
    {
        "name": "state: absent with the lookup live is a delete",
        "specs": [spec("q", extra="state: absent")],
        "live": ["q"],
        "expect": {"acme/q": Action.DELETE},
    },
    {
        "name": "state: absent and already gone is nothing to do",
        "specs": [spec("q", extra="state: absent")],
        "live": [],
        "expect": {"acme/q": Action.NOOP},
    },
    {
        "name": "another kind of source is an update to the new endpoint",
        "specs": [spec("q", PERIODIC)],
        "live": [("q", {"recipeType": "once"})],
        "expect": {"acme/q": Action.UPDATE},
    },
    {
        "name": "a live lookup no spec names is unmanaged, not deleted",
        "specs": [spec("q")],
        "live": ["q", "manual"],
        "expect": {"acme/q": Action.NOOP},
        "unmanaged": ["acme/manual"],
    },
    {
        "name": "with prune it is deleted",
        "specs": [spec("q")],
        "live": ["q", "manual"],
        "prune": True,
        "state": {"q": {}},
        "expect": {"acme/q": Action.NOOP, "acme/manual": Action.DELETE},
    },
    {
        "name": "prune with a state that knows nothing of the domain is refused",
        "specs": [spec("q")],
        "live": ["q", "manual"],
        "prune": True,
        "refused": "state records no lookup of acme",
    },
    {
        "name": "a keep glob keeps it from prune",
        "specs": [spec("q")],
        "live": ["q", "manual"],
        "prune": True,
        "keep": ["man*"],
        "expect": {"acme/q": Action.NOOP},
        "unmanaged": ["acme/manual"],
        "kept": ["acme/manual"],
    },
    {
        "name": "a recorded protect refuses the delete",
        "specs": [spec("q", extra="state: absent")],
        "live": ["q"],
        "state": {"q": {"protect": True}},
        "refused": "protected lookup",
    },
    {
        "name": "pruning most of a domain is a mass destroy",
        "specs": [spec("keep")],
        "live": ["keep", "a", "b", "c"],
        "prune": True,
        "state": {"a": {}, "b": {}, "c": {}},
        "refused": "3 of the 4 managed lookup",
    },
    {
        "name": "--max-destroy below the deletes refuses them",
        "specs": [spec("q", extra="state: absent")],
        "live": ["q"],
        "guards": Guards(max_destroy=0),
        "refused": "--max-destroy 0",
    },
]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_build_plan(case: dict[str, Any], tmp_path: Path) -> None:
    wants = desired(tmp_path, *case["specs"])
    by_name = {w.name: w for w in wants}
    metas = []
    for item in case["live"]:
        name, changes = item if isinstance(item, tuple) else (item, {})
        metas.append(shown(by_name[name], **changes) if name in by_name else other(name))
    state = {}
    for name, update in case.get("state", {}).items():
        base = recorded(by_name[name]) if name in by_name else LookupState(canonical={"x": 1})
        state[f"acme/{name}"] = base.model_copy(update=update)
    policy = DomainPolicy("acme", case.get("prune", False), tuple(case.get("keep", ())))
    run = lambda: build_plan(  # noqa: E731
        wants, {"acme": metas}, state, {"acme": policy}, guards=case.get("guards")
    )
    if "refused" in case:
        with pytest.raises(PlanError, match=case["refused"]):
            run()
        return
    plan = run()
    assert {c.address: c.action for c in plan.changes} == case["expect"]
    assert list(plan.unmanaged) == case.get("unmanaged", [])
    assert list(plan.kept) == case.get("kept", [])
    if "source" in case:
        [change] = [c for c in plan.changes if c.action is Action.UPDATE]
        assert {d.source for d in change.diff} == {case["source"]}


def test_compare_reads_null_and_missing_apart(tmp_path: Path) -> None:
    """A field the service does not show is unverified; shown as null, it is a difference."""
    [want] = desired(tmp_path, spec("q"))
    meta = shown(want)
    assert compare(want, meta, None).diff == []
    assert meta.deployConfig is not None
    meta.deployConfig["recipe"]["key"] = {"type": "column", "column": "role"}
    assert [d.path for d in compare(want, meta, None).diff] == ["recipe.key.column"]


_PATHS = st.sampled_from(["a", "b", "c.d", "c.e", "f"])
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x"]), st.just([])
)


@given(
    a=st.dictionaries(_PATHS, _VALUES),
    b=st.dictionaries(_PATHS, _VALUES),
    skip=st.frozensets(_PATHS, max_size=2),
)
def test_the_paths_that_differ_are_those_of_either_side_sorted(
    a: dict[str, Any], b: dict[str, Any], skip: frozenset[str]
) -> None:
    # The definition, written the plain way: every path of either side, a missing one as null.
    expected = [p for p in sorted(set(a) | set(b)) if p not in skip and a.get(p) != b.get(p)]
    assert _differing(a, b, skip) == expected
