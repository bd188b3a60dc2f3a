"""``reconciler ci``'s talk with GitHub's and GitLab's APIs, as a less tidy service answers it.

The pipeline tests (tests/test_recipes.py) drive it against a tidy stand-in; here the answers are
anything: pages that are not JSON, lists of other things than objects, objects without the field
looked for, no connection. Each is a result or an error that says what happened, never an internal
error, and the token is in none of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import ci
from reconciler.errors import ReconcilerError, SettingsError

TOKEN = "forge-token-canary-5e1c"
Handler = Callable[[httpx.Request], httpx.Response]


@dataclass(frozen=True)
class _Answered(ci.Forge):
    """A forge whose every request is answered by ``handler`` (in-process)."""

    handler: Handler = field(default=lambda request: httpx.Response(200, json=[]))

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api.rstrip("/") + "/",
            headers=dict(self.headers),
            transport=httpx.MockTransport(self.handler),
            follow_redirects=False,
        )


def _forge(kind: str, handler: Handler) -> _Answered:
    return _Answered(
        kind, "http://forge.test/api", "acme/specs", {"Authorization": f"Bearer {TOKEN}"}, handler
    )


def _run(forge: _Answered, operation: str, tmp_path: Path) -> str:
    report = tmp_path / "report.md"
    report.write_text("### reconciler plan\nPlan: 1 to add, 0 to change, 0 to destroy.\n")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7}}))
    env = {"GITHUB_EVENT_PATH": str(event), "CI_MERGE_REQUEST_IID": "3"}
    if operation == "comment":
        return ci.upsert_comment(forge, report, "plan", env)
    return ci.sync_issue(forge, "Lookup drift", report if operation == "open" else None)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 100),
    st.text(max_size=6),
    st.sampled_from(
        ["<!-- reconciler:plan -->\nold", "<!-- reconciler:issue:Lookup drift -->", "Lookup drift"]
    ),
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["id", "body", "title", "number", "iid", "description", "pull_request"]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=12,
)
_BODIES = st.one_of(
    _JSON.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"", b"<html>a proxy's page</html>", b"\xff\xfe"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.lists(st.tuples(st.sampled_from([200, 201, 204, 404, 502]), _BODIES), max_size=5),
    kind=st.sampled_from(["github", "gitlab"]),
    operation=st.sampled_from(["comment", "open", "close"]),
    unreachable=st.booleans(),
)
def test_any_answer_is_a_result_or_an_error_that_says_so(
    tmp_path: Path,
    answers: list[tuple[int, bytes]],
    kind: str,
    operation: str,
    unreachable: bool,
) -> None:
    left = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        if not left and unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        status, body = left.pop(0) if left else (200, b"[]")
        return httpx.Response(status, content=body)

    try:
        said = _run(_forge(kind, handler), operation, tmp_path)
    except ReconcilerError as exc:
        said = f"{exc.message} {exc.hint}"
    assert TOKEN not in said


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            httpx.Response(200, content=b"<html>sign in</html>"),
            "listing the comments: the answer (200) is not JSON",
        ),
        (
            httpx.Response(200, json=[{"body": "<!-- reconciler:plan -->\nold"}]),
            "the API listed it without its id",
        ),
        # The id goes into the next request's path: only a number may (found by the property
        # test above: a control character in it was an internal error, a '/' would aim the
        # PATCH at another resource of the forge, with the token)
        (
            httpx.Response(200, json=[{"id": "\x1f", "body": "<!-- reconciler:plan -->\nold"}]),
            "the API listed it with id (\\x1f), which is not a number",
        ),
        (
            httpx.Response(200, json=[{"id": "../../user", "body": "<!-- reconciler:plan -->\n"}]),
            "the API listed it with id (../../user), which is not a number",
        ),
        (
            httpx.Response(200, json=[{"id": True, "body": "<!-- reconciler:plan -->\nold"}]),
            "which is not a number",
        ),
    ],
)
def test_an_answer_that_is_not_the_apis_is_named(
    tmp_path: Path, answer: httpx.Response, said: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        _run(_forge("github", lambda request: answer), "comment", tmp_path)
    assert said in raised.value.message


def test_an_id_given_as_digits_is_the_number(tmp_path: Path) -> None:
    seen: list[str] = []

    def forge(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return httpx.Response(200, json=[{"id": "42", "body": "<!-- reconciler:plan -->\n"}])
        return httpx.Response(200, json={"id": 42})

    _run(_forge("github", forge), "comment", tmp_path)
    assert seen[-1] == "PATCH /api/repos/acme/specs/issues/comments/42"


def test_no_connection_is_an_error_naming_the_api(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SettingsError) as raised:
        _run(_forge("gitlab", refuse), "open", tmp_path)
    assert (
        raised.value.message
        == "no answer from the gitlab API at http://forge.test/api: ConnectError"
    )


def test_a_comment_made_with_an_empty_answer_is_still_reported(tmp_path: Path) -> None:
    """A 201 without a body (a proxy that drops it): the comment was made; say so."""
    answers = iter([httpx.Response(200, json=[]), httpx.Response(201)])
    said = _run(_forge("github", lambda request: next(answers)), "comment", tmp_path)
    assert said == "commented on pull request 7"
