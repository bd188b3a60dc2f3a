"""The emulator answers as shared/lookup-api.md documents: shapes, jobs, auth, paging, faults."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.coltypes import parse_cell
from reconciler.emulator import EmulatorConfig, Grant, sign
from reconciler.emulator.faults import DroppedConnection
from reconciler.emulator.store import Store
from reconciler.emulator.values import TYPES, cell_ok
from tests.support import FakeClock, asgi_client, csv_bytes, make_app, served, wait_for_server

pytestmark = pytest.mark.anyio

# Keys and JSON types of the documented examples (shared/lookup-api.md).
METADATA_SHAPE = {
    "name": str,
    "domain": str,
    "fileSize": int,
    "numEntries": int,
    "creationDate": str,
    "keyType": dict,
    "deployConfig": (dict, type(None)),
    "lastStatus": (dict, type(None)),
    "fields": list,
    "shared": bool,
    "owner": str,
}
ENVELOPE = {"type": str, "cid": str, "code": int, "context": type(None), "id": str, "msg": str}
STATUS_SHAPE = {"eventdata": str, "domain": str, "lookup": str, "msg": str, "code": str}
CSV_BODY = {
    "columns": [{"name": "ip", "type": "IP4"}, {"name": "country", "type": "STRING"}],
    "key": {"type": "column", "column": "ip"},
    "fileProvider": {
        "bucketName": "b",
        "keyName": "k.csv",
        "transferOwnership": True,
        "accessKey": "AKIAEXAMPLEKEY",
        "secretKey": "very-secret-canary",
    },
}


def assert_shape(body: dict[str, Any], shape: dict[str, Any]) -> None:
    for key, kind in shape.items():
        assert key in body, f"missing {key} in {body}"
        assert isinstance(body[key], kind), f"{key}: {body[key]!r} is not {kind}"


def multipart(config: dict[str, Any], csv: bytes) -> dict[str, Any]:
    return {
        "deploy-config": (None, json.dumps(config), "application/json"),
        "csv": ("data.csv", csv, "text/csv"),
    }


def fast() -> EmulatorConfig:
    return EmulatorConfig(create_latency=1.0, deploy_latency=2.0, delete_latency=1.0)


async def test_documented_flow_shapes() -> None:
    clock = FakeClock()
    app = make_app(fast(), clock=clock)
    async with asgi_client(app) as client:
        created = await client.post("/lookup/acme/geo/deploy-csv", json=CSV_BODY)
        assert created.status_code == 201
        body = created.json()
        assert_shape(body, ENVELOPE)
        assert body["type"] == "LookupCreationResponse" and body["code"] == 201
        config = body["lookupDeployConfig"]
        assert config["id"] == {"creator": "acme", "name": "geo"}
        assert config["visibility"] == {"type": "creator-only"}
        recipe = config["recipe"]
        assert recipe["key"] == {"type": "column", "column": "ip"}
        assert recipe["contribution"] == {"type": "add"}
        assert recipe["secondaryIndexes"] == {"type": "none"}
        assert recipe["source"]["fileProvider"]["secretKey"] == "****"

        listing = (await client.get("/lookup/acme")).json()
        assert_shape(listing, ENVELOPE)
        assert listing["type"] == "LookupMetaInfoListResponse"
        assert listing["nextPageToken"] == -1
        [meta] = listing["lookups"]
        assert_shape(meta, METADATA_SHAPE)
        assert meta["fields"] == [
            {"column": "ip", "type": "ip4", "key": True},
            {"column": "country", "type": "str", "key": False},
        ]

        one = (await client.get("/lookup/acme/geo")).json()
        assert one["type"] == "LookupMetaInfoResponse"
        assert_shape(one["lookupMetaInfo"], METADATA_SHAPE)

        jobs = (await client.get("/lookup/acme/geo/job")).json()
        assert jobs["code"] == 200 and jobs["msg"] == "Lookup job uuids"
        assert jobs["jobs"] == [body["id"]]

        statuses = (await client.get(f"/lookup/acme/geo/job/{body['id']}")).json()
        assert statuses["msg"] == "Lookup job's statuses"
        for status in statuses["status"]:
            assert_shape(status, STATUS_SHAPE)

        deleted = (await client.delete("/lookup/acme/geo")).json()
        assert_shape(deleted, ENVELOPE)
        assert (
            deleted["type"] == "LookupDeletionResponse"
            and deleted["msg"] == "Lookup sent to deletion"
        )


async def test_jobs_advance_with_time() -> None:
    clock = FakeClock()
    app = make_app(fast(), clock=clock)
    async with asgi_client(app) as client:
        job = (
            await client.post(
                "/lookup/acme/q/deploy-static-query", json={"query": "from a select b"}
            )
        ).json()["id"]

        async def codes() -> list[str]:
            response = await client.get(f"/lookup/acme/q/job/{job}")
            return [s["code"] for s in response.json()["status"]]

        assert await codes() == ["create.start"]
        clock.advance(1.0)
        assert await codes() == ["create.start", "create.ok", "deploy.start"]
        clock.advance(2.0)
        assert await codes() == ["create.start", "create.ok", "deploy.start", "deploy.ok"]
        meta = (await client.get("/lookup/acme/q")).json()["lookupMetaInfo"]
        assert meta["lastStatus"]["code"] == "deploy.ok"

        deletion = (await client.delete("/lookup/acme/q")).json()["id"]
        assert (await client.get("/lookup/acme/q")).status_code == 200  # still deleting
        clock.advance(1.0)
        assert (await client.get("/lookup/acme/q")).status_code == 404
        del_codes = (await client.get(f"/lookup/acme/q/job/{deletion}")).json()["status"]
        assert [s["code"] for s in del_codes] == ["del.start", "del.ok"]


async def test_a_job_shown_ended_has_its_end_applied_even_if_it_ended_mid_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request applies the ends of the jobs that have ended on its way in; a job can end after
    that and before its statuses are read (a loaded machine, an added latency). Shown ended, its
    end is applied too: who has read "del.ok" finds the lookup gone, in the store itself as well
    (a test's direct read after an apply saw it still there once, under load)."""
    clock = FakeClock()
    app = make_app(fast(), clock=clock)
    store = app.emulator.store
    async with asgi_client(app) as client:
        await client.post("/lookup/acme/q/deploy-static-query", json={"query": "from a select b"})
        clock.advance(10.0)
        deletion = (await client.delete("/lookup/acme/q")).json()["id"]
        looked = store.due

        def due_then_the_job_ends() -> bool:
            answer = looked()
            clock.advance(10.0)  # the job ends once the request has looked
            return answer

        monkeypatch.setattr(store, "due", due_then_the_job_ends)
        answer = await client.get(f"/lookup/acme/q/job/{deletion}")
    assert [s["code"] for s in answer.json()["status"]] == ["del.start", "del.ok"]
    assert store.get("acme", "q") is None


