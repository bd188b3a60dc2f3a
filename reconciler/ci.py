"""Where CI shows a report: one pull-request (or merge-request) comment kept up to date, and one
issue opened, updated and closed as drift comes and goes.

GitHub Actions and GitLab CI are told apart by their own variables, and the API each is reached at
is the one the runner names (``GITHUB_API_URL``, ``CI_API_V4_URL``): a spec cannot choose it. The
token comes from the environment only (``GH_TOKEN``/``GITHUB_TOKEN``; ``GITLAB_TOKEN``), is sent
only to that API, and appears in no message. A report longer than a comment may be is cut, with a
line saying where the whole one is.

The API's answers are read as a less tidy service may give them: an answer that is not JSON (a
proxy's page), a list with other things than objects in it, an object without the field looked for,
or no connection at all is an error that says so, never an internal one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from reconciler.errors import SettingsError, printable
from reconciler.settings import endpoint_problem

#: GitHub refuses a comment or issue body over 65,536 characters; GitLab's notes are larger, but
#: a report that long is read in the job log anyway.
MAX_BODY = 60_000
MARKER = "<!-- reconciler:{key} -->"


@dataclass(frozen=True)
class Forge:
    """One CI service's API: where it is, the project, and how a request is authenticated."""

    kind: str  # "github" or "gitlab"
    api: str
    project: str
    headers: Mapping[str, str]

    def client(self) -> httpx.Client:
        """An HTTP client bound to this API (redirects not followed: the token stays here)."""
        return httpx.Client(
            base_url=self.api.rstrip("/") + "/",
            headers={**self.headers, "Accept": "application/json"},
            timeout=30.0,
            follow_redirects=False,
        )


def detect(env: Mapping[str, str] | None = None) -> Forge:
    """The CI service this runs in, from the runner's own variables."""
    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") == "true":
        token = env.get("GH_TOKEN") or env.get("GITHUB_TOKEN") or ""
        forge = Forge(
            "github",
            env.get("GITHUB_API_URL") or "https://api.github.com",
            env.get("GITHUB_REPOSITORY", ""),
            {"Authorization": f"Bearer {token}", "X-GitHub-Api-Version": "2022-11-28"},
        )
        need = {"GH_TOKEN or GITHUB_TOKEN": token, "GITHUB_REPOSITORY": forge.project}
    elif env.get("GITLAB_CI") == "true":
        token = env.get("GITLAB_TOKEN", "")
        forge = Forge(
            "gitlab",
            env.get("CI_API_V4_URL", ""),
            env.get("CI_PROJECT_ID", ""),
            {"PRIVATE-TOKEN": token},
        )
        need = {"GITLAB_TOKEN": token, "CI_API_V4_URL": forge.api, "CI_PROJECT_ID": forge.project}
    else:
        raise SettingsError(
            "reconciler ci runs in GitHub Actions or GitLab CI (GITHUB_ACTIONS or GITLAB_CI is "
            "not true here)",
            hint="run it as a step of a workflow or pipeline",
        )
    missing = [name for name, value in need.items() if not value]
    if missing:
        raise SettingsError(
            f"{forge.kind}: {', '.join(missing)} is not set",
            hint="GitHub: GH_TOKEN: ${{ github.token }}; GitLab: a project access token with "
            "the api scope in the masked variable GITLAB_TOKEN",
        )
    problem = endpoint_problem(forge.api)
    if problem is not None:
        raise SettingsError(f"{forge.kind} API: {problem[0]}", hint=problem[1])
    return forge


def body_of(report: Path, key: str, whole: str) -> str:
    """The comment or issue body: the marker that finds it again, then the report (cut to fit)."""
    text = printable(report.read_text(encoding="utf-8", errors="replace"))
    if len(text) > MAX_BODY:
        text = text[:MAX_BODY].rsplit("\n", 1)[0] + f"\n\n_(cut: the whole report is {whole})_\n"
    return MARKER.format(key=key) + "\n" + text


@contextlib.contextmanager
def _session(forge: Forge) -> Iterator[httpx.Client]:
    """The forge's client; a request that got no answer is an error naming the API."""
    try:
        with forge.client() as http:
            yield http
    except httpx.HTTPError as exc:
        raise SettingsError(
            f"no answer from the {forge.kind} API at {printable(forge.api, one_line=True)}: "
            f"{type(exc).__name__}",
            hint="check GITHUB_API_URL (or CI_API_V4_URL) and the runner's network",
        ) from None


