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

import asyncio
import fnmatch
import functools
import hashlib
import hmac
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from reconciler.emulator.derive import MASK, BodyError, derive
from reconciler.emulator.habits import echo_config, echo_metadata
from reconciler.emulator.ingest import ingest, read_rows
from reconciler.emulator.store import Conflict, LookupRow, Missing, Schedule, Store, iso_millis
from reconciler.emulator.values import TYPES, key_indexes, query_columns

PREFIX = "/lookup-api"
DEPLOY_ENDPOINTS = (
    "deploy-config",
    "deploy-csv",
    "deploy-static-query",
    "deploy-periodic-query",
    "deploy-sliding-window-query",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Grant:
    """A credential the emulator accepts and the domains it may act in (``*``: all)."""

    token: str = ""
    api_key: str = ""
    api_secret: str = ""
    domains: list[str] = field(default_factory=lambda: ["*"])

    def allows(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain, pattern) for pattern in self.domains)


@dataclass
class EmulatorConfig:
    """Every knob of the emulator. Changing it on a running app takes effect at the next request."""

    grants: list[Grant] = field(default_factory=list)  # empty: no auth at all
    known_domains: list[str] | None = None  # None: every domain exists
    deploy_config_null: bool = False  # answer deployConfig: null like the documented examples
    owner: str = "reconciler@emulator"
    # Job latency per phase, seconds.
    create_latency: float = 0.1
    deploy_latency: float = 0.2
    delete_latency: float = 0.1
    # Job failures.
    job_failure_rate: float = 0.0
    job_failure_pattern: str | None = None  # fnmatch on the lookup name
    # Transport faults, as rates per request to /lookup-api.
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_drop: float = 0.0
    added_latency: float = 0.0
    seed: int | None = None
    # Habits of a less tidy service (see ``habits``): how it echoes configs, and its job routes.
    rewrite_queries: bool = False  # echo queries rewritten, as Devo's own service does
    columns_with_from: bool = False  # echo every column with its ``from`` index
    empty_for_null: bool = False  # echo ``[]``/``""`` where the config holds null
    numbers_as_strings: bool = False  # echo numbers as strings
    jobs_vanish: bool = False  # a deleted lookup's jobs answer 404, like the lookup itself

    def public(self) -> dict[str, Any]:
        """The knobs without credentials (for ``GET /_emulator/config``)."""
        data = asdict(self)
        data["grants"] = len(self.grants)
        return data


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised by the fault injector to cut a connection: uvicorn closes the socket, and an in-process
    ``httpx.ASGITransport`` hands the same transport error to the client."""

    def __init__(self) -> None:
        super().__init__("emulator dropped the connection (injected fault)")


@dataclass
class Stats:
    """Request counts, per route template and per lookup, since start or the last reset."""

    routes: Counter[str] = field(default_factory=Counter)
    posts: Counter[str] = field(default_factory=Counter)  # POSTs that reached a deploy route
    created: Counter[str] = field(default_factory=Counter)  # POSTs answered 201
    conflicts: Counter[str] = field(default_factory=Counter)  # POSTs answered 409: lookup existed
    faults: Counter[str] = field(default_factory=Counter)
    bytes_in: Counter[str] = field(default_factory=Counter)  # request bytes, per route template

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": sum(self.routes.values()),
            "routes": dict(self.routes),
            "bytes_in": dict(self.bytes_in),
            "posts": dict(self.posts),
            "created": dict(self.created),
            "conflicts": dict(self.conflicts),
            "faults": dict(self.faults),
        }


class Emulator:
    """The emulator's state shared by its routes: store, knobs, counters and a seeded random."""

    def __init__(self, config: EmulatorConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.stats = Stats()
        self.random = random.Random(config.seed)

    # --- envelopes --------------------------------------------------------------------------

    @staticmethod
    def cid() -> str:
        return uuid.uuid4().hex[:12]

    def error(
        self, code: int, msg: str, *, kind: str = "LookupCreationError", **extra: Any
    ) -> JSONResponse:
        body = {"type": kind, "cid": self.cid(), "code": code, "context": None}
        body.update({"id": str(uuid.uuid1()), "msg": msg, **extra})
        return JSONResponse(body, status_code=code)

    # --- auth -------------------------------------------------------------------------------

    async def authorize(self, request: Request, domain: str) -> Response | None:
        """None when the request may act in ``domain``; the error response otherwise."""
        grants = self.config.grants
        if not grants:
            return None
        url = str(request.url)
        authorization = request.headers.get("authorization")
        standalone = request.headers.get("standalonetoken")
        api_key = request.headers.get("x-logtrust-apikey")
        grant: Grant | None = None
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return JSONResponse({"error": {"code": 401, "message": "Unauthorized"}}, 401)
            grant = next((g for g in grants if g.token and g.token == token.strip()), None)
        elif standalone is not None:
            grant = next((g for g in grants if g.token and g.token == standalone.strip()), None)
        elif api_key is not None:
            grant = await self._signed(request, api_key)
        else:
            return JSONResponse(
                {"code": 401, "msg": f"Access to '{url}' requires valid auth", "cid": self.cid()},
                401,
            )
        if grant is None:
            return JSONResponse(
                {"code": 5, "msg": "Token invalid or expired", "cid": self.cid()}, 403
            )
        if not grant.allows(domain):
            return self.error(
                403,
                "User is not authorized to perform operations in the domain.",
                context="FORBIDDEN",
            )
        return None

    async def _signed(self, request: Request, api_key: str) -> Grant | None:
        timestamp = request.headers.get("x-logtrust-timestamp", "")
        signature = request.headers.get("x-logtrust-sign", "")
        grant = next((g for g in self.config.grants if g.api_key and g.api_key == api_key), None)
        if grant is None or not timestamp.isdigit():
            return None
        if abs(int(timestamp) - self.store.clock() * 1000) > 5 * 60 * 1000:
            return None  # a replayed or badly clocked request
        body = await request.body()
        expected = sign(grant.api_key, grant.api_secret, body, timestamp)
        return grant if hmac.compare_digest(expected, signature.lower()) else None

    def domain_missing(self, domain: str) -> Response | None:
        known = self.config.known_domains
        if known is not None and domain not in known:
            return self.error(404, "Domain not found.")
        return None

    # --- metadata ---------------------------------------------------------------------------

    def metadata(
        self, row: LookupRow, latest: dict[str, dict[str, str]] | None = None
    ) -> dict[str, Any]:
        """The documented metadata of one lookup; ``latest`` holds pre-read job statuses."""
        config = row.config
        recipe = config["recipe"]
        source = recipe.get("source") or {}
        key = recipe.get("key") or {"type": "first-column"}
        if source.get("columns"):
            columns = [
                (c["name"], TYPES.get(str(c["type"]).upper(), "str")) for c in source["columns"]
            ]
        else:
            columns = [(name, "str") for name in _query_columns(source.get("query", ""))]
        names = [name for name, _ in columns]
        key_index = set(key_indexes(names, key))
        shown = {
            "name": row.name,
            "domain": row.domain,
            "fileSize": row.data.get("size", 0),
            "numEntries": row.data.get("rows", 0),
            "creationDate": iso_millis(row.created),
            "keyType": _key_type(key),
            "deployConfig": None
            if self.config.deploy_config_null
            else self.echo(row.domain, config),
            "lastStatus": (latest or {}).get(row.last_job or "")
            if latest is not None
            else self.store.latest_status(row.domain, row.name, row.last_job),
            "fields": [
                {"column": name, "type": kind, "key": i in key_index}
                for i, (name, kind) in enumerate(columns)
            ],
            "shared": config["visibility"]["type"] == "all-subdomains",
            "owner": row.owner,
        }
        return echo_metadata(shown, self.config)

    def echo(self, domain: str, config: dict[str, Any]) -> dict[str, Any]:
        """A stored config as this service shows it: masked, and with its habits applied."""
        return echo_config(masked(config), domain, self.config)

    # --- jobs -------------------------------------------------------------------------------

    def schedule(
        self, action: str, name: str, *, uploaded: bool, failure: str | None = None
    ) -> Schedule:
        """The statuses a new job will go through, with their offsets in seconds."""
        cfg = self.config
        if action == "delete":
            steps: Schedule = [(0.0, "del.start", "Lookup deletion started")]
            if self._fails(name):
                return [
                    *steps,
                    (cfg.delete_latency, "del.err", "Lookup deletion failed: injected failure"),
                ]
            return [*steps, (cfg.delete_latency, "del.ok", "Lookup successfully deleted")]
        c, d = cfg.create_latency, cfg.deploy_latency
        steps = [(0.0, "create.start", "Lookup creation started")]
        if uploaded:
            steps += [(0.0, "push.start", "Upload started"), (0.0, "push.ok", "Upload finished")]
        if failure is not None:
            return [*steps, (c, "create.err", failure)]
        steps += [(c, "create.ok", "Lookup successfully created")]
        steps += [(c, "deploy.start", "Lookup deployment started")]
        if self._fails(name):
            return [*steps, (c + d, "deploy.err", "Lookup deployment failed: injected failure")]
        return [*steps, (c + d, "deploy.ok", "Lookup successfully deployed")]

    def _fails(self, name: str) -> bool:
        cfg = self.config
        if cfg.job_failure_pattern and fnmatch.fnmatchcase(name, cfg.job_failure_pattern):
            return True
        return cfg.job_failure_rate > 0 and self.random.random() < cfg.job_failure_rate


def sign(api_key: str, api_secret: str, body: bytes, timestamp: str) -> str:
    """Devo's request signature: hex HMAC-SHA256(key=secret, msg=apikey + body + timestamp)."""
    message = api_key.encode() + body + timestamp.encode()
    return hmac.new(api_secret.encode(), message, hashlib.sha256).hexdigest()


def masked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with secret values replaced by the mask (a copy only when there is one)."""
    source = (config.get("recipe") or {}).get("source") or {}
    provider = source.get("fileProvider") or {}
    if not any(provider.get(k) and provider[k] != MASK for k in ("accessKey", "secretKey")):
        return config  # stored configs are masked already: nothing to copy
    copy = json.loads(json.dumps(config))
    hidden = copy["recipe"]["source"]["fileProvider"]
    for secret in ("accessKey", "secretKey"):
        if hidden.get(secret):
            hidden[secret] = MASK
    return dict(copy)


@functools.lru_cache(maxsize=4096)
def _query_columns(query: str) -> tuple[str, ...]:
    return tuple(query_columns(query))


def _key_type(key: dict[str, Any]) -> dict[str, Any]:
    kind = key.get("type", "first-column")
    if kind == "first-column":
        return {"type": "first", "columns": None, "hasher": None}
    if kind == "column":
        return {"type": "column", "columns": [key.get("column")], "hasher": None}
    if kind == "col-hash":
        return {"type": "hash", "columns": key.get("columns"), "hasher": "murmur3"}
    return {"type": kind, "columns": None, "hasher": None}


# --- routes -----------------------------------------------------------------------------------


_T = TypeVar("_T")


async def _stored(emu: Emulator, call: Callable[..., _T], *args: Any) -> _T:
    """A store call that writes (or waits for writers): from a worker thread when the database is
    a file (another process may hold its write lock for a while, and the loop must go on
    serving), inline when it is in memory (its lock is held for microseconds, less than a thread
    hop costs)."""
    if emu.store.in_memory:
        return call(*args)
    return await run_in_threadpool(call, *args)


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
        job_id = await _stored(emu, emu.store.delete, domain, name, schedule)
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
        raw = part if isinstance(part, str) else (await part.read()).decode()
        try:
            return json.loads(raw), upload
        except json.JSONDecodeError:
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


def _read_rows(upload: Any, config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """An upload's data rows as (key, row) pairs, streamed: the store inserts them as they are
    read, so a big upload is never whole in memory."""
    upload.file.seek(0)
    return read_rows(upload.file, config)


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
    data: dict[str, Any] = {"rows": 0, "size": 0}
    failure = None
    rows = None
    if upload is not None:
        data, failure = await run_in_threadpool(_scan_upload, upload, config)
        if failure is None:
            rows = _read_rows(upload, config)
    mode = _row_mode(creating, None if creating else emu.store.get(domain, name), config)
    schedule = emu.schedule("create", name, uploaded=upload is not None, failure=failure)
    try:
        if creating:
            job_id = await _stored(
                emu, emu.store.create, domain, name, config, data, schedule, emu.config.owner, rows
            )
        else:
            job_id = await _stored(
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
    counts["created_ok"] = await _stored(emu, emu.store.successful_creates)
    return JSONResponse(counts)


async def control_rows(request: Request) -> Response:
    """``GET /_emulator/rows/{domain}/{name}``: the rows a lookup holds (for tests)."""
    emu = _emulator(request)
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

_TEMPLATE = re.compile(r"^/lookup-api/lookup/[^/]+(/[^/]+(/job(/[^/]+)?|/(deploy-[a-z-]+))?)?$")


def route_template(method: str, path: str) -> str:
    """``GET /lookup/{domain}``-style names for request counting."""
    match = _TEMPLATE.match(path)
    if not match:
        return f"{method} {path}"
    template = "/lookup/{domain}"
    if match.group(1):
        template += "/{name}"
        if match.group(4):
            template += "/" + match.group(4)
        elif match.group(2):
            template += "/job" + ("/{id}" if match.group(3) else "")
    return f"{method} {template}"


class FaultInjector:
    """ASGI middleware: counts requests to the API and injects the configured faults."""

    def __init__(self, app: Starlette, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        emu = self.emulator
        cfg = emu.config
        template = route_template(scope["method"], path)
        emu.stats.routes[template] += 1
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit():
            emu.stats.bytes_in[template] += int(length)
        if emu.store.due():  # a read, like the handlers' own
            await _stored(emu, emu.store.settle)
        if cfg.added_latency:
            await asyncio.sleep(cfg.added_latency)
        roll = emu.random.random()
        if roll < cfg.rate_429:
            emu.stats.faults["429"] += 1
            await _respond(
                send,
                429,
                {"code": 429, "msg": "Too many requests"},
                [(b"retry-after", str(cfg.retry_after).encode())],
            )
            return
        roll -= cfg.rate_429
        if roll < cfg.rate_5xx:
            emu.stats.faults["503"] += 1
            await _respond(send, 503, {"code": 503, "msg": "Service temporarily unavailable"})
            return
        roll -= cfg.rate_5xx
        if roll < cfg.rate_drop:
            after = emu.random.random() < 0.5
            emu.stats.faults["drop-after" if after else "drop-before"] += 1
            if after:  # the request takes effect, the answer is lost: the dangerous case
                await self.app(scope, receive, _swallow)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            raise DroppedConnection()
        await self.app(scope, receive, send)


async def _swallow(message: Message) -> None:
    return None


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
        Route("/_emulator/rows/{domain}/{name}", control_rows, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = emulator
    return FaultInjector(app, emulator)