async def test_bad_csv_cell_ends_in_create_err_naming_the_line() -> None:
    clock = FakeClock()
    app = make_app(fast(), clock=clock)
    config = {"columns": CSV_BODY["columns"], "hasHeader": True}
    async with asgi_client(app) as client:
        response = await client.post(
            "/lookup/acme/up/deploy-csv",
            files=multipart(config, b"ip,country\n10.0.0.1,ES\n10.0.0.x,FR\n"),
        )
        assert response.status_code == 201
        clock.advance(5)
        statuses = (await client.get(f"/lookup/acme/up/job/{response.json()['id']}")).json()[
            "status"
        ]
        last = statuses[-1]
        assert last["code"] == "create.err"
        assert "line 3" in last["msg"] and "IPv4" in last["msg"]
        assert (
            await client.get("/lookup/acme/up")
        ).status_code == 404  # a failed create leaves nothing


async def test_multipart_upload_counts_entries() -> None:
    app = make_app(fast(), clock=FakeClock())
    config = {"columns": CSV_BODY["columns"], "hasHeader": True}
    csv = b"ip,country\n10.0.0.1,ES\n10.0.0.2,FR\n10.0.0.3,DE\n"
    async with asgi_client(app) as client:
        response = await client.post("/lookup/acme/up/deploy-csv", files=multipart(config, csv))
        codes = [
            s["code"]
            for s in (await client.get(f"/lookup/acme/up/job/{response.json()['id']}")).json()[
                "status"
            ]
        ]
        assert codes[:3] == ["create.start", "push.start", "push.ok"]
        meta = (await client.get("/lookup/acme/up")).json()["lookupMetaInfo"]
        assert meta["numEntries"] == 3 and meta["fileSize"] == len(csv)


async def test_failed_update_reverts_to_previous_config() -> None:
    clock = FakeClock()
    app = make_app(fast(), clock=clock)
    async with asgi_client(app) as client:
        await client.post("/lookup/acme/q/deploy-static-query", json={"query": "from a select b"})
        clock.advance(5)
        app.emulator.config.job_failure_pattern = "q"
        put = await client.put(
            "/lookup/acme/q/deploy-static-query", json={"query": "from z select b"}
        )
        assert put.status_code == 201
        meta = (await client.get("/lookup/acme/q")).json()["lookupMetaInfo"]
        assert meta["deployConfig"]["recipe"]["source"]["query"] == "from z select b"
        clock.advance(5)
        statuses = (await client.get(f"/lookup/acme/q/job/{put.json()['id']}")).json()["status"]
        assert statuses[-1]["code"] == "deploy.err"
        meta = (await client.get("/lookup/acme/q")).json()["lookupMetaInfo"]
        assert meta["deployConfig"]["recipe"]["source"]["query"] == "from a select b"


async def test_derived_periodic_config() -> None:
    app = make_app(fast(), clock=FakeClock())
    async with asgi_client(app) as client:
        body = {
            "query": "from a select b",
            "refreshPeriod": "5m",
            "startDate": "2026-01-01T00:00:00Z",
        }
        recipe = (await client.post("/lookup/acme/p/deploy-periodic-query", json=body)).json()[
            "lookupDeployConfig"
        ]["recipe"]
        assert recipe["recipeType"] == "periodic"
        assert recipe["refreshMillis"] == 300_000
        assert recipe["startMillis"] == 1_767_225_600_000
        assert recipe["requiresDate"] is True
        every = {"query": "from a select b group by b every 1h"}
        recipe = (await client.post("/lookup/acme/p2/deploy-periodic-query", json=every)).json()[
            "lookupDeployConfig"
        ]["recipe"]
        assert recipe["refreshMillis"] == 3_600_000


