"""The client's network layer against real sockets: TLS verified against the CA bundle, https
through a CONNECT proxy, plain http through a proxy, a keep-alive connection the server closed,
a server that never answers. Servers here are raw asyncio servers on loopback, so what is
tested is the bytes on the wire, not an emulator's manners."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.client import LookupReader
from reconciler.client._network import EndpointTransport
from reconciler.client._transport import RetryPolicy
from reconciler.errors import SettingsError
from reconciler.settings import Settings

pytestmark = pytest.mark.anyio

LISTING = json.dumps({"code": 200, "lookups": [], "nextPageToken": -1}).encode()


def _answer(body: bytes = LISTING, *, close: bool = False) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, key) files."""
    # Imported here: ~0.1 CPU-s that every xdist worker paid at collection, for one test.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reconciler test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _server(handle: Handler, context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback server running ``handle`` per connection; yields its port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _head(reader: asyncio.StreamReader) -> list[str]:
    """A request's head, as lines (empty at the end of the stream)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return []
    return raw.decode("latin-1").split("\r\n")[:-2]


def _listing_server(seen: list[str], *, close_after: bool = False) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append("connection")
        while head := await _head(reader):
            seen.append(head[0])
            writer.write(_answer())
            await writer.drain()
            if close_after:  # keep-alive announced, then closed while the client is idle
                break
        writer.close()

    return handle


def _tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _reader(url: str) -> LookupReader:
    return LookupReader(Settings(url), retry=RetryPolicy(budget=2.0), on_retry=None)


async def test_https_is_verified_against_the_ca_bundle_httpx_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _certificate(tmp_path)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen: list[str] = []
    async with _server(_listing_server(seen), _tls(cert, key)) as port:
        url = f"https://127.0.0.1:{port}/lookup-api"
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with _reader(url) as reader:
            assert await reader.all_lookups("acme") == []
        assert seen[1].startswith("GET /lookup-api/lookup/acme")
        # Not trusted (a bundle of another certificate): nothing is sent over the connection.
        (tmp_path / "other").mkdir()
        monkeypatch.setenv("SSL_CERT_FILE", str(_certificate(tmp_path / "other")[0]))
        seen.clear()
        async with _reader(url) as reader:
            with pytest.raises(SettingsError) as raised:
                await reader.all_lookups("acme")
        # Said at once, not retried for the whole budget: no retry makes a certificate trusted.
        assert raised.value.message == (
            f"GET {url}/lookup/acme: the server's certificate is not trusted"
        )
        assert "SSL_CERT_FILE" in (raised.value.hint or "")
        assert seen == []  # the handshake failed: no request reached the server


async def test_https_goes_through_a_connect_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _certificate(tmp_path)
    seen: list[str] = []
    asked: list[str] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head(reader)
        asked.append(head[0])
        host, port = head[0].split()[1].rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async with (
        _server(_listing_server(seen), _tls(cert, key)) as port,
        _server(tunnel) as proxy_port,
    ):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy_port}")
        for name in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with _reader(f"https://127.0.0.1:{port}/lookup-api") as reader:
            assert await reader.all_lookups("acme") == []
            assert await reader.all_lookups("beta") == []  # the same tunnel, kept alive
    assert asked == [f"CONNECT 127.0.0.1:{port} HTTP/1.1"]
    assert [line.split("?")[0] for line in seen[1:]] == [
        "GET /lookup-api/lookup/acme",
        "GET /lookup-api/lookup/beta",
    ]


async def test_plain_http_through_a_proxy_names_the_whole_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await _head(reader):
            asked.append(head[0])
            writer.write(_answer())
            await writer.drain()
        writer.close()

    async with _server(proxy) as proxy_port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        async with _reader("http://devo.example:8080/lookup-api") as reader:
            assert await reader.all_lookups("acme") == []
    assert asked[0].startswith("GET http://devo.example:8080/lookup-api/lookup/acme?")


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    # The pool asks each idle connection whether the server closed it; a wrong "no" sends the
    # next request into a closed socket (RemoteProtocolError, and a retry for the client).
    seen: list[str] = []
    async with _server(_listing_server(seen, close_after=True)) as port:
        transport = EndpointTransport(ssl_context=None, limits=httpx.Limits(), proxy=None)
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                answer = await client.get(f"http://127.0.0.1:{port}/lookup-api/lookup/acme")
                assert answer.status_code == 200 and answer.json()["lookups"] == []
                await asyncio.sleep(0.05)  # the server's close reaches the client
    assert seen.count("connection") == 3


@pytest.mark.waits
async def test_a_server_that_never_answers_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head(reader)
        await asyncio.sleep(5)
        writer.close()

    async with _server(silent) as port:
        transport = EndpointTransport(ssl_context=None, limits=httpx.Limits(), proxy=None)
        async with httpx.AsyncClient(transport=transport, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"http://127.0.0.1:{port}/")


async def test_a_refused_connection_is_a_connect_error_that_says_so() -> None:
    from reconciler.client._answers import transport_reason
    from reconciler.emulator import free_port

    transport = EndpointTransport(ssl_context=None, limits=httpx.Limits(), proxy=None)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError) as raised:
            await client.get(f"http://127.0.0.1:{free_port('127.0.0.1')}/")
    assert transport_reason(raised.value) == "connection refused"


def test_a_socks_proxy_is_left_to_httpx() -> None:
    from reconciler.client._transport import endpoint_transport

    chosen: Any = None
    try:
        chosen = endpoint_transport(
            "https://api-eu.devo.com/lookup-api", httpx.Limits(), {"ALL_PROXY": "socks5://p:1"}
        )
    except ImportError as exc:  # httpx's own word: socksio is not installed
        assert "socksio" in str(exc)
    else:
        assert isinstance(chosen, httpx.AsyncHTTPTransport)


def test_a_ca_bundle_that_cannot_be_read_is_an_error_naming_the_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty.pem").write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "empty.pem"))
    with pytest.raises(SettingsError) as raised:
        _reader("https://api-eu.devo.com/lookup-api")
    assert raised.value.message == (
        "the CA certificates for https://api-eu.devo.com cannot be loaded (SSLError)"
    )
    assert "SSL_CERT_FILE" in (raised.value.hint or "")


async def test_a_request_leaves_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpcore writes a request's head and body separately: two system calls and, with Nagle
    # off, two packets. They are held until the answer is read.
    arrived: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        arrived.append(head + await reader.readexactly(length))
        writer.transport.write(_answer())  # not through StreamWriter.write: only the client's count
        writer.close()

    writes: list[int] = []
    real_write = asyncio.StreamWriter.write

    def counted(self: asyncio.StreamWriter, data: Any) -> None:
        writes.append(len(data))
        real_write(self, data)

    async with _server(handle) as port:
        transport = EndpointTransport(ssl_context=None, limits=httpx.Limits(), proxy=None)
        async with httpx.AsyncClient(transport=transport) as client:
            monkeypatch.setattr(asyncio.StreamWriter, "write", counted)
            answer = await client.post(f"http://127.0.0.1:{port}/x", json={"query": "q" * 100})
    assert answer.status_code == 200
    assert writes == [len(arrived[0])]
    assert arrived[0].endswith(b'"' + b"q" * 100 + b'"}')


async def test_a_large_body_is_not_held_whole() -> None:
    received: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        received.append(len(await reader.readexactly(length)))
        writer.write(_answer())
        await writer.drain()
        writer.close()

    async with _server(handle) as port:
        transport = EndpointTransport(ssl_context=None, limits=httpx.Limits(), proxy=None)
        async with httpx.AsyncClient(transport=transport) as client:
            body = b"x" * (3 * 1024 * 1024)
            answer = await client.post(f"http://127.0.0.1:{port}/x", content=body)
    assert answer.status_code == 200 and received == [len(body)]


# --- the pool's linear assignment ---------------------------------------------------------------


class _FakeConnection:
    """A connection as the pool sees it: its state, answered without any I/O."""

    def __init__(self, label: str, origin: Any, state: tuple[bool, bool, bool, bool]) -> None:
        self.label, self.origin = label, origin
        self.closed, self.expired, self.idle, self.available = state

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available

    def can_handle_request(self, origin: Any) -> bool:
        return bool(origin == self.origin)


_STATES = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())


@given(
    connections=st.lists(st.tuples(st.integers(0, 2), _STATES), max_size=12),
    requests=st.lists(st.tuples(st.integers(0, 2), st.integers(-1, 11)), max_size=12),
    max_connections=st.integers(1, 12),
    max_keepalive=st.integers(0, 12),
)
def test_the_linear_pool_assigns_as_httpcores_own(
    connections: list[tuple[int, tuple[bool, bool, bool, bool]]],
    requests: list[tuple[int, int]],
    max_connections: int,
    max_keepalive: int,
) -> None:
    """On any pool (connections closed, expired, idle or busy, for three origins; requests
    queued or served), the linear assignment drops, closes, reuses and creates exactly the
    connections httpcore's own assignment does, and gives each request the same one."""
    import httpcore
    from httpcore._async.connection_pool import AsyncPoolRequest

    from reconciler.client._network import _assigned

    origins = [httpcore.URL(f"http://host{i}.test/").origin for i in range(3)]

    def pool() -> httpcore.AsyncConnectionPool:
        made = httpcore.AsyncConnectionPool(
            max_connections=max_connections, max_keepalive_connections=max_keepalive
        )
        made._connections = [
            _FakeConnection(f"c{i}", origins[o], state)  # type: ignore[misc]
            for i, (o, state) in enumerate(connections)
        ]
        made._requests = []
        for o, served_by in requests:
            request = AsyncPoolRequest(httpcore.Request("GET", f"http://host{o}.test/"))
            if 0 <= served_by < len(made._connections):
                request.connection = made._connections[served_by]
            made._requests.append(request)
        count = iter(range(100))
        made.create_connection = lambda origin: _FakeConnection(  # type: ignore[method-assign]
            f"new{next(count)}", origin, (False, False, False, False)
        )
        return made

    def outcome(made: httpcore.AsyncConnectionPool, closing: list[Any]) -> Any:
        return (
            [c.label for c in made._connections],  # type: ignore[attr-defined]
            [c.label for c in closing],
            [(r.connection.label if r.connection else None) for r in made._requests],  # type: ignore[attr-defined]
        )

    async def both() -> tuple[Any, Any]:  # a request's "connection acquired" event wants a loop
        theirs = pool()
        expected = outcome(
            theirs, httpcore.AsyncConnectionPool._assign_requests_to_connections(theirs)
        )
        ours = pool()
        return outcome(ours, _assigned(ours)), expected

    got, expected = asyncio.run(both())
    assert got == expected


def test_the_linear_pool_is_used_only_with_the_httpcore_it_was_tested_against() -> None:
    import httpcore

    from reconciler.client._network import LINEAR_POOL_FOR, _LinearPool, _LinearProxy

    # A new httpcore release fails this: read its pool's assignment again, then add it.
    assert httpcore.__version__ in LINEAR_POOL_FOR
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    direct = EndpointTransport(ssl_context=None, limits=limits, proxy=None)
    proxied = EndpointTransport(ssl_context=None, limits=limits, proxy="http://proxy.test:3128")
    assert type(direct.pool) is _LinearPool and type(proxied.pool) is _LinearProxy
