"""A stand-in for the GitHub and GitLab REST APIs the CI recipes talk to: pull-request comments,
merge-request notes and issues, kept in memory, behind a token. Served on loopback by the pipeline
tests, so `reconciler ci` makes real requests and the tests read what a reviewer would see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Forge:
    """What was posted: comments (and notes) by pull request, issues by number."""

    token: str
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    next_id: int = 100

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def open_issues(self) -> list[dict[str, Any]]:
        return [i for i in self.issues.values() if i["state"] in ("open", "opened")]


def app(forge: Forge) -> Starlette:
    """GitHub's routes under ``/github``, GitLab's under ``/gitlab/api/v4``."""

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        return forge.token in (given, request.headers.get("private-token"))

    async def comments(request: Request) -> Response:
        forge.requests.append(f"{request.method} {request.url.path}")
        if not authorised(request):
            return JSONResponse({"message": "Bad credentials"}, 401)
        number = int(request.path_params["number"])
        listed = forge.comments.setdefault(number, [])
        if request.method == "GET":
            page = int(request.query_params.get("page", "1"))
            size = int(request.query_params.get("per_page", "30"))
            return JSONResponse(listed[(page - 1) * size : page * size])
        body = (await request.json())["body"]
        made = {"id": forge.new_id(), "body": body}
        listed.append(made)
        return JSONResponse(made, 201)

    async def comment(request: Request) -> Response:
        forge.requests.append(f"{request.method} {request.url.path}")
        if not authorised(request):
            return JSONResponse({"message": "Bad credentials"}, 401)
        wanted = int(request.path_params["id"])
        for listed in forge.comments.values():
            for item in listed:
                if item["id"] == wanted:
                    item["body"] = (await request.json())["body"]
                    return JSONResponse(item)
        return JSONResponse({"message": "Not Found"}, 404)

    async def issues(request: Request) -> Response:
        forge.requests.append(f"{request.method} {request.url.path}")
        if not authorised(request):
            return JSONResponse({"message": "Bad credentials"}, 401)
        gitlab = "/gitlab/" in request.url.path
        if request.method == "GET":
            state = request.query_params.get("state")
            found = [i for i in forge.issues.values() if state in (None, "all", i["state"])]
            page = int(request.query_params.get("page", "1"))
            size = int(request.query_params.get("per_page", "30"))
            return JSONResponse(found[(page - 1) * size : page * size])
        data = await request.json()
        number = len(forge.issues) + 1
        made = {
            "iid" if gitlab else "number": number,
            "title": data["title"],
            "description" if gitlab else "body": data.get("description", data.get("body")),
            "state": "opened" if gitlab else "open",
        }
        forge.issues[number] = made
        return JSONResponse(made, 201)

    async def issue(request: Request) -> Response:
        forge.requests.append(f"{request.method} {request.url.path}")
        if not authorised(request):
            return JSONResponse({"message": "Bad credentials"}, 401)
        found = forge.issues.get(int(request.path_params["number"]))
        if found is None:
            return JSONResponse({"message": "Not Found"}, 404)
        data = await request.json()
        if data.get("state") == "closed" or data.get("state_event") == "close":
            found["state"] = "closed"
        for key in ("body", "description"):
            if key in data:
                found[key] = data[key]
        return JSONResponse(found)

    github = "/github/repos/{owner}/{repo}"
    gitlab = "/gitlab/api/v4/projects/{project}"
    return Starlette(
        routes=[
            Route(github + "/issues/{number:int}/comments", comments, methods=["GET", "POST"]),
            Route(github + "/issues/comments/{id:int}", comment, methods=["PATCH"]),
            Route(github + "/issues", issues, methods=["GET", "POST"]),
            Route(github + "/issues/{number:int}", issue, methods=["PATCH"]),
            Route(gitlab + "/merge_requests/{number:int}/notes", comments, methods=["GET", "POST"]),
            Route(gitlab + "/merge_requests/{mr:int}/notes/{id:int}", comment, methods=["PUT"]),
            Route(gitlab + "/issues", issues, methods=["GET", "POST"]),
            Route(gitlab + "/issues/{number:int}", issue, methods=["PUT"]),
        ]
    )
