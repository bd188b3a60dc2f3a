"""The embedded Lookups API emulator: a Starlette app serving ``/lookup-api/lookup/...``.

It answers with the envelopes, field names and error bodies of ``shared/lookup-api.md``; deploys
start jobs whose statuses advance with time (see ``store``); CSV uploads are checked cell by cell and a
bad cell ends the job in ``create.err`` naming its line. ``FaultInjector`` wraps the app to inject
5xx, 429 with ``Retry-After``, dropped connections and latency; ``/_emulator/*`` routes expose
request counts and let tests change the knobs of a running server.

Job statuses, in order: ``create.start → create.ok → deploy.start → deploy.ok`` (a multipart upload
adds ``push.start → push.ok`` first), ``del.start → del.ok`` for deletes; any phase may end in its
``*.err``. A job is over at ``deploy.ok``, ``del.ok`` or any ``*.err``.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.emulator.config import EmulatorConfig
from reconciler.emulator.core import (
    DEPLOY_ENDPOINTS,
    PREFIX,
    Emulator,
    Stats,
    settle_due,
    stored,
)
from reconciler.emulator.derive import BodyError, derive
from reconciler.emulator.faults import FaultInjector
from reconciler.emulator.ingest import ingest, read_rows
from reconciler.emulator.store import Conflict, LookupRow, Missing, Rows, Store, Upload
from reconciler.emulator.values import key_indexes, lookups_read

# --- routes -----------------------------------------------------------------------------------


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def _guard(request: Request) -> tuple[Emulator, str, Response | None]:
    """The emulator, the path's domain, and the error response when auth or the domain says no."""
    emu = _emulator(request)
    domain = request.path_params["domain"]
    denied = await emu.authorize(request, domain) or emu.domain_missing(domain)
    return emu, domain, denied


async def list_lookups(request: Request) -> Response:
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    params = request.query_params
    try:
        max_length = int(params.get("max_length", "100"))
        token = int(params.get("pageToken", "0"))
    except ValueError:
        return emu.error(
            400, "max_length and pageToken must be integers", kind="LookupMetaInfoError"
        )
    if not 1 <= max_length <= 1000:
        return emu.error(400, "max_length must be between 1 and 1000", kind="LookupMetaInfoError")
    if token < 0:
        return emu.error(400, "pageToken must be 0 or greater", kind="LookupMetaInfoError")
    owner = params.get("owner", "THIS_DOMAIN")
    if owner == "THIS_DOMAIN":
        rows, next_token = emu.store.page([domain], None, token, max_length, shared=False)
    elif owner == "OTHER_DOMAINS":
        rows, next_token = emu.store.page(None, domain, token, max_length, shared=True)
    elif owner == "ANY_DOMAIN":
        rows, next_token = emu.store.page(None, None, token, max_length, shared=False)
        rows = [r for r in rows if r.domain == domain or _shared(r)]
    else:
        return emu.error(
            400,
            "owner values can be 'THIS_DOMAIN', 'OTHER_DOMAINS' and 'ANY_DOMAIN'",
            kind="LookupMetaInfoError",
        )
    latest = emu.store.latest_statuses(rows)
    return JSONResponse(
        {
            "type": "LookupMetaInfoListResponse",
            "cid": emu.cid(),
            "code": 200,
            "context": None,
            "id": str(uuid.uuid1()),
            "msg": f"Lookups of domain {domain}",
            "lookups": [emu.metadata(r, latest) for r in rows],
            "nextPageToken": next_token,
        }
    )


def _shared(row: LookupRow) -> bool:
    return bool(row.config["visibility"]["type"] == "all-subdomains")


async def get_lookup(request: Request) -> Response:
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    name = request.path_params["name"]
    row = emu.store.get(domain, name)
    if row is None:
        return emu.error(404, "Lookup not found.", kind="LookupMetaInfoError")
    return JSONResponse(
        {
            "type": "LookupMetaInfoResponse",
            "cid": emu.cid(),
            "code": 200,
            "context": None,
            "id": str(uuid.uuid1()),
            "msg": "Lookup metadata",
            "lookupMetaInfo": emu.metadata(row),
        }
    )


async def delete_lookup(request: Request) -> Response:
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    name = request.path_params["name"]
    try:
        schedule = emu.schedule("delete", name, uploaded=False)
        job_id = await stored(emu, emu.store.delete, domain, name, schedule)
    except Missing:
        return emu.error(404, "Lookup not found.", kind="LookupDeletionError")
    return JSONResponse(
        {
            "type": "LookupDeletionResponse",
            "cid": emu.cid(),
            "code": 200,
            "context": None,
            "id": job_id,
            "msg": "Lookup sent to deletion",
        }
    )