@pytest.mark.parametrize(
    ("endpoint", "body", "message"),
    [
        (
            "deploy-static-query",
            {"query": "q", "key": {"type": "hash"}},
            "KeyAlgorithm values can be 'first-column', 'column', 'row-hash', 'col-hash' and 'seq'",
        ),
        (
            "deploy-periodic-query",
            {"query": "q", "refreshPeriod": "30s"},
            "refreshPeriod should be bigger than 1 minute",
        ),
        ("deploy-csv", {"columns": [{"name": "a"}]}, "Field 'fileProvider' is required"),
        ("deploy-static-query", {}, "Field 'query' is required"),
    ],
)
async def test_bad_bodies_get_devo_messages(
    endpoint: str, body: dict[str, Any], message: str
) -> None:
    app = make_app(fast(), clock=FakeClock())
    async with asgi_client(app) as client:
        response = await client.post(f"/lookup/acme/x/{endpoint}", json=body)
        assert response.status_code == 400
        assert response.json()["msg"] == message
        assert response.json()["type"] == "LookupCreationError"


async def test_conflict_and_not_found() -> None:
    app = make_app(EmulatorConfig(known_domains=["acme"]), clock=FakeClock())
    async with asgi_client(app) as client:
        body = {"query": "from a select b"}
        assert (
            await client.post("/lookup/acme/x/deploy-static-query", json=body)
        ).status_code == 201
        again = await client.post("/lookup/acme/x/deploy-static-query", json=body)
        assert again.status_code == 409
        assert again.json()["msg"] == "Lookup with domain acme and name x already exists"
        missing_domain = await client.get("/lookup/nowhere")
        assert (
            missing_domain.status_code == 404
            and missing_domain.json()["msg"] == "Domain not found."
        )
        assert (await client.get("/lookup/acme/nope")).status_code == 404
        assert (
            await client.put("/lookup/acme/nope/deploy-static-query", json=body)
        ).status_code == 404
        assert (await client.delete("/lookup/acme/nope")).status_code == 404


async def test_deploy_config_null_switch() -> None:
    app = make_app(EmulatorConfig(deploy_config_null=True), clock=FakeClock())
    async with asgi_client(app) as client:
        await client.post("/lookup/acme/geo/deploy-csv", json=CSV_BODY)
        meta = (await client.get("/lookup/acme/geo")).json()["lookupMetaInfo"]
        assert meta["deployConfig"] is None
        assert meta["fields"][0] == {"column": "ip", "type": "ip4", "key": True}


async def test_secrets_are_never_stored(tmp_path: Path) -> None:
    db = tmp_path / "emu.db"
    app = make_app(fast(), clock=FakeClock(), db=db)
    async with asgi_client(app) as client:
        await client.post("/lookup/acme/geo/deploy-csv", json=CSV_BODY)
        text = (await client.get("/lookup/acme/geo")).text
    app.emulator.store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in ("very-secret-canary", "AKIAEXAMPLEKEY"):
        assert secret.encode() not in raw
        assert secret not in text


# --- auth --------------------------------------------------------------------------------------


def authed() -> EmulatorConfig:
    return EmulatorConfig(
        grants=[
            Grant(token="tok-all"),
            Grant(token="tok-beta", domains=["beta*"]),
            Grant(api_key="key-1", api_secret="secret-1"),
        ]
    )


def test_signature_known_answer() -> None:
    # Computed independently: printf '%s' 'key-1{"a":1}1700000000000' | openssl dgst -sha256 -hmac secret-1
    expected = "00185f3cd17187bca1bb288a355d0b832ca99807a8759525f3c7efd4503f8f82"
    assert sign("key-1", "secret-1", b'{"a":1}', "1700000000000") == expected


