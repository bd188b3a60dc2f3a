"""How requests travel: the path of a lookup, the domain a path is about, one transport (and
connection pool, through the environment's proxy) per endpoint, the router that sends each
domain's requests to its own endpoint, and the CSV file as it is uploaded."""

from __future__ import annotations

import os
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed

import httpx

from reconciler.errors import SettingsError


def lookup_path(domain: str, name: str | None = None, *rest: str) -> str:
    """``/lookup/{domain}/{name}/...`` with every segment percent-encoded."""
    parts = ["lookup", quote(domain, safe="")]
    if name is not None:
        parts.append(quote(name, safe=""))
    parts.extend(rest)
    return "/" + "/".join(parts)


def domain_of(path: str, base_path: str = "") -> str | None:
    """The domain a Lookups API path is about (``{base}/lookup/{domain}/...``), or None.

    Read after the endpoint's own path, so an endpoint whose path holds ``lookup`` cannot make
    another segment pass for the domain (and pick another domain's credential).
    """
    base = base_path.rstrip("/")
    if not path.startswith(base + "/"):
        return None
    parts = path[len(base) :].split("/")
    if len(parts) >= 3 and parts[1] == "lookup" and parts[2]:
        return unquote(parts[2])
    return None


def endpoint_transport(
    url: str, limits: httpx.Limits, env: Mapping[str, str] | None = None
) -> httpx.AsyncBaseTransport:
    """The HTTP transport (and so the connection pool) of one endpoint, through the proxy the
    environment names for it (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, minus ``NO_PROXY``).

    httpx reads those variables only for a client that builds its own transport; the router
    builds them, so it reads them here. Certificates are verified for https only (with the CA
    bundle httpx chooses: ``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's): such an SSL
    context costs ~70 ms to build, and plain-http endpoints (a loopback emulator) never use one.
    Redirects are not followed, so http stays http. The pool runs on asyncio directly
    (``reconciler.client._network``); a proxy other than http(s) (``socks5://``) is left to
    httpx's own transport, which needs the ``socksio`` package for it.
    """
    from reconciler.client._network import EndpointTransport

    target = httpx.URL(url)
    found = _proxies(os.environ if env is None else env)
    bypassed = bool(found.get("no")) and proxy_bypass_environment(target.host, found)
    proxy = None if bypassed else found.get(target.scheme) or found.get("all")
    if proxy is not None and not proxy.lower().startswith(("http://", "https://")):
        return httpx.AsyncHTTPTransport(verify=target.scheme != "http", limits=limits, proxy=proxy)
    context = None
    if target.scheme != "http":
        try:
            context = httpx.create_ssl_context(verify=True)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"the CA certificates for {target.scheme}://{target.host} cannot be loaded "
                f"({type(exc).__name__})",
                hint="SSL_CERT_FILE / SSL_CERT_DIR name a file or folder without readable "
                "PEM certificates: fix or unset them",
            ) from exc
    return EndpointTransport(ssl_context=context, limits=limits, proxy=proxy)


def _proxies(env: Mapping[str, str]) -> dict[str, str]:
    """The ``*_proxy`` variables by scheme (``https``, ``http``, ``all``, ``no``); lower case wins.

    As ``urllib.request.getproxies_environment`` reads them, from a given environment (it reads
    only the process's); ``NO_PROXY`` is then applied by urllib's own
    ``proxy_bypass_environment``."""
    found: dict[str, str] = {}
    for name in sorted(env, key=lambda n: n.islower()):  # upper case first, lower case over it
        if env[name] and name.lower().endswith("_proxy"):
            found[name.lower()[: -len("_proxy")]] = env[name]
    return found


class Router(httpx.AsyncBaseTransport):
    """Sends each request to its domain's own endpoint when the domain has one (a Domain's
    ``url``/``region``), else to the run's; one transport, so one connection pool, per endpoint."""

    def __init__(
        self,
        default: httpx.AsyncBaseTransport,
        base_url: str,
        make: Callable[[str], httpx.AsyncBaseTransport],
    ) -> None:
        self.default = default
        self.base_path = httpx.URL(base_url).path.rstrip("/")
        self.endpoints: dict[str, str] = {}  # domain → base URL
        self.transports: dict[str, httpx.AsyncBaseTransport] = {}  # base URL → transport
        self.make = make

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        domain = domain_of(request.url.path, self.base_path)
        endpoint = self.endpoints.get(domain) if domain else None
        if endpoint is None:
            return await self.default.handle_async_request(request)
        suffix = request.url.raw_path.decode()[len(self.base_path) :]
        request.url = httpx.URL(endpoint.rstrip("/") + suffix)
        request.headers["Host"] = request.url.netloc.decode()
        if endpoint not in self.transports:
            self.transports[endpoint] = self.make(endpoint)
        return await self.transports[endpoint].handle_async_request(request)

    async def aclose(self) -> None:
        await self.default.aclose()
        for transport in self.transports.values():
            await transport.aclose()


class WithoutBom:
    """A CSV file opened for upload without its UTF-8 byte order mark, if it has one.

    Excel starts every CSV with one; Devo would read it as part of the first header name. The
    offsets it shows start after the mark, so httpx's ``seek(0)`` before each (re-)read of a
    multipart body and its length measurement (``seek(0, 2)``) see the file as uploaded.
    """

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._skip = 3 if self._file.read(3) == b"\xef\xbb\xbf" else 0
        self._file.seek(self._skip)
        self.name = path.name

    def read(self, size: int = -1) -> bytes:
        """Bytes from the current position."""
        return self._file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Seek as in a file that has no mark."""
        if whence == 0:
            offset += self._skip
        return self._file.seek(offset, whence) - self._skip

    def tell(self) -> int:
        """The position, counted without the mark."""
        return self._file.tell() - self._skip

    def close(self) -> None:
        """Close the file."""
        self._file.close()


__all__ = ["Router", "WithoutBom", "domain_of", "endpoint_transport", "lookup_path"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter inside a total time budget: the whole life of one
    request, its retries and the waits between them (``--timeout``, default 60 s)."""

    budget: float = 60.0
    base: float = 0.2
    cap: float = 10.0
    max_in_flight: int = 16

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base × 2^attempt)]."""
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))