async def list_jobs(request: Request) -> Response:
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    name = request.path_params["name"]
    jobs = emu.store.job_ids(domain, name)
    gone = emu.store.get(domain, name) is None
    if gone and (emu.config.jobs_vanish or not jobs):
        return emu.error(404, "Lookup not found.", kind="LookupJobError")
    return JSONResponse({"code": 200, "msg": "Lookup job uuids", "jobs": jobs})


async def get_job(request: Request) -> Response:
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    name = request.path_params["name"]
    statuses = emu.store.job_statuses(domain, name, request.path_params["job"])
    if statuses:
        # The job may have ended after this request settled on its way in (a loaded machine, an
        # added latency): its end is applied before it is shown, so that no one who has read
        # "del.ok" finds the lookup still stored, even reading the store directly.
        await settle_due(emu)
    if emu.config.jobs_vanish and emu.store.get(domain, name) is None:
        statuses = None  # the lookup is gone, and its jobs with it
    if statuses is None:
        return emu.error(404, "Job not found.", kind="LookupJobError")
    return JSONResponse({"code": 200, "msg": "Lookup job's statuses", "status": statuses})


async def _read_deploy_body(request: Request, endpoint: str) -> tuple[dict[str, Any], Any | None]:
    """The JSON body, or for a multipart deploy-csv the ``deploy-config`` part and the ``csv`` file."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        if endpoint != "deploy-csv":
            raise BodyError("multipart bodies are only accepted by deploy-csv")
        form = await request.form(max_part_size=64 * 1024 * 1024)
        part = form.get("deploy-config")
        upload = form.get("csv")
        if part is None or upload is None or isinstance(upload, str):
            raise BodyError(
                "multipart deploy-csv needs a 'deploy-config' part and a 'csv' file part"
            )
        raw = part if isinstance(part, str) else await part.read()
        try:
            return json.loads(raw), upload
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BodyError("the 'deploy-config' part is not valid JSON") from None
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BodyError("Request body is not valid JSON") from None
    return body, None


def _scan_upload(upload: Any, config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    upload.file.seek(0)
    result = ingest(upload.file, config)
    data = {"rows": result.rows, "size": result.size, "sha256": result.sha256}
    if result.problem is None:
        return data, None
    return data, f"Error creating lookup: {result.problem}"


def _read_rows(upload: Any, config: dict[str, Any], count: int) -> Rows:
    """An upload's data rows for the store: the whole upload (its rows are parsed only if a row
    protocol upload or the rows call needs them), or, when its rows have no key (so the store's
    count may differ from the file's) or it is huge, the (key, row) pairs streamed."""
    upload.file.seek(0)
    recipe = config["recipe"]
    names = [c["name"] for c in recipe["source"].get("columns") or []]
    keyed = bool(key_indexes(names, recipe.get("key") or {"type": "first-column"}))
    if keyed and upload.size is not None and upload.size < 256 * 1024 * 1024:
        return Upload(upload.file.read(), config, count)
    return read_rows(upload.file, config)


def _missing_reads(emu: Emulator, domain: str, config: dict[str, Any]) -> str | None:
    """A query lookup's job fails when a lookup its query reads is not there, deployed, in the
    same domain (a lookup still being built is not there yet): the failure a real service gives
    a query lookup created before the lookups it reads."""
    query = ((config.get("recipe") or {}).get("source") or {}).get("query")
    if not isinstance(query, str):
        return None
    for name in lookups_read(query):
        row = emu.store.get(domain, name)
        status = emu.store.latest_status(domain, name, row.last_job) if row else None
        if row is None or (status or {}).get("code") not in READY:
            return f"Error creating lookup: the query reads lookup {name}, which does not exist"
    return None


#: The statuses after which a lookup can be read by a query.
READY = ("create.ok", "deploy.ok")


def _row_mode(creating: bool, stored: LookupRow | None, config: dict[str, Any]) -> str:
    """Devo's row protocol: ``append`` adds or deletes rows by key (by ``contribution``), unless
    there is no previous lookup or the recipe changed; without it the upload replaces the data."""
    recipe = config["recipe"]
    if creating or stored is None or not recipe.get("append"):
        return "replace"

    def shape(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in ("append", "contribution")}

    if shape(stored.config["recipe"]) != shape(recipe):
        return "replace"
    return "del" if (recipe.get("contribution") or {}).get("type") == "del" else "add"


async def deploy(request: Request) -> Response:
    endpoint = request.path_params["endpoint"]
    if endpoint not in DEPLOY_ENDPOINTS:
        return _emulator(request).error(404, "Not Found")
    emu, domain, denied = await _guard(request)
    if denied:
        return denied
    name = request.path_params["name"]
    creating = request.method == "POST"
    address = f"{domain}/{name}"
    try:
        body, upload = await _read_deploy_body(request, endpoint)
        if creating:  # counted once the whole request arrived (a client may die mid-body)
            emu.stats.posts[address] += 1
        config = derive(endpoint, domain, name, body, uploaded=upload is not None)
    except BodyError as exc:
        return emu.error(400, str(exc))
    except (TypeError, ValueError, AttributeError):  # a field of a type Devo's model has not
        return emu.error(400, "Malformed request body: a field has the wrong type")
    data: dict[str, Any] = {"rows": 0, "size": 0}
    failure = None
    rows = None
    if upload is not None:
        data, failure = await run_in_threadpool(_scan_upload, upload, config)
        if failure is None:
            rows = _read_rows(upload, config, data["rows"])
    if failure is None:
        failure = await stored(emu, _missing_reads, emu, domain, config)
    mode = _row_mode(creating, None if creating else emu.store.get(domain, name), config)
    schedule = emu.schedule("create", name, uploaded=upload is not None, failure=failure)
    try:
        if creating:
            job_id = await stored(
                emu, emu.store.create, domain, name, config, data, schedule, emu.config.owner, rows
            )
        else:
            job_id = await stored(
                emu, emu.store.update, domain, name, config, data, schedule, rows, mode
            )
    except Conflict:
        emu.stats.conflicts[address] += 1
        return emu.error(409, f"Lookup with domain {domain} and name {name} already exists")
    except Missing:
        return emu.error(404, "Lookup not found.")
    if creating:
        emu.stats.created[address] += 1
    verb = "creation" if creating else "update"
    return JSONResponse(
        {
            "type": "LookupCreationResponse",
            "cid": emu.cid(),
            "code": 201,
            "context": None,
            "id": job_id,
            "msg": f"Lookup sent to {verb}. You can check the {verb} status using the provided id: "
            f"/lookup/{domain}/{name}/job/{job_id}",
            "lookupDeployConfig": emu.echo(domain, config),
        },
        status_code=201,
    )


async def control_stats(request: Request) -> Response:
    emu = _emulator(request)
    if request.method == "DELETE":
        emu.stats = Stats()
    counts = emu.stats.as_dict()
    counts["created_ok"] = await stored(emu, emu.store.successful_creates)
    return JSONResponse(counts)


async def control_rows(request: Request) -> Response:
    """``GET /_emulator/rows/{domain}/{name}``: the rows a lookup holds (for tests);
    ``DELETE ...?keep=N``: rows lost out of band (all but the first N by key)."""
    emu = _emulator(request)
    if request.method == "DELETE":
        try:
            keep = int(request.query_params.get("keep", "0"))
            left = emu.store.drop_rows(
                request.path_params["domain"], request.path_params["name"], max(0, keep)
            )
        except ValueError:
            return emu.error(400, "keep must be an integer")
        except Missing:
            return emu.error(404, "Lookup not found.")
        return JSONResponse({"rows": left})
    rows = emu.store.rows_of(request.path_params["domain"], request.path_params["name"])
    return JSONResponse({"rows": rows})


async def control_config(request: Request) -> Response:
    emu = _emulator(request)
    if request.method == "PUT":
        changes = await request.json()
        for name, value in changes.items():
            if name == "grants" or not hasattr(emu.config, name):
                return JSONResponse({"code": 400, "msg": f"unknown knob {name!r}"}, 400)
            setattr(emu.config, name, value)
        if "seed" in changes:
            emu.random = random.Random(emu.config.seed)
    return JSONResponse(emu.config.public())


# --- faults and counting ------------------------------------------------------------------------


def create_app(
    config: EmulatorConfig | None = None,
    *,
    db: str | Path = ":memory:",
    store: Store | None = None,
) -> FaultInjector:
    """The emulator as an ASGI app (``app.emulator`` gives tests its store, knobs and counters)."""
    config = config or EmulatorConfig()
    store = store or Store(db)
    emulator = Emulator(config, store)
    base = PREFIX + "/lookup/{domain}"
    routes = [
        Route(base, list_lookups, methods=["GET"]),
        Route(base + "/{name}", get_lookup, methods=["GET"]),
        Route(base + "/{name}", delete_lookup, methods=["DELETE"]),
        Route(base + "/{name}/job", list_jobs, methods=["GET"]),
        Route(base + "/{name}/job/{job}", get_job, methods=["GET"]),
        Route(base + "/{name}/{endpoint}", deploy, methods=["POST", "PUT"]),
        Route("/_emulator/stats", control_stats, methods=["GET", "DELETE"]),
        Route("/_emulator/config", control_config, methods=["GET", "PUT"]),
        Route("/_emulator/rows/{domain}/{name}", control_rows, methods=["GET", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return FaultInjector(app, emulator)
