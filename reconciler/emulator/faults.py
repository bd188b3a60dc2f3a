"""Faults on the wire: the ASGI wrapper that drops connections, delays answers and answers with
errors as the knobs say, and the route templates it (and the request counts) are keyed by."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from starlette.applications import Starlette

from reconciler.emulator.core import PREFIX, Emulator, settle_due

Scope = MutableMapping[str, Any]


Message = MutableMapping[str, Any]


Receive = Callable[[], Awaitable[Message]]


Send = Callable[[Message], Awaitable[None]]


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised by the fault injector to cut a connection: uvicorn closes the socket, and an in-process
    ``httpx.ASGITransport`` hands the same transport error to the client."""

    def __init__(self) -> None:
        super().__init__("emulator dropped the connection (injected fault)")


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
        await settle_due(emu)
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
