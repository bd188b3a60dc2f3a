"""The client's network layer: httpcore's connection pool on plain asyncio streams.

httpx sends through httpcore, whose default network backend goes through anyio. For every request
the pool asks each idle connection whether its socket turned readable (the server closed it),
and anyio answers through its typed-attribute lookup, a ``getpeername`` and a ``poll`` per
connection; with anyio's own locking and timeouts around every read and write, that is about a
third of the client's CPU per request (0.33 ms of 1.1 ms, measured against the emulator on
loopback). The network backend is httpcore's documented extension point: this one speaks asyncio
directly, and knows a connection was closed by the server from its stream, at no cost.

``EndpointTransport`` is the httpx transport over such a pool (directly, or through an HTTP(S)
proxy with ``CONNECT`` for https), mapping httpcore's errors to httpx's as httpx's own transport
does, so everything above it sees the same exceptions.

The pool assigns requests to connections the way httpcore's does, in linear time: httpcore
1.0.x counts the pool's connections by asking every one whether it is idle, once per idle
connection, each time a request comes or goes (16 connections: 256 calls, twice per request).
That was 16% of the event loop's time applying 500 changes (py-spy); assigned in one pass, the
run takes 1.56 s instead of 1.64 s (medians of 10 alternating runs). Only for the httpcore
releases it is tested against (``LINEAR_POOL_FOR``; a property test compares both ways on random
pools); any other gets httpcore's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpcore
import httpx

# httpcore's errors → httpx's (the most specific first: a ConnectTimeout is a TimeoutException).
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


@contextlib.contextmanager
def _raising(timeout: type[Exception], broken: type[Exception]) -> Iterator[None]:
    """asyncio's and the OS's errors as the httpcore error of the operation (cause kept: the
    client tells "connection refused" from its chain)."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
        raise broken(str(exc) or type(exc).__name__) from exc


# Written bytes are held until this many are waiting, or until the answer is read.
_COALESCE = 64 * 1024


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection, as an asyncio stream pair.

    httpcore writes a request's head and its body separately; each write is a system call and,
    with Nagle off (as it must be for requests this small), a packet of its own. What is written
    is held until the answer is read (or 64 KiB wait), so a request leaves in one piece: a POST
    costs one ``send`` instead of two, which on this machine's loopback was 0.28 ms each."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._held: list[bytes] = []
        self._held_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._held:
            await self._flush(timeout)
        with _raising(httpcore.ReadTimeout, httpcore.ReadError):
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._held.append(buffer)
        self._held_bytes += len(buffer)
        if self._held_bytes >= _COALESCE:
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        with _raising(httpcore.WriteTimeout, httpcore.WriteError):
            async with asyncio.timeout(timeout):
                self._writer.write(data)
                await self._writer.drain()

    async def aclose(self) -> None:
        # As httpcore's own backend closes: no waiting for the peer (a TLS close_notify it never
        # answers would hold every closing connection, and closing happens inside requests too).
        self._writer.close()
        await asyncio.sleep(0)
        self._writer.transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._held:
            await self._flush(timeout)
        with _raising(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
            except BaseException:
                self._writer.close()
                raise
        return self  # the same stream pair, now over TLS (asyncio's start_tls upgrades it)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle in the pool, a connection has nothing to read unless the server closed it
            # (or broke the protocol): asyncio already read that end, so the stream knows.
            return (
                self._reader.at_eof()
                or self._reader.exception() is not None
                or self._writer.transport.is_closing()
            )
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens connections for httpcore with asyncio."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _raising(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None
                )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Requests are small and written whole: do not hold them back (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        with _raising(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    """An answer's body as httpx reads it, with httpcore's errors mapped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        with _mapped():
            await self._stream.aclose()


#: The httpcore releases whose pool internals ``_assigned`` was written and tested against.
LINEAR_POOL_FOR = frozenset({"1.0.7", "1.0.8", "1.0.9"})


def _assigned(pool: httpcore.AsyncConnectionPool) -> list[httpcore.AsyncConnectionInterface]:
    """httpcore's ``_assign_requests_to_connections``, in one pass over the connections.

    Drops closed connections, closes expired ones and idle ones beyond the keep-alive limit,
    then gives each queued request the first available connection for its origin, else a new
    one (closing the first idle connection when the pool is full). Returns the connections to
    close, as httpcore's does.
    """
    connections = pool._connections
    closing = []
    for connection in list(connections):
        if connection.is_closed():
            connections.remove(connection)
        elif connection.has_expired() or (
            # httpcore compares the count of all connections (it builds a list of every
            # connection's is_idle() to take its length) with the keep-alive limit.
            connection.is_idle() and len(connections) > pool._max_keepalive_connections
        ):
            connections.remove(connection)
            closing.append(connection)
    for waiting in [request for request in pool._requests if request.is_queued()]:
        origin = waiting.request.url.origin
        available = next(
            (c for c in connections if c.can_handle_request(origin) and c.is_available()), None
        )
        if available is None and len(connections) >= pool._max_connections:
            idle = next((c for c in connections if c.is_idle()), None)
            if idle is None:
                continue  # stays queued until a connection frees
            connections.remove(idle)
            closing.append(idle)
        if available is None:
            available = pool.create_connection(origin)
            connections.append(available)
        waiting.assign_to_connection(available)
    return closing


class _LinearPool(httpcore.AsyncConnectionPool):
    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        return _assigned(self)


class _LinearProxy(httpcore.AsyncHTTPProxy):
    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        return _assigned(self)


def _pool_classes() -> tuple[type[httpcore.AsyncConnectionPool], type[httpcore.AsyncHTTPProxy]]:
    if httpcore.__version__ in LINEAR_POOL_FOR:
        return _LinearPool, _LinearProxy
    return httpcore.AsyncConnectionPool, httpcore.AsyncHTTPProxy


class EndpointTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one httpcore connection pool on ``AsyncioBackend``: straight to
    the endpoint, or through an HTTP(S) proxy (``proxy``)."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None, limits: httpx.Limits, proxy: str | None
    ) -> None:
        shared: dict[str, Any] = {
            "ssl_context": ssl_context,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "network_backend": AsyncioBackend(),
        }
        self.pool: httpcore.AsyncConnectionPool
        pool, proxied = _pool_classes()
        if proxy is None:
            self.pool = pool(**shared)
        else:
            via = httpx.Proxy(proxy)
            self.pool = proxied(
                proxy_url=httpcore.URL(
                    scheme=via.url.raw_scheme,
                    host=via.url.raw_host,
                    port=via.url.port,
                    target=via.url.raw_path,
                ),
                proxy_auth=via.raw_auth,
                proxy_headers=via.headers.raw,
                proxy_ssl_context=via.ssl_context,
                **shared,
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("an async transport sends async request bodies only")
        sent = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            answer = await self.pool.handle_async_request(sent)
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()


__all__ = ["AsyncioBackend", "AsyncioStream", "EndpointTransport"]