async def test_auth_schemes_and_error_shapes() -> None:
    clock = FakeClock()
    app = make_app(authed(), clock=clock)
    async with asgi_client(app) as client:
        none = await client.get("/lookup/acme")
        assert none.status_code == 401 and "requires valid auth" in none.json()["msg"]
        malformed = await client.get("/lookup/acme", headers={"Authorization": "Basic abc"})
        assert malformed.status_code == 401
        assert malformed.json() == {"error": {"code": 401, "message": "Unauthorized"}}
        wrong = await client.get("/lookup/acme", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and wrong.json()["code"] == 5
        assert (
            await client.get("/lookup/acme", headers={"Authorization": "Bearer tok-all"})
        ).status_code == 200
        assert (
            await client.get("/lookup/acme", headers={"standAloneToken": "tok-all"})
        ).status_code == 200
        scoped = await client.get("/lookup/acme", headers={"standAloneToken": "tok-beta"})
        assert scoped.status_code == 403 and scoped.json()["context"] == "FORBIDDEN"
        assert (
            await client.get("/lookup/beta1", headers={"standAloneToken": "tok-beta"})
        ).status_code == 200

        body = json.dumps({"query": "from a select b"}).encode()
        timestamp = str(int(clock() * 1000))
        headers = {
            "x-logtrust-apikey": "key-1",
            "x-logtrust-timestamp": timestamp,
            "x-logtrust-sign": sign("key-1", "secret-1", body, timestamp),
            "content-type": "application/json",
        }
        ok = await client.post("/lookup/acme/s/deploy-static-query", content=body, headers=headers)
        assert ok.status_code == 201
        tampered = await client.post(
            "/lookup/acme/t/deploy-static-query", content=body.replace(b"b", b"c"), headers=headers
        )
        assert tampered.status_code == 403
        stale = dict(headers, **{"x-logtrust-timestamp": str(int(clock() * 1000) - 3_600_000)})
        stale["x-logtrust-sign"] = sign("key-1", "secret-1", body, stale["x-logtrust-timestamp"])
        assert (
            await client.post("/lookup/acme/u/deploy-static-query", content=body, headers=stale)
        ).status_code == 403


# --- paging --------------------------------------------------------------------------------------


async def _create_many(client: httpx.AsyncClient, domain: str, n: int) -> list[str]:
    names = [f"l{i:04d}" for i in range(n)]
    for name in names:
        response = await client.post(
            f"/lookup/{domain}/{name}/deploy-static-query", json={"query": "from a select b"}
        )
        assert response.status_code == 201
    return names


async def _all_pages(
    client: httpx.AsyncClient, domain: str, max_length: int, owner: str = "THIS_DOMAIN"
) -> list[str]:
    token, seen = 0, []
    while True:
        page = (
            await client.get(
                f"/lookup/{domain}",
                params={"max_length": max_length, "pageToken": token, "owner": owner},
            )
        ).json()
        seen += [lookup["name"] for lookup in page["lookups"]]
        assert len(page["lookups"]) <= max_length
        token = page["nextPageToken"]
        if token == -1:
            return seen


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 45), max_length=st.integers(1, 20))
def test_paging_returns_every_lookup_once_in_order(n: int, max_length: int) -> None:
    import asyncio

    from reconciler.emulator.derive import derive

    async def run() -> None:
        app = make_app(fast(), clock=FakeClock())
        names = [f"l{i:04d}" for i in range(n)]
        for name in names:  # stored as a POST stores them (40 examples of 45 POSTs took 2 s)
            config = derive("deploy-static-query", "acme", name, {"query": "from a select b"})
            done = [(0.0, "create.start", "started"), (0.0, "deploy.ok", "deployed")]
            app.emulator.store.create("acme", name, config, {}, done, app.emulator.config.owner)
        async with asgi_client(app) as client:
            await _create_many(client, "other", 2)
            assert await _all_pages(client, "acme", max_length) == names

    asyncio.run(run())


async def test_paging_limits_and_owner_modes() -> None:
    app = make_app(fast(), clock=FakeClock())
    async with asgi_client(app) as client:
        for bad in ("0", "1001", "x"):
            assert (await client.get("/lookup/acme", params={"max_length": bad})).status_code == 400
        await client.post(
            "/lookup/parent/shared/deploy-static-query",
            json={"query": "q", "visibility": "all-subdomains"},
        )
        await client.post("/lookup/parent/private/deploy-static-query", json={"query": "q"})
        await client.post("/lookup/acme/mine/deploy-static-query", json={"query": "q"})
        assert await _all_pages(client, "acme", 10) == ["mine"]
        assert await _all_pages(client, "acme", 10, "OTHER_DOMAINS") == ["shared"]
        assert sorted(await _all_pages(client, "acme", 10, "ANY_DOMAIN")) == ["mine", "shared"]


# --- persistence and concurrency ---------------------------------------------------------------


def test_state_persists_across_stores_and_survives_concurrent_writers(tmp_path: Path) -> None:
    db = tmp_path / "emu.db"
    stores = [Store(db), Store(db)]
    schedule = [(0.0, "create.start", "s"), (0.0, "deploy.ok", "ok")]
    errors: list[BaseException] = []

    def writer(store: Store, start: int) -> None:
        try:
            for i in range(start, start + 50):
                store.create(
                    "acme", f"l{i}", {"visibility": {"type": "creator-only"}}, {}, schedule, "o"
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, i * 50)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    fresh = Store(db)
    rows, token = fresh.page(["acme"], None, 0, 1000, shared=False)
    assert len(rows) == 100 and token == -1
    assert len({row.seq for row in rows}) == 100


# --- faults -------------------------------------------------------------------------------------


async def test_fault_knobs() -> None:
    app = make_app(EmulatorConfig(rate_429=1.0, retry_after=7), clock=FakeClock())
    async with asgi_client(app) as client:
        response = await client.get("/lookup/acme")
        assert response.status_code == 429 and response.headers["retry-after"] == "7"
        app.emulator.config.rate_429 = 0
        app.emulator.config.rate_5xx = 1.0
        assert (await client.get("/lookup/acme")).status_code == 503
        app.emulator.config.rate_5xx = 0
        app.emulator.config.rate_drop = 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/lookup/acme")
        assert issubclass(DroppedConnection, httpx.TransportError)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://e"
    ) as raw:
        stats = (await raw.get("/_emulator/stats")).json()
        assert stats["routes"]["GET /lookup/{domain}"] == 3
        assert stats["faults"]["429"] == 1 and stats["faults"]["503"] == 1


# --- over real HTTP -----------------------------------------------------------------------------


