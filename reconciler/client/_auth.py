"""The credential on every request: the request's domain's own (a Domain's ``auth``), else the
run's, and none at all on an endpoint a spec chose without naming its own credential. Signed
requests are signed over the exact bytes sent."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

import httpx

from reconciler.client._transport import domain_of
from reconciler.settings import REGIONS, Credentials, region_url

_REGION_ENDPOINTS = frozenset(region_url(region) for region in REGIONS)


class RequestAuth:
    """Adds the credential of the request's domain (a Domain's own, else the run's) to every
    request; signs the exact bytes sent. The client calls ``sign`` on each request it builds."""

    def __init__(
        self, credentials: Credentials, clock: Callable[[], float], base_path: str
    ) -> None:
        self.credentials = credentials
        self.by_domain: dict[str, Credentials] = {}
        self.clock = clock
        self.base_path = base_path
        self.endpoints: Mapping[str, str] = {}  # the router's: domains with their own endpoint

    def _runs_endpoint(self, domain: str) -> bool:
        """True when ``domain``'s requests go to the run's endpoint, or to one of Devo's regional
        endpoints (never a host a spec chose)."""
        endpoint = self.endpoints.get(domain)
        return endpoint is None or endpoint in _REGION_ENDPOINTS

    def sign(self, request: httpx.Request) -> None:
        """Put the credential of the request's domain on ``request``."""
        domain = domain_of(request.url.path, self.base_path)
        creds = self.by_domain.get(domain, self.credentials) if domain else self.credentials
        if domain and domain not in self.by_domain and not self._runs_endpoint(domain):
            # A Domain's own url without its own auth (validation refuses it; this holds even
            # if a caller skipped it): the run's credential goes only to the run's endpoint.
            creds = Credentials()
        if creds.token:
            if creds.scheme == "standalone":
                request.headers["standAloneToken"] = creds.token.get_secret_value()
            else:
                request.headers["Authorization"] = f"Bearer {creds.token.get_secret_value()}"
        elif creds.signed and creds.api_key and creds.api_secret:
            timestamp = str(int(self.clock() * 1000))
            mac = hmac.new(creds.api_secret.get_secret_value().encode(), digestmod=hashlib.sha256)
            mac.update(creds.api_key.get_secret_value().encode())
            # Multipart streams are re-iterable: hash them chunk by chunk, never whole in memory.
            if isinstance(request.stream, httpx.SyncByteStream):
                for chunk in request.stream:
                    mac.update(chunk)
            else:
                mac.update(request.content)
            mac.update(timestamp.encode())
            request.headers["x-logtrust-apikey"] = creds.api_key.get_secret_value()
            request.headers["x-logtrust-timestamp"] = timestamp
            request.headers["x-logtrust-sign"] = mac.hexdigest()


__all__ = ["RequestAuth"]
