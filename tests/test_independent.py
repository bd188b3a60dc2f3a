"""Against a Lookups API that is not our emulator: the documented contract, other liberties.

``OddService`` follows ``shared/lookup-api.md`` where it is explicit and differs from our emulator
wherever the document is silent or loose, the way an independent implementation may: it answers
``deployConfig: null`` (as every documented example does), gives ``visibility`` as a plain string,
``nextPageToken`` as a string, status codes in upper case, 201 answers without a job id, ``fields``
types in upper case with no key flags, and errors in the ``{"error": {"message"}}`` shape.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.cli_options import emit
from reconciler.client import LookupReader
from reconciler.commands import ApplyRequest, run_apply
from reconciler.engine import make_plan
from reconciler.plan.guards import Guards
from reconciler.plan.model import Action
from reconciler.settings import Settings
from tests.planning import KINDS, SECRETS, lookup_doc

pytestmark = pytest.mark.anyio


class OddService:
    """A minimal, differently shaped Lookups API as an httpx handler (jobs finish at once)."""

    def __init__(self, page_size_cap: int = 2) -> None:
        self.lookups: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], list[tuple[str, list[dict[str, str]]]]] = {}
        self.page_size_cap = page_size_cap  # ignores max_length above this: paging must still work
        self.posts: dict[str, int] = {}

    def _error(self, status: int, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": status, "message": message}})

    def _job(self, domain: str, name: str, codes: list[str]) -> str:
        job_id = str(uuid.uuid4())
        statuses = [
            {"code": c.upper(), "msg": c, "eventdata": "2026-01-01 00:00:00"} for c in codes
        ]
        self.jobs.setdefault((domain, name), []).append((job_id, statuses))
        return job_id

    def __call__(self, request: httpx.Request) -> httpx.Response:
        match = re.match(
            r"^/api/lookup/([^/]+)(?:/([^/]+)(?:/(job|deploy-[a-z-]+)(?:/([^/]+))?)?)?$",
            request.url.path,
        )
        if not match:
            return self._error(404, "Not Found")
        domain, name, tail, job = match.groups()
        key = (domain, name or "")
        if name is None:
            names = sorted(n for d, n in self.lookups if d == domain)
            start = int(request.url.params.get("pageToken", "0"))
            size = min(int(request.url.params.get("max_length", "100")), self.page_size_cap)
            page = names[start : start + size]
            more = start + size < len(names)
            return httpx.Response(
                200,
                json={
                    "lookups": [self._meta(domain, n) for n in page],
                    "nextPageToken": str(start + size) if more else "-1",
                },
            )
        if tail is None and request.method == "GET":
            if key not in self.lookups:
                return self._error(404, "Lookup not found")
            return httpx.Response(200, json={"lookupMetaInfo": self._meta(domain, name)})
        if tail is None and request.method == "DELETE":
            if self.lookups.pop(key, None) is None:
                return self._error(404, "Lookup not found")
            return httpx.Response(
                200,
                json={
                    "msg": "Lookup sent to deletion",
                    "id": self._job(domain, name, ["del.start", "del.ok"]),
                },
            )
        if tail == "job":
            jobs = self.jobs.get(key, [])
            if job is None:
                return httpx.Response(200, json={"jobs": [j for j, _ in jobs][-10:]})
            found = [s for j, s in jobs if j == job]
            return (
                httpx.Response(200, json={"status": found[0]})
                if found
                else self._error(404, "Job not found")
            )
        body = (
            json.loads(request.content)
            if request.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if request.method == "POST":
            self.posts[f"{domain}/{name}"] = self.posts.get(f"{domain}/{name}", 0) + 1
            if key in self.lookups:
                return self._error(
                    409, f"Lookup with domain {domain} and name {name} already exists"
                )
        elif key not in self.lookups:
            return self._error(404, "Lookup not found")
        self.lookups[key] = {"endpoint": tail, "body": body}
        self._job(domain, name, ["create.start", "create.ok", "deploy.start", "deploy.ok"])
        return httpx.Response(201, json={"msg": "Lookup sent to creation"})  # no job id

    def _meta(self, domain: str, name: str) -> dict[str, Any]:
        body = self.lookups[(domain, name)]["body"]
        columns = body.get("columns") or []
        return {
            "name": name,
            "domain": domain,
            "deployConfig": None,
            "lastStatus": None,
            "shared": body.get("visibility") == "all-subdomains",
            "fields": [
                {"column": c["name"], "type": c.get("type", "STRING"), "key": False}
                for c in columns
            ],
            "numEntries": None,
            "extraVendorField": {"anything": True},
        }


def settings(tmp_path: Path) -> Settings:
    return Settings("http://odd.test/api", state_path=tmp_path / ".reconciler" / "state.json")


async def plan_for(service: OddService, tmp_path: Path, specs: Path) -> Any:
    async with LookupReader(settings(tmp_path), transport=httpx.MockTransport(service)) as reader:
        return (await make_plan(reader, [str(specs)], settings(tmp_path).state_path)).plan


async def test_full_loop_against_an_odd_service(tmp_path: Path) -> None:
    service = OddService()
    specs = tmp_path / "specs"
    (specs / "data").mkdir(parents=True)
    (specs / "data" / "geo.csv").write_text("ip,country\n10.0.0.1,ES\n")
    names = {kind: kind.replace("_", "-") for kind in KINDS}
    (specs / "all.yaml").write_text(
        "---\n".join(lookup_doc(names[k], KINDS[k]) for k in sorted(KINDS))
    )
    transport = httpx.MockTransport(service)
    request = ApplyRequest(auto_approve=True, transport=transport, env=dict(SECRETS))
    code = emit(await run_apply(settings(tmp_path), [str(specs)], request))
    assert code == 0
    plan = await plan_for(service, tmp_path, specs)
    assert not plan.can_apply(), [(c.address, c.reason) for c in plan.changes]
    assert plan.warnings == ()  # the state file vouches for what the service hides
    # An edit is still seen, through the state file.
    (specs / "all.yaml").write_text(
        "---\n".join(
            lookup_doc(names[k], KINDS[k].replace("from a select", "from b select"))
            for k in sorted(KINDS)
        )
    )
    plan = await plan_for(service, tmp_path, specs)
    edited = {c.address for c in plan.changes if c.action is Action.UPDATE}
    assert edited == {f"acme/{names[k]}" for k in KINDS if "from a select" in KINDS[k]}
    # Deleting everything converges too.
    (specs / "all.yaml").write_text(
        "---\n".join(lookup_doc(names[k], "", extra="state: absent") for k in sorted(KINDS))
    )
    code = emit(
        await run_apply(
            settings(tmp_path),
            [str(specs)],
            ApplyRequest(
                auto_approve=True,
                transport=transport,
                env=dict(SECRETS),
                guards=Guards(allow_mass_destroy=True),  # every lookup at once, on purpose
            ),
        )
    )
    assert code == 0 and service.lookups == {}
    assert max(service.posts.values()) == 1


async def test_conflict_with_unreadable_config_is_updated_not_assumed_equal(tmp_path: Path) -> None:
    service = OddService()
    service.lookups[("acme", "q")] = {
        "endpoint": "deploy-static-query",
        "body": {"query": "from elsewhere select x"},
    }
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "q.yaml").write_text(lookup_doc("q", KINDS["static"]))
    # The plan read an empty domain (e.g. made before someone created q by hand).
    from reconciler.apply.executor import Executor
    from reconciler.client import LookupClient
    from reconciler.engine import load_workspace
    from reconciler.plan.builder import build_plan
    from reconciler.state import State

    workspace = load_workspace([str(specs)])
    plan = build_plan(workspace.desired, {"acme": []}, {}, {})
    async with LookupClient(settings(tmp_path), transport=httpx.MockTransport(service)) as client:
        executor = Executor(
            client, workspace.by_address(), State(settings(tmp_path).state_path), env={}
        )
        [outcome] = await executor.run(plan)
    assert outcome.ok and outcome.effective is Action.UPDATE
    assert service.lookups[("acme", "q")]["body"]["query"] == "from a select user, role"
    assert outcome.job_id  # found in the job list although the 201 carried none


async def test_errors_in_the_error_message_shape(tmp_path: Path) -> None:
    service = OddService()
    async with LookupReader(settings(tmp_path), transport=httpx.MockTransport(service)) as reader:
        assert await reader.find_lookup("acme", "missing") is None
        from reconciler.errors import NotFoundError

        with pytest.raises(NotFoundError, match="Lookup not found"):
            await reader.get_lookup("acme", "missing")