@pytest.mark.waits
def test_served_over_loopback_with_uvicorn() -> None:
    app = make_app(EmulatorConfig(create_latency=0, deploy_latency=0, delete_latency=0))
    with served(app) as base, httpx.Client(base_url=base) as client:
        config = {"columns": CSV_BODY["columns"], "hasHeader": True}
        created = client.post(
            "/lookup/acme/geo/deploy-csv", files=multipart(config, b"ip,country\n10.0.0.1,ES\n")
        )
        assert created.status_code == 201
        assert client.post("/lookup/acme/geo/deploy-csv", json=CSV_BODY).status_code == 409
        statuses = client.get(f"/lookup/acme/geo/job/{created.json()['id']}").json()["status"]
        assert statuses[-1]["code"] == "deploy.ok"
        assert client.get("/lookup/acme", params={"max_length": 1}).json()["nextPageToken"] == -1
        deletion = client.delete("/lookup/acme/geo").json()["id"]
        assert (
            client.get(f"/lookup/acme/geo/job/{deletion}").json()["status"][-1]["code"] == "del.ok"
        )
        assert client.get("/lookup/acme/geo").status_code == 404
        app.emulator.config.rate_drop = 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/lookup/acme")


def test_emulator_serve_command(tmp_path: Path) -> None:
    """``reconciler emulator serve`` in a real process: tokens from env, never from argv."""
    import os
    import subprocess
    import sys

    from reconciler.emulator import free_port

    refused = subprocess.run(
        [sys.executable, "-m", "reconciler", "emulator", "serve", "--token", "plain-value"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1 and "must be env:NAME or file:PATH" in refused.stderr
    assert "plain-value" not in refused.stderr

    port = free_port()
    env = {**os.environ, "EMU_TOKEN": "served-token"}
    command = [
        sys.executable,
        "-m",
        "reconciler",
        "emulator",
        "serve",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "emu.db"),
        "--token",
        "env:EMU_TOKEN",
        "--known-domain",
        "acme",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}/lookup-api"
    try:
        wait_for_server(base + "/lookup/acme", process)
        assert httpx.get(base + "/lookup/acme").status_code == 401
        headers = {"Authorization": "Bearer served-token"}
        assert httpx.get(base + "/lookup/acme", headers=headers).json()["lookups"] == []
        assert httpx.get(base + "/lookup/other", headers=headers).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert (tmp_path / "emu.db").exists()


async def test_an_unknown_job_answers_404() -> None:
    app = make_app(EmulatorConfig(create_latency=0, deploy_latency=0))
    async with asgi_client(app) as client:
        created = await client.post(
            "/lookup/acme/x/deploy-static-query", json={"query": "from a select b"}
        )
        assert created.status_code == 201
        missing = await client.get("/lookup/acme/x/job/no-such-job")
        assert missing.status_code == 404 and missing.json()["msg"] == "Job not found."
        known = await client.get(f"/lookup/acme/x/job/{created.json()['id']}")
        assert known.status_code == 200


def test_serve_logs_an_injected_drop_as_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from reconciler.emulator import free_port

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "reconciler",
        "emulator",
        "serve",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "emu.db"),
        "--habit",
        "rewrite-queries",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(base + "/lookup-api/lookup/acme", process)
        assert (
            httpx.put(base + "/_emulator/config", json={"rate_drop": 1.0, "seed": 1}).status_code
            == 200
        )
        for _ in range(3):
            with pytest.raises(httpx.TransportError):
                httpx.get(base + "/lookup-api/lookup/acme", timeout=5)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert err.count("injected fault: connection dropped") == 3, err
    assert "Traceback" not in err


async def test_the_row_protocol_of_deploy_csv(tmp_path: Path) -> None:
    """Devo's guide: append + del removes the uploaded keys and keeps the other rows; append + add
    adds (by key: replaces) rows; without append an upload replaces the data."""
    from reconciler.client import LookupClient
    from reconciler.settings import Settings

    app = make_app(EmulatorConfig(create_latency=0, deploy_latency=0))
    columns = [{"name": "ip", "type": "IP4"}, {"name": "cc", "type": "STRING"}]
    body = {"columns": columns, "hasHeader": True, "key": {"type": "column", "column": "ip"}}

    def csv(*rows: str) -> Path:
        path = tmp_path / f"f{len(list(tmp_path.iterdir()))}.csv"
        path.write_text("ip,cc\n" + "".join(f"{r}\n" for r in rows))
        return path

    async def rows() -> list[str]:
        async with asgi_client(app) as raw:
            found = await raw.get("http://emulator.test/_emulator/rows/acme/geo")
        return sorted(found.json()["rows"])

    async def entries() -> int | None:
        return (await client.get_lookup("acme", "geo")).numEntries

    five = [f"10.0.0.{i},C{i}" for i in range(1, 6)]
    settings = Settings("http://emulator.test/lookup-api")
    async with LookupClient(settings, transport=httpx.ASGITransport(app=app)) as client:
        await client.deploy("POST", "deploy-csv", "acme", "geo", body, csv_file=csv(*five))
        assert await entries() == 5
        delete = {**body, "append": True, "contribution": {"type": "del"}}
        await client.deploy(
            "PUT", "deploy-csv", "acme", "geo", delete, csv_file=csv("10.0.0.1,C1", "10.0.0.2,C2")
        )
        assert await entries() == 3  # the guide's expectation; the first version said 2
        assert await rows() == ["10.0.0.3,C3", "10.0.0.4,C4", "10.0.0.5,C5"]
        add = {**body, "append": True, "contribution": {"type": "add"}}
        await client.deploy(
            "PUT", "deploy-csv", "acme", "geo", add, csv_file=csv("10.0.0.3,XX", "10.0.0.9,C9")
        )
        assert await rows() == ["10.0.0.3,XX", "10.0.0.4,C4", "10.0.0.5,C5", "10.0.0.9,C9"]
        assert await entries() == 4
        # A changed recipe ignores append: the upload replaces the data.
        wider = {**add, "columns": [*columns, {"name": "asn", "type": "INT4"}]}
        path = tmp_path / "wide.csv"
        path.write_text("ip,cc,asn\n10.1.1.1,ES,7\n")
        await client.deploy("PUT", "deploy-csv", "acme", "geo", wider, csv_file=path)
        assert await rows() == ["10.1.1.1,ES,7"] and await entries() == 1
        # Without append: replaced.
        await client.deploy("PUT", "deploy-csv", "acme", "geo", body, csv_file=csv("10.2.2.2,FR"))
        assert await rows() == ["10.2.2.2,FR"] and await entries() == 1


