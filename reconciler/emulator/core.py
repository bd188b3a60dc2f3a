"""The emulator's state shared by its routes and its fault layer: the store, the knobs, the request
counts and a seeded random, with what the routes need of them (authorising a request, masking
secrets in echoes, running store work off the event loop)."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import hmac
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.emulator.config import EmulatorConfig, Grant
from reconciler.emulator.derive import MASK
from reconciler.emulator.habits import echo_config, echo_metadata
from reconciler.emulator.store import LookupRow, Schedule, Store, iso_millis
from reconciler.emulator.values import TYPES, key_indexes, query_columns

PREFIX = "/lookup-api"


DEPLOY_ENDPOINTS = (
    "deploy-config",
    "deploy-csv",
    "deploy-static-query",
    "deploy-periodic-query",
    "deploy-sliding-window-query",
)


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
            "lastStatus": None
            if self.config.deploy_config_null
            else (latest or {}).get(row.last_job or "")
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


_T = TypeVar("_T")


async def stored(emu: Emulator, call: Callable[..., _T], *args: Any) -> _T:
    """A store call that writes (or waits for writers): from a worker thread when the database is
    a file (another process may hold its write lock for a while, and the loop must go on
    serving), inline when it is in memory (its lock is held for microseconds, less than a thread
    hop costs)."""
    if emu.store.in_memory:
        return call(*args)
    return await run_in_threadpool(call, *args)


async def settle_due(emu: Emulator) -> None:
    """Apply the ends of the jobs that have ended (``Store.settle``), if any: the check is a read,
    so a request with nothing to apply takes no thread hop for it."""
    if emu.store.due():
        await stored(emu, emu.store.settle)