def _check(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise SettingsError(
            f"{what}: {response.status_code} {response.reason_phrase}",
            hint="check the token's permissions (GitHub: pull-requests: write, issues: write; "
            "GitLab: the api scope)",
        )
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:  # a proxy's or a login page's HTML, say
        raise SettingsError(
            f"{what}: the answer ({response.status_code}) is not JSON",
            hint="GITHUB_API_URL (or CI_API_V4_URL) must be the API's address",
        ) from None


def _objects(items: list[Any]) -> list[dict[str, Any]]:
    """The items of a listing that are objects (anything else in it is not a comment or issue)."""
    return [item for item in items if isinstance(item, dict)]


def _field(found: Any, *names: str) -> Any:
    """The first of ``names`` that ``found`` has (None when it is not an object)."""
    if not isinstance(found, dict):
        return None
    return next((found[n] for n in names if found.get(n) is not None), None)


def _shown(value: Any, template: str = " ({})") -> str:
    """``value`` for a message (`` (12)``), or nothing when the answer did not say it."""
    return "" if value is None else template.format(printable(str(value), one_line=True))


def _id_of(found: dict[str, Any], what: str, *names: str) -> int:
    """An item's id, which goes into the next URL's path: a number, or the answer is refused
    (an id with a ``/``, ``?`` or a control character would aim the request elsewhere)."""
    value = _field(found, *names)
    if value is None:
        raise SettingsError(f"{what}: the API listed it without its {names[0]}")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SettingsError(
            f"{what}: the API listed it with {names[0]}{_shown(value)}, which is not a number",
            hint="is the forge's API URL (GITHUB_API_URL / CI_API_V4_URL) the forge's own?",
        )
    return value


def _pages(http: httpx.Client, path: str, params: dict[str, Any], what: str) -> list[Any]:
    """Every item of a paged list (both services page with ``page``/``per_page``)."""
    found: list[Any] = []
    for page in range(1, 51):  # 5,000 items at most: a bound, not a loop
        batch = _check(http.get(path, params={**params, "per_page": 100, "page": page}), what)
        if not isinstance(batch, list) or not batch:
            break
        found.extend(batch)
        if len(batch) < 100:
            break
    return found


def upsert_comment(forge: Forge, report: Path, key: str, env: Mapping[str, str]) -> str:
    """Create, or update in place, this run's one comment on the pull or merge request."""
    marker = MARKER.format(key=key)
    body = body_of(report, key, "in the job summary and log")
    with _session(forge) as http:
        if forge.kind == "github":
            number = _pull_request_number(env)
            base = f"repos/{forge.project}/issues"
            comments = _pages(http, f"{base}/{number}/comments", {}, "listing the comments")
            mine = [c for c in _objects(comments) if str(c.get("body", "")).startswith(marker)]
            if mine:
                comment = _id_of(mine[0], "updating the comment", "id")
                path = f"{base}/comments/{comment}"
                _check(http.patch(path, json={"body": body}), "updating the comment")
                return f"updated comment {comment} on pull request {number}"
            made = _check(http.post(f"{base}/{number}/comments", json={"body": body}), "commenting")
            return f"commented on pull request {number}{_shown(_field(made, 'id'))}"
        iid = env.get("CI_MERGE_REQUEST_IID", "")
        if not iid:
            raise SettingsError(
                "CI_MERGE_REQUEST_IID is not set: this is no merge-request pipeline"
            )
        base = f"projects/{quote(forge.project, safe='')}/merge_requests/{iid}/notes"
        notes = _pages(http, base, {}, "listing the notes")
        mine = [n for n in _objects(notes) if str(n.get("body", "")).startswith(marker)]
        if mine:
            note = _id_of(mine[0], "updating the note", "id")
            _check(http.put(f"{base}/{note}", json={"body": body}), "updating the note")
            return f"updated note {note} on merge request {iid}"
        made = _check(http.post(base, json={"body": body}), "commenting")
        return f"commented on merge request {iid}{_shown(_field(made, 'id'))}"


def _pull_request_number(env: Mapping[str, str]) -> int:
    try:
        event = json.loads(Path(env.get("GITHUB_EVENT_PATH", "")).read_text())
        return int(event["pull_request"]["number"])
    except (OSError, ValueError, KeyError, TypeError):
        raise SettingsError(
            "no pull request in this event (GITHUB_EVENT_PATH)",
            hint="comment on pull_request events only",
        ) from None


def sync_issue(forge: Forge, title: str, report: Path | None) -> str:
    """Open the issue titled ``title`` with the report, or update the one open; with no report
    (in sync), close it if one is open."""
    key = "issue:" + title
    marker = MARKER.format(key=key)
    with _session(forge) as http:
        if forge.kind == "github":
            base = f"repos/{forge.project}/issues"
            found = _pages(http, base, {"state": "open"}, "listing the issues")
            close = {"state": "closed"}
            edit = http.patch
        else:
            base = f"projects/{quote(forge.project, safe='')}/issues"
            found = _pages(http, base, {"state": "opened", "search": title}, "listing the issues")
            close = {"state_event": "close"}
            edit = http.put
        ours = [
            i
            for i in _objects(found)
            if i.get("title") == title
            and str(i.get("body") or i.get("description") or "").startswith(marker)
            and "pull_request" not in i
        ]
        number = _id_of(ours[0], "the open issue", "number", "iid") if ours else None
        if report is None:
            if number is None:
                return f"no open issue {title!r}: nothing to close"
            _check(edit(f"{base}/{number}", json=close), "closing the issue")
            return f"closed issue {number} ({title!r}): in sync again"
        body = body_of(report, key, "in the job log")
        field = "body" if forge.kind == "github" else "description"
        if number is not None:
            _check(edit(f"{base}/{number}", json={field: body}), "updating the issue")
            return f"updated issue {number} ({title!r})"
        made = _check(http.post(base, json={"title": title, field: body}), "opening the issue")
        return f"opened issue{_shown(_field(made, 'number', 'iid'), ' {}')} ({title!r})"


__all__ = ["MARKER", "Forge", "body_of", "detect", "sync_issue", "upsert_comment"]