# --- two independent readings of cell values -----------------------------------------------------

_CELL_SHAPES = st.one_of(
    st.text(max_size=24),
    st.from_regex(r"\A-?[0-9]{1,20}(\.[0-9]{0,4})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.from_regex(r"\A(0x)?[0-9a-fA-F]{1,18}\Z"),
    st.from_regex(r"\A[0-9]{1,3}(\.[0-9]{1,3}){3}\Z"),
    st.ip_addresses(v=6).map(str),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?Z?)?\Z"),
    st.from_regex(r"\A([0-9]{1,3}(ms|s|m|h|d|w)){1,3}\Z"),
    st.sampled_from(["true", "FALSE", " 1 ", "0", "yes", "", " ", "nan", "1_000", "+7", "٣"]),
)


# Several cells per example, each read as every type: 400-500 cells × 12 types in 0.6-0.8 s of
# CPU, where one (type, cell) pair per example took 1.2-1.3 s for 400 pairs.
@settings(max_examples=100)
@given(cells=st.lists(_CELL_SHAPES, min_size=1, max_size=12))
def test_the_emulator_and_validate_agree_on_every_cell(cells: list[str]) -> None:
    """The emulator's cell checks and ``validate``'s are written apart; they must agree."""
    for cell in cells:
        for kind in sorted(TYPES):
            try:
                parse_cell(kind, cell)
                ours = True
            except ValueError:
                ours = False
            assert cell_ok(kind, cell) == ours, (kind, cell)


_IDENT = st.sampled_from(["ip", "user", "role", "n", "x_1", "count"])
_EXPR = st.one_of(
    _IDENT,
    st.builds(
        lambda f, a, n: f"{f}({a}) as {n}", st.sampled_from(["max", "count", "f"]), _IDENT, _IDENT
    ),
    st.builds(lambda a, b: f"concat({a}, ',', {b}) as joined", _IDENT, _IDENT),
)


@settings(max_examples=300)
@given(
    select=st.lists(_EXPR, min_size=1, max_size=4),
    group=st.lists(_IDENT, max_size=2),
    where=st.sampled_from(["", " where eq(role, 'a,b')", " where x > 1"]),
    every=st.sampled_from(["", " every 1h"]),
)
def test_the_emulator_and_validate_agree_on_query_columns(
    select: list[str], group: list[str], where: str, every: str
) -> None:
    """The emulator's query reading (a tokenizer) and the tool's (clause splitting) agree."""
    from reconciler.emulator.values import query_columns as emulator_columns
    from reconciler.linq import query_columns as tool_columns

    grouping = f" group by {', '.join(group)}" if group else ""
    query = f"from siem.logtrust.web.activity{where}{grouping}{every} select {', '.join(select)}"
    assert emulator_columns(query) == (tool_columns(query) or []), query


# The emulator's two ways through an upload: the bulk pass must give what the exact one gives, or
# step aside (``_Doubt``) for it.
UPLOADS = {
    "plain": b"ip,n,name\n10.0.0.1,1,a\n10.0.0.2,2,b\n",
    "crlf and a quoted comma": b'ip,n,name\r\n10.0.0.1,1,"a, b"\r\n10.0.0.2,2,c\r\n',
    "no final newline": b"ip,n,name\n10.0.0.1,1,a",
    "bad ip": b"ip,n,name\n10.0.0.1,1,a\n10.0.0.300,2,b\n",
    "padded cells": b"ip,n,name\n 10.0.0.1 , 1 ,a\n",
    "empty cells": b"ip,n,name\n10.0.0.1,,\n",
    "int8 overflow": b"ip,n,name\n10.0.0.1,9223372036854775808,a\n",
    "duplicate key": b"ip,n,name\n10.0.0.1,1,a\n10.0.0.1,2,b\n",
    "a blank line": b"ip,n,name\n10.0.0.1,1,a\n\n10.0.0.2,2,b\n",
    "a short row": b"ip,n,name\n10.0.0.1,1\n",
    "wrong header": b"ip,count,name\n10.0.0.1,1,a\n",
    "header only": b"ip,n,name\n",
    "empty": b"",
    "bom": "\ufeffip,n,name\n10.0.0.1,1,a\n".encode(),
    "not utf-8": b"ip,n,name\n10.0.0.1,1,\xff\n",
    "nul": b"ip,n,name\n10.0.0.1,1,a\x00\n",
    "quoted newline": b'ip,n,name\n10.0.0.1,1,"a\nb"\n10.0.0.2,2,c\n',
    "form feed inside a cell": b"ip,n,name\n10.0.0.1,1,a\x0cb\n",
    "a lone carriage return": b"ip,n,name\n10.0.0.1,1,a\rb\n10.0.0.2,2,c\n",
}


