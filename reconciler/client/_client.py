"""The async Lookups API client: the only code that speaks HTTP to Devo (or to the emulator).

``LookupReader`` has only read calls (``drift`` gets one, so it cannot write by construction);
``LookupClient`` adds deploys and deletes. Both share ``_send``, which authenticates every request,
limits requests in flight, retries 429/502/503/504 and connection errors with full-jitter backoff
within a total budget (honouring ``Retry-After``), and translates every httpx error and error status
into the ``reconciler.errors`` tree. A POST is never re-sent blindly: after an ambiguous failure the
client first checks whether the lookup now exists, so a retry can never create twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from reconciler import __version__
from reconciler.client._answers import (
    json_of,
    redirected,
    retry_after,
    secret_values,
    server_message,
    stderr_line,
    transport_reason,
    untrusted,
)
from reconciler.client._auth import RequestAuth
from reconciler.client._jobs import JobLatency, JobResult, PollPolicy, wait_for_job
from reconciler.client._models import (
    CreationResponse,
    DeletionResponse,
    DeployResult,
    JobIds,
    JobStatus,
    JobStatuses,
    LookupList,
    LookupMeta,
    LookupOne,
)
from reconciler.client._transport import (
    RetryPolicy,
    Router,
    WithoutBom,
    endpoint_transport,
    lookup_path,
)
from reconciler.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    ReconcilerError,
    ServerError,
    SettingsError,
    TransportError,
    redact,
)
from reconciler.settings import Credentials, Settings

log = logging.getLogger("reconciler.client")
M = TypeVar("M", bound=BaseModel)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
PAGE_SIZE = 1000


#: The largest response body read (CONTRACT: "Response bodies over 64 MiB are an error"). The
#: largest legitimate answer, a page of 1,000 lookups with their configs, is a few MiB.
MAX_BODY_BYTES = 64 * 1024 * 1024


class LookupReader:
    """Read-only access to the Lookups API: list, get, jobs. It has no method that writes."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        timeout: float | None = None,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        on_retry: Callable[[str], None] | None = stderr_line,
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy(budget=settings.timeout)
        self._on_retry = on_retry
        self._sleep = sleep or asyncio.sleep
        self._clock = clock
        self.latency = JobLatency()  # how long jobs took, per kind and domain, in this client
        self._rng = rng or random.Random()
        self._limit = asyncio.Semaphore(self.retry.max_in_flight)
        # Every secret this client knows: its credential, and S3 keys it has sent in a body. Whatever
        # the service says back (errors, job messages) is redacted against all of them.
        self._secrets = list(settings.credentials.secrets())
        self.requests = 0
        self._targets: dict[tuple[str, tuple[tuple[str, Any], ...]], httpx.URL] = {}
        base_url = settings.base_url or "http://emulator.embedded/lookup-api"
        if transport is None and settings.embedded:
            # The client never builds the emulator itself (it must not import it): the caller
            # passes reconciler.connect.transport_for(settings).
            raise ValueError("settings name the embedded emulator: pass its transport")
        self._auth = RequestAuth(settings.credentials, wall_clock, httpx.URL(base_url).path)
        in_flight = self.retry.max_in_flight
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        given = dict(transports or {})  # tests: another emulator in-process behind a URL
        # The router is the client's only transport: it sends each request to its domain's
        # endpoint, one transport (one pool, the environment's proxy) per endpoint.
        self._router = Router(
            transport or endpoint_transport(base_url, limits),
            base_url,
            lambda url: given.get(url) or endpoint_transport(url, limits),
        )
        self._auth.endpoints = self._router.endpoints
        # It builds the requests (base URL, headers, bodies, timeouts) and closes the router;
        # _exchange signs each one and hands it to the router itself, so redirects, cookies and
        # httpx auth flows never come into it.
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=self._router,
            timeout=httpx.Timeout(
                timeout or self.retry.budget, connect=min(10.0, self.retry.budget)
            ),
            headers={"Accept": "application/json", "User-Agent": f"reconciler/{__version__}"},
        )

    def use_domain_endpoints(self, endpoints: Mapping[str, str]) -> None:
        """Domains with their own endpoint (a Domain's ``url`` or ``region``)."""
        self._router.endpoints.update(endpoints)

    def use_domain_credentials(self, credentials: dict[str, Credentials]) -> None:
        """Domains with their own credential: their requests carry it and no other one."""
        self._auth.by_domain.update(credentials)
        for one in credentials.values():
            self._secrets.extend(s for s in one.secrets() if s not in self._secrets)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    # --- the one request path -------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._http.base_url}".rstrip("/") + path

    def _target(self, path: str, params: dict[str, Any] | None) -> httpx.URL:
        """The absolute URL of ``path`` with ``params``, parsed once per client.

        Given a string, httpx parses it, merges it with the base URL and parses the result again on
        every request (60-80 µs, a fifth of a request to the in-process emulator); a job's polls
        and a domain's listing pages ask for the same few URLs over and over."""
        key = (path, tuple(params.items()) if params else ())
        url = self._targets.get(key)
        if url is None:
            if len(self._targets) >= 4096:  # bounded: one apply may touch 10,000s of lookups
                self._targets.clear()
            url = self._targets[key] = httpx.URL(self._url(path), params=params)
        return url

    def _error(
        self, response: httpx.Response, method: str, path: str, sent: tuple[str, ...] = ()
    ) -> ApiError:
        status = response.status_code
        message = redact(server_message(response), [*self._secrets, *sent])
        url = self._url(path)
        text = f"{method} {url}: {status} {response.reason_phrase}: {message}"

        def build(cls: type[ApiError], hint: str | None = None) -> ApiError:
            return cls(
                text, method=method, url=url, status=status, server_message=message, hint=hint
            )

        if status == 400:
            return build(BadRequestError, "the request body was refused; check the spec")
        if status in (401, 403):
            used = self.settings.credentials.describe()
            if status == 401:
                hint = f"used {used}; set DEVO_TOKEN (or --token-file), or DEVO_API_KEY and DEVO_API_SECRET"
            elif "domain" in message.lower() or "forbidden" in response.text.lower():
                hint = (
                    f"used {used}; this credential is not allowed in this domain: use one that is"
                )
            else:
                hint = (
                    f"used {used}; it is invalid or expired: renew it (or check DEVO_AUTH_SCHEME)"
                )
            return build(AuthError, hint)
        if status == 404:
            domain_missing = "domain" in message.lower()
            hint = "the domain does not exist or is not visible to this credential"
            error = NotFoundError(
                text,
                method=method,
                url=url,
                status=status,
                server_message=message,
                hint=hint if domain_missing else None,
            )
            error.missing = "domain" if domain_missing else "lookup"
            return error
        if status == 409:
            return build(ConflictError)
        if status == 429 or status >= 500:
            return build(ServerError, "the service kept failing; try again later")
        return build(ApiError)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        files: Callable[[], dict[str, Any]] | None = None,
        on_ambiguous: Callable[[], Awaitable[DeployResult | None]] | None = None,
        sent_secrets: tuple[str, ...] = (),
    ) -> httpx.Response | DeployResult:
        """Send one request with retries; see the module docstring for the rules.

        ``sent_secrets`` are values inside the body (S3 keys) to redact if the server echoes them.
        """
        deadline = self._clock() + self.retry.budget
        target = self._target(path, params)
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            failure: ReconcilerError
            try:
                async with self._limit:
                    self.requests += 1
                    started = self._clock()
                    kwargs: dict[str, Any] = {}
                    if files is not None:
                        kwargs["files"] = files()
                    elif json_body is not None:
                        kwargs["json"] = json_body
                    try:
                        # The deadline covers the whole answer: a server that trickles a byte
                        # every few seconds never trips httpx's per-read timeout.
                        async with asyncio.timeout(max(0.0, deadline - self._clock())):
                            response = await self._exchange(method, target, kwargs)
                    finally:
                        for part in (kwargs.get("files") or {}).values():
                            if hasattr(part[1], "close"):
                                part[1].close()
                    log.debug(
                        "%s %s -> %s (%.0f ms)",
                        method,
                        target,
                        response.status_code,
                        (self._clock() - started) * 1000,
                    )
            except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # The request could not even be written (a header with a newline, a bad URL):
                # retrying cannot help, and the network is not to blame.
                raise SettingsError(
                    f"{method} {self._url(path)}: the request could not be sent "
                    f"({type(exc).__name__})",
                    hint="check the endpoint URL and the credential (no spaces or line breaks "
                    f"inside it); used {self.settings.credentials.describe()}",
                ) from None
            except (httpx.TransportError, TimeoutError) as exc:
                log.debug("%s %s -> %s", method, self._url(path), type(exc).__name__)
                if untrusted(exc):  # no retry makes a certificate trusted
                    raise SettingsError(
                        f"{method} {self._url(path)}: the server's certificate is not trusted",
                        hint="behind a TLS-inspecting proxy, point SSL_CERT_FILE at its CA",
                    ) from None
                reason = (
                    f"no complete answer within the {self.retry.budget:g} s budget"
                    if isinstance(exc, TimeoutError)
                    else transport_reason(exc)
                )
                failure = TransportError(
                    f"{method} {self._url(path)}: no answer ({reason})",
                    method=method,
                    url=self._url(path),
                    hint=f"is {self.settings.describe_endpoint()} reachable? Each request, its "
                    f"retries included, has {self.retry.budget:g} s (--timeout, RECONCILER_TIMEOUT)",
                )
                failure.__cause__ = exc
                ambiguous = True
            else:
                if 300 <= response.status_code < 400:
                    raise redirected(response, method, self._url(path))
                if response.status_code not in RETRY_STATUSES:
                    if response.status_code >= 400:
                        raise self._error(response, method, path, sent_secrets)
                    return response
                reason = f"{response.status_code} {response.reason_phrase}"
                failure = self._error(response, method, path, sent_secrets)
                wait = retry_after(response)
                # A 429 was refused before any work; a 5xx may have happened after it.
                ambiguous = response.status_code != 429
            if ambiguous and on_ambiguous is not None:
                recovered = await on_ambiguous()
                if recovered is not None:
                    return recovered
            delay = max(wait or 0.0, self.retry.backoff(attempt, self._rng))
            left = deadline - self._clock()
            if delay >= left:
                raise failure
            if self._on_retry is not None:
                self._on_retry(
                    f"retrying in {delay:.1f} s: {reason} ({method} {path}), attempt "
                    f"{attempt + 1}, {left:.0f} s left of the {self.retry.budget:g} s budget"
                )
            await self._sleep(delay)

    async def _exchange(
        self, method: str, target: httpx.URL, kwargs: dict[str, Any]
    ) -> httpx.Response:
        """One request and its whole answer, whose body may not pass ``MAX_BODY_BYTES``.

        Built by the httpx client (headers, body, timeouts), signed, and handed to the router:
        httpx's ``send`` would add only what this client never uses (redirects, which are
        refused, cookies, which are not kept, hooks), at a sixth of a request's CPU."""
        request = self._http.build_request(method, target, **kwargs)
        self._auth.sign(request)
        response = await self._router.handle_async_request(request)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise self._too_large(method, target)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:  # decoded bytes: a gzip bomb stops here too
                    raise self._too_large(method, target)
                chunks.append(chunk)
        finally:
            await response.aclose()
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=b"".join(chunks),
            request=request,
            extensions=response.extensions,
        )

    def _too_large(self, method: str, target: httpx.URL) -> ApiError:
        url = self._url(target.path.removeprefix(self._http.base_url.path.rstrip("/")))
        return ApiError(
            f"{method} {url}: the answer is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB",
            method=method,
            url=url,
            status=0,
            hint="no Lookups API answer is that large: is the endpoint the Lookups API?",
        )

    async def _get(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> M:
        response = await self._send("GET", path, params=params)
        if not (isinstance(response, httpx.Response)):
            raise RuntimeError("invariant broken: isinstance(response, httpx.Response)")
        return self._parse(response, model, "GET", path)

    def _parse(self, response: httpx.Response, model: type[M], method: str, path: str) -> M:
        try:
            return model.model_validate(json_of(response))
        except (ValidationError, ValueError, RecursionError) as exc:
            raise ApiError(
                f"{method} {self._url(path)}: unexpected answer ({type(exc).__name__})",
                method=method,
                url=self._url(path),
                status=response.status_code,
                hint="the service answered in a shape the Lookups API does not document",
            ) from exc

    # --- reads ----------------------------------------------------------------------------

    async def list_lookups(
        self, domain: str, *, owner: str = "THIS_DOMAIN", page_size: int = PAGE_SIZE
    ) -> AsyncIterator[LookupMeta]:
        """Every lookup of ``domain`` (oldest first), following ``nextPageToken`` until -1."""
        token = 0
        seen_tokens: set[int] = set()
        while True:
            page = await self._get(
                lookup_path(domain),
                LookupList,
                {"max_length": page_size, "pageToken": token, "owner": owner},
            )
            for lookup in page.lookups:
                yield lookup
            next_token = page.nextPageToken
            if next_token is None or next_token < 0 or not page.lookups:
                return
            if next_token in seen_tokens or next_token == token:
                raise ApiError(
                    f"GET {self._url(lookup_path(domain))}: the server repeated pageToken "
                    f"{next_token}; stopped paging to avoid a loop",
                    method="GET",
                    url=self._url(lookup_path(domain)),
                    status=200,
                )
            seen_tokens.add(token)
            token = next_token

    async def all_lookups(self, domain: str) -> list[LookupMeta]:
        """``list_lookups`` collected into a list."""
        return [lookup async for lookup in self.list_lookups(domain)]

    async def get_lookup(self, domain: str, name: str) -> LookupMeta:
        """One lookup's metadata (``NotFoundError`` when absent)."""
        return (await self._get(lookup_path(domain, name), LookupOne)).lookupMetaInfo

    async def find_lookup(self, domain: str, name: str) -> LookupMeta | None:
        """One lookup's metadata, or None when it does not exist."""
        try:
            return await self.get_lookup(domain, name)
        except NotFoundError as exc:
            if exc.missing == "domain":
                raise
            return None

    async def job_ids(self, domain: str, name: str) -> list[str]:
        """The lookup's last job ids, oldest first."""
        return (await self._get(lookup_path(domain, name, "job"), JobIds)).jobs

    async def lookup_exists(self, domain: str, name: str) -> bool:
        """True when the lookup exists (its domain must)."""
        return await self.find_lookup(domain, name) is not None

    async def job_statuses(self, domain: str, name: str, job_id: str) -> list[JobStatus]:
        """One job's last statuses, oldest first, their messages redacted.

        An answer in an undocumented shape gives no statuses (the job counts as still running).
        """
        path = lookup_path(domain, name, "job", quote(job_id, safe=""))
        answer = await self._get(path, JobStatuses)
        if not answer.known_shape:
            log.debug("GET %s: no 'status' or 'jobs' list in the answer; still running", path)
        secrets = list(self._secrets)
        return [
            s.model_copy(update={"msg": redact(s.msg, secrets)}) if s.msg else s
            for s in answer.status
        ]

    async def wait_for_job(
        self,
        domain: str,
        name: str,
        job_id: str,
        *,
        timeout: float = 600.0,
        policy: PollPolicy | None = None,
        on_status: Callable[[JobStatus], None] | None = None,
        deleting: bool = False,
        kind: str | None = None,
        sent: float | None = None,
        answered: float | None = None,
        give_way: Callable[[], Awaitable[None]] | None = None,
    ) -> JobResult:
        """Poll a job until it is over (see ``reconciler.client._jobs`` for the rule).

        ``kind`` (the endpoint, or ``delete``): jobs of one kind and domain are alike, so the
        time the earlier ones of this client took (from ``sent``, when the request that started
        the job went out, to when it ended) schedules this one's first poll; ``answered``, when
        that request's answer came, helps tell when the job began (``give_way``: see
        ``wait_for_job``).
        """
        poll = functools.partial(wait_for_job, self, domain, name, job_id, policy=policy)
        return await self.latency.follow(
            lambda expected, waited, left: poll(
                timeout=left,
                on_status=on_status,
                sleep=self._sleep,
                clock=self._clock,
                deleting=deleting,
                expected=expected,
                waited=waited,
                give_way=give_way,
            ),
            f"{kind}@{domain}" if kind else None,
            timeout,
            self._clock,
            sent,
            answered,
        )


class LookupClient(LookupReader):
    """Read and write access: deploys (POST to create, PUT to update) and deletes."""

    async def deploy(
        self,
        method: str,
        endpoint: str,
        domain: str,
        name: str,
        body: dict[str, Any],
        *,
        csv_file: Path | None = None,
    ) -> DeployResult:
        """POST (create) or PUT (update) ``body`` to ``endpoint``; with ``csv_file``, as multipart.

        The CSV is streamed from disk (httpx reads the open file in chunks).
        """
        path = lookup_path(domain, name, endpoint)
        files = None
        if csv_file is not None:
            config_part = json.dumps(body)

            def files() -> dict[str, Any]:
                return {
                    "deploy-config": (None, config_part, "application/json"),
                    "csv": (csv_file.name, WithoutBom(csv_file), "text/csv"),
                }

        for secret in secret_values(body):
            if secret not in self._secrets:
                self._secrets.append(secret)
        on_ambiguous = None
        if method == "POST":

            async def on_ambiguous() -> DeployResult | None:
                return await self._recover_create(domain, name)

        sent = self._clock()
        response = await self._send(
            method,
            path,
            json_body=None if csv_file is not None else body,
            files=files,
            on_ambiguous=on_ambiguous,
            sent_secrets=tuple(secret_values(body)),
        )
        if isinstance(response, DeployResult):
            return response
        answered = self._clock()
        created = self._parse(response, CreationResponse, method, path)
        job_id = created.id
        if not job_id:  # a service that does not echo the job id: the newest job is this one
            jobs = await self.job_ids(domain, name)
            job_id = jobs[-1] if jobs else None
        return DeployResult(job_id, created.lookupDeployConfig, sent=sent, answered=answered)

    async def _recover_create(self, domain: str, name: str) -> DeployResult | None:
        """After an ambiguous POST: if the lookup exists now, the create went through."""
        try:
            if await self.find_lookup(domain, name) is None:
                return None
            jobs = await self.job_ids(domain, name)
        except (ApiError, TransportError):
            return None  # cannot tell yet; the retry's 409 will tell instead
        log.debug("POST %s/%s: answer lost, but the lookup exists: not re-sent", domain, name)
        return DeployResult(jobs[-1] if jobs else None, recovered=True)

    async def delete(self, domain: str, name: str) -> DeployResult:
        """DELETE a lookup; a 404 after a retried attempt means the first one went through."""
        path = lookup_path(domain, name)
        attempted = False

        async def on_ambiguous() -> DeployResult | None:
            nonlocal attempted
            attempted = True
            return None

        sent = self._clock()
        try:
            response = await self._send("DELETE", path, on_ambiguous=on_ambiguous)
        except NotFoundError as exc:
            if not attempted or exc.missing == "domain":
                raise
            jobs = await self.job_ids(domain, name)
            return DeployResult(jobs[-1] if jobs else None, recovered=True)
        if not (isinstance(response, httpx.Response)):
            raise RuntimeError("invariant broken: isinstance(response, httpx.Response)")
        answered = self._clock()
        deleted = self._parse(response, DeletionResponse, "DELETE", path)
        return DeployResult(deleted.id, sent=sent, answered=answered)