def _upload_config(skip_empty: bool) -> dict[str, Any]:
    """The derived config of a deploy-csv upload of ``ip,n,name`` (IP4, INT8, STRING)."""
    from reconciler.emulator.derive import derive

    body = {
        "columns": [
            {"name": "ip", "type": "IP4"},
            {"name": "n", "type": "INT8"},
            {"name": "name", "type": "STRING"},
        ],
        "hasHeader": True,
        "skipEmptyLines": skip_empty,
    }
    return derive("deploy-csv", "acme", "x", body, uploaded=True)


@pytest.mark.parametrize("skip_empty", [False, True])
@pytest.mark.parametrize("name", sorted(UPLOADS))
def test_the_bulk_pass_agrees_with_the_exact_one(name: str, skip_empty: bool) -> None:
    import io

    from reconciler.emulator.ingest import _bulk, _Doubt, _exact, ingest

    config = _upload_config(skip_empty)
    data = UPLOADS[name]
    exact = _exact(io.BytesIO(data), config)
    assert ingest(io.BytesIO(data), config) == exact
    try:
        bulk = _bulk(data, config)
    except _Doubt:  # allowed (the exact pass answers), but not for the ordinary uploads
        assert name not in ("plain", "crlf and a quoted comma", "no final newline", "bom"), name
        return
    assert bulk == exact, name


@pytest.mark.parametrize("block", [3, 7, 1 << 20])
@pytest.mark.parametrize("name", sorted([*UPLOADS, "multi-byte", "bom and crlf"]))
def test_rows_read_by_blocks_are_the_rows_read_line_by_line(
    name: str, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``read_rows`` without a preface (lines a block at a time) gives what the numbered lines
    give (the path a preface takes; one that never matches skips nothing), blocks of any size
    cutting through a quoted newline, a multi-byte character or the byte-order mark."""
    import io

    from reconciler.emulator import ingest

    data = {
        "multi-byte": b"ip,n,name\n10.0.0.1,1,\xc3\xa9\xc3\xa9\n10.0.0.2,2,\xe2\x82\xac\n",
        "bom and crlf": "\ufeffip,n,name\r\n10.0.0.1,1,\u00e9\r\n".encode(),
    }.get(name) or UPLOADS[name]
    config = _upload_config(skip_empty=True)
    if ingest.ingest(io.BytesIO(data), config).problem is not None:
        return  # read_rows is only asked about an upload ingest took
    monkeypatch.setattr(ingest, "BLOCK", block)
    by_blocks = list(ingest.read_rows(io.BytesIO(data), config))
    prefaced = {**config, "recipe": {**config["recipe"]}}
    prefaced["recipe"]["source"] = {**config["recipe"]["source"], "skipPreface": "(?!)"}
    assert by_blocks == list(ingest.read_rows(io.BytesIO(data), prefaced))
    assert by_blocks or name in ("header only", "empty")


def test_a_served_emulator_takes_the_cells_devo_takes() -> None:
    """A cell of 200 KB (over the csv module's 128 KiB default, under Devo's 16 MiB) is taken by
    an emulator in a process of its own, where the tool's validate (which raises the csv module's
    limit for its own reading) was never imported; a cell over 16 MiB is refused with its line."""
    import subprocess
    import sys

    probe = """
import io, sys
from reconciler.emulator.derive import derive
from reconciler.emulator.ingest import ingest
body = {"columns": [{"name": "k", "type": "STRING"}, {"name": "v", "type": "STRING"}],
        "hasHeader": True}
config = derive("deploy-csv", "acme", "x", body, uploaded=True)
for size in (200_000, 17 * 1024 * 1024):
    for quote in (b"", b'"'):  # the bulk pass splits unquoted lines itself; csv reads quoted ones
        data = b"k,v\\na," + quote + b"x" * size + quote + b"\\nb,y\\n"
        print(ingest(io.BytesIO(data), config).problem)
print("reconciler.spec.csvcheck" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *problems, tool = done.stdout.splitlines()
    assert problems[:2] == ["None", "None"] and tool == "False", done.stdout
    for big in problems[2:]:
        assert big.startswith("line 2: field larger than field limit (16777216)"), big


_UPLOAD_BYTES = csv_bytes(b"-1", b"9223372036854775808", max_size=30)


@settings(max_examples=300)
@given(data=_UPLOAD_BYTES, skip_empty=st.booleans())
def test_any_upload_is_judged_never_crashes_and_both_passes_agree(
    data: bytes, skip_empty: bool
) -> None:
    """Whatever bytes come (quotes, lone CRs, NULs, broken UTF-8, byte-order marks), the emulator
    judges the upload: a verdict, never an exception (a 500); the bulk pass gives the exact
    pass's verdict or steps aside; and an upload it takes reads back as rows."""
    import contextlib
    import io

    from reconciler.emulator.ingest import _bulk, _Doubt, _exact, ingest, read_rows

    config = _upload_config(skip_empty)
    exact = _exact(io.BytesIO(data), config)
    assert ingest(io.BytesIO(data), config) == exact
    with contextlib.suppress(_Doubt):  # stepping aside is allowed
        assert _bulk(data, config) == exact
    if exact.problem is None:
        assert len(list(read_rows(io.BytesIO(data), config))) == exact.rows


# --- bodies of any shape: a 400 or a lookup, never a 500 ----------------------------------------

_BODY_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**10),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        ["IP4", "from a select b", "1h", "column", "del", "col", "periodic", "^#", "("]
    ),
)
_BODY_KEYS = st.sampled_from(
    [
        "query",
        "columns",
        "name",
        "type",
        "key",
        "column",
        "visibility",
        "hasHeader",
        "skipPreface",
        "append",
        "contribution",
        "refreshPeriod",
        "startDate",
        "windowSize",
        "fileProvider",
        "bucketName",
        "keyName",
        "transferOwnership",
        "recipe",
        "source",
        "recipeType",
        "lookupType",
        "refreshMillis",
        "startMillis",
        "from",
        "keepHistory",
        "columnTimeReference",
    ]
)
_BODIES = st.recursive(
    _BODY_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_BODY_KEYS, inner, max_size=6)
    ),
    max_leaves=20,
)
_CSV_BODIES = st.fixed_dictionaries(
    {
        "columns": st.just([{"name": "ip", "type": "IP4"}, {"name": "n", "type": "INT8"}]),
        "hasHeader": st.booleans(),
        "skipPreface": st.sampled_from([None, "^#", 3, "("]),
        "key": st.sampled_from(
            [None, {"type": "column", "column": 7}, {"type": "col-hash", "columns": ["ip", 2]}]
        ),
        "contribution": st.sampled_from([None, {"type": "del"}, {"type": "col", "name": 5}]),
    }
)


@settings(max_examples=200)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["POST", "PUT"]),
            st.sampled_from(
                [
                    "deploy-static-query",
                    "deploy-periodic-query",
                    "deploy-sliding-window-query",
                    "deploy-csv",
                    "deploy-config",
                ]
            ),
            st.one_of(_BODIES, _CSV_BODIES),
            st.one_of(st.none(), st.sampled_from([b"ip,n\n10.0.0.1,1\n", b"\xff", b'"x', b"#p\n"])),
        ),
        min_size=1,
        max_size=3,
    )
)
async def test_a_deploy_body_of_any_shape_is_a_400_or_a_lookup_never_a_500(
    calls: list[tuple[str, str, Any, bytes | None]],
) -> None:
    """Fields of other types than Devo's model (a number for a query, an object for a column's
    name, a bad skipPreface pattern) were stored and failed the next read, or the upload, with a
    500: a deploy is now refused with a 400, or taken and readable."""
    app = make_app(EmulatorConfig(create_latency=0, deploy_latency=0, delete_latency=0))
    async with asgi_client(app) as client:
        for method, endpoint, body, upload in calls:
            path = f"/lookup/acme/geo/{endpoint}"
            if upload is None:
                answer = await client.request(method, path, json=body)
            else:
                config = json.dumps(body).encode()
                files = {"deploy-config": ("c.json", config), "csv": ("f.csv", upload)}
                answer = await client.request(method, path, files=files)
            assert answer.status_code < 500, (endpoint, body, answer.text[:300])
            for read in ("/lookup/acme/geo", "/lookup/acme", "/lookup/acme/geo/job"):
                assert (await client.get(read)).status_code < 500, (read, endpoint, body)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"query": 0.5}, "Field 'query' must be a string"),
        ({"query": {"from": "x"}}, "Field 'query' must be a string"),
        (
            {"query": "from a select b", "key": {"type": "column", "column": 3}},
            "Field 'key.column' must be a string",
        ),
    ],
)
async def test_a_field_of_another_type_is_devos_400(body: dict[str, Any], said: str) -> None:
    app = make_app(EmulatorConfig(create_latency=0, deploy_latency=0, delete_latency=0))
    async with asgi_client(app) as client:
        answer = await client.post("/lookup/acme/geo/deploy-static-query", json=body)
        assert answer.status_code == 400 and answer.json()["msg"] == said, answer.text
        assert (await client.get("/lookup/acme/geo")).status_code == 404  # nothing was stored
        bad = {
            "columns": [{"name": "ip"}],
            "skipPreface": "(",
            "fileProvider": {"bucketName": "b", "keyName": "k", "transferOwnership": False},
        }
        answer = await client.post("/lookup/acme/geo/deploy-csv", json=bad)
        assert answer.status_code == 400, answer.text
        assert answer.json()["msg"].startswith("skipPreface is not a valid regular expression")
        files = {"deploy-config": ("c.json", b"\xff\xfe"), "csv": ("f.csv", b"ip\n1.2.3.4\n")}
        answer = await client.post("/lookup/acme/geo/deploy-csv", files=files)
        assert answer.status_code == 400, answer.text
        assert answer.json()["msg"] == "the 'deploy-config' part is not valid JSON"
