"""The Lookups API client against the emulator (in-process and over loopback) and odd servers."""

from __future__ import annotations

import asyncio
import logging
import random
import tracemalloc
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr as Secret

from reconciler.client import (
    JobStatus,
    LookupClient,
    LookupReader,
    PollPolicy,
    RetryPolicy,
    job_outcome,
    lookup_path,
)
from reconciler.emulator import EmulatorConfig, Grant
from reconciler.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    JobFailed,
    JobTimeout,
    NotFoundError,
    ServerError,
    SettingsError,
    TransportError,
)
from reconciler.settings import Credentials, Settings, resolve
from tests.support import FakeClock, make_app, served

pytestmark = pytest.mark.anyio
REMOTE = Settings("http://devo.test/lookup-api")
QUERY = {"query": "from a select b"}


def client_for(
    app: Any, settings: Settings = REMOTE, clock: FakeClock | None = None, **kw: Any
) -> LookupClient:
    clock = clock or FakeClock()
    return LookupClient(
        settings,
        transport=httpx.ASGITransport(app=app),
        sleep=clock.sleep,
        clock=clock,
        wall_clock=clock,
        rng=random.Random(1),
        **kw,
    )


def mock_client(
    handler: Any, settings: Settings = REMOTE, clock: FakeClock | None = None, **kw: Any
) -> LookupClient:
    clock = clock or FakeClock()
    return LookupClient(
        settings, transport=httpx.MockTransport(handler), sleep=clock.sleep, clock=clock, **kw
    )


# --- settings ----------------------------------------------------------------------------------


def test_resolve_endpoints(tmp_path: Path) -> None:
    assert resolve(env={}).embedded
    assert resolve(env={}).notice and "embedded" in resolve(env={}).notice  # type: ignore[operator]
    assert resolve(env={"DEVO_REGION": "eu"}).base_url == "https://api-eu.devo.com/lookup-api"
    assert resolve(region="apac", env={}).base_url == "https://api-apac.devo.com/lookup-api"
    both = resolve(url="https://x.example/lookup-api/", env={"DEVO_REGION": "us"})
    assert both.base_url == "https://x.example/lookup-api"
    assert resolve(emulator=True, env={"CI": "true"}).embedded
    assert resolve(env={"CI": "true", "DEVO_REGION": "us"}).base_url
    with pytest.raises(SettingsError, match="CI=true"):
        resolve(env={"CI": "true"})
    with pytest.raises(SettingsError, match="unknown region"):
        resolve(env={"DEVO_REGION": "mars"})
    with pytest.raises(SettingsError, match="must start with https"):
        resolve(url="api-us.devo.com", env={})
    with pytest.raises(SettingsError, match="cannot be parsed"):
        resolve(url="http://[::1", env={})  # was an internal error (InvalidURL)
    with pytest.raises(SettingsError, match="go together"):
        resolve(env={"DEVO_API_KEY": "k"})
    with pytest.raises(SettingsError, match="auth scheme"):
        resolve(env={"DEVO_AUTH_SCHEME": "basic"})
    token_file = tmp_path / "token"
    token_file.write_text("file-token\n")
    creds = resolve(token_file=token_file, env={"DEVO_TOKEN": "env-token"}).credentials
    assert creds.token is not None and creds.token.get_secret_value() == "file-token"
    assert (
        resolve(env={"RECONCILER_STATE": str(tmp_path / "s.json"), "DEVO_REGION": "us"}).state_path
        == tmp_path / "s.json"
    )


@pytest.mark.parametrize(
    "marker",
    [
        {"CI": "1"},
        {"CI": "yes"},
        {"GITHUB_ACTIONS": "true"},
        {"JENKINS_URL": "http://ci/"},
        {"GITLAB_CI": "true"},
        {"BUILDKITE": "true"},
        {"TF_BUILD": "True"},
    ],
)
def test_any_ci_marker_refuses_the_silent_emulator(marker: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="runs in CI"):
        resolve(env=marker)
    assert resolve(env={**marker, "DEVO_REGION": "us"}).base_url
    assert resolve(emulator=True, env=marker).embedded
    assert resolve(env={"CI": "false"}).embedded and resolve(env={"CI": "0"}).embedded


@pytest.mark.parametrize("pasted", ["tok-123\n", "tok-123\r\n", " tok-123 ", "\ttok-123"])
async def test_a_pasted_token_is_stripped_and_sent(pasted: str) -> None:
    settings = resolve(env={"DEVO_REGION": "us", "DEVO_TOKEN": pasted})
    assert settings.credentials.token is not None
    assert settings.credentials.token.get_secret_value() == "tok-123"
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"lookups": [], "nextPageToken": -1})

    async with mock_client(handler, settings) as client:
        assert await client.all_lookups("acme") == []
    assert seen == ["Bearer tok-123"]


def test_white_space_inside_a_token_is_an_error_that_hides_it() -> None:
    with pytest.raises(SettingsError, match="DEVO_TOKEN contains white space") as caught:
        resolve(env={"DEVO_REGION": "us", "DEVO_TOKEN": "tok\n-secret-part"})
    assert "secret-part" not in f"{caught.value} {caught.value.hint}"


@pytest.mark.waits
async def test_a_request_that_cannot_be_written_is_not_retried() -> None:
    # Settings built by hand (resolve() would refuse this token): h11 refuses the header.
    clock = FakeClock()
    with served(make_app()) as base:
        settings = Settings(base, Credentials(token=Secret("bad\ntoken"), source="DEVO_TOKEN"))
        async with LookupClient(settings, sleep=clock.sleep, clock=clock) as client:
            with pytest.raises(SettingsError, match="could not be sent") as caught:
                await client.all_lookups("acme")
    assert clock.slept == []  # no retry, no three-minute wait
    assert "bad" not in str(caught.value) and "no spaces or line breaks" in (
        caught.value.hint or ""
    )


def test_both_credentials_say_which_one_is_used() -> None:
    both = resolve(
        env={"DEVO_REGION": "us", "DEVO_TOKEN": "t", "DEVO_API_KEY": "k", "DEVO_API_SECRET": "s"}
    )
    assert both.credentials.choice() and "using the token" in both.credentials.choice()  # type: ignore[operator]
    assert resolve(env={"DEVO_REGION": "us", "DEVO_TOKEN": "t"}).credentials.choice() is None


def test_secret_never_shows_itself() -> None:
    secret = Secret("canary-value-123")
    creds = Credentials(token=secret, source="DEVO_TOKEN")
    for text in (repr(secret), str(secret), repr(creds), creds.describe(), f"{secret}"):
        assert "canary-value-123" not in text


# --- reads and paging --------------------------------------------------------------------------


async def test_paging_uses_one_request_per_thousand() -> None:
    app = make_app(EmulatorConfig(), clock=FakeClock())
    store = app.emulator.store
    schedule = [(0.0, "create.start", "s"), (0.0, "deploy.ok", "ok")]
    config = {"visibility": {"type": "creator-only"}, "recipe": {"source": {"query": "q"}}}
    for i in range(2500):
        store.create("acme", f"l{i:05d}", config, {}, schedule, "o")
    async with client_for(app) as client:
        names = [lookup.name async for lookup in client.list_lookups("acme")]
        assert names == [f"l{i:05d}" for i in range(2500)]
        assert client.requests == 3


@settings(max_examples=60)  # an event loop per example (no deadline: conftest)
@given(
    domain=st.text(min_size=1, max_size=10),
    base=st.sampled_from(
        ["http://devo.test/lookup-api", "http://devo.test/lookup-api/", "https://h.test:8443/a b/"]
    ),
)
def test_every_request_goes_to_the_url_httpx_builds(domain: str, base: str) -> None:
    """The client parses each URL once and reuses it: what it sends, page after page and call
    after call, is the URL httpx itself builds from the base URL, the path and the query."""
    sent: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url)
        token = request.url.params["pageToken"]
        return httpx.Response(
            200, json={"lookups": [{"name": token}], "nextPageToken": 1 if token == "0" else -1}
        )

    async def main() -> None:
        async with mock_client(handler, Settings(base)) as client:
            for _ in range(2):
                assert [x.name for x in await client.all_lookups(domain)] == ["0", "1"]

    asyncio.run(main())
    with httpx.Client(base_url=base, transport=httpx.MockTransport(handler)) as httpx_own:
        expected = [
            httpx_own.build_request(
                "GET",
                lookup_path(domain),
                params={"max_length": 1000, "pageToken": token, "owner": "THIS_DOMAIN"},
            ).url
            for token in (0, 1)
        ]
    assert sent == expected * 2


async def test_repeated_page_token_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"lookups": [{"name": "a"}], "nextPageToken": 7})

    async with mock_client(handler) as client:
        with pytest.raises(ApiError, match="repeated pageToken 7"):
            await client.all_lookups("acme")


async def test_tolerant_models_accept_extra_and_null_fields() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        lookup = {
            "name": "a",
            "deployConfig": None,
            "lastStatus": None,
            "fields": None,
            "shared": True,
            "brandNewField": {"x": 1},
        }
        return httpx.Response(200, json={"lookups": [lookup], "nextPageToken": -1, "extra": 1})

    async with mock_client(handler) as client:
        [lookup] = await client.all_lookups("acme")
        assert lookup.visibility == "all-subdomains" and lookup.fields == []
        assert lookup.model_extra == {"brandNewField": {"x": 1}}


async def test_unexpected_body_is_a_clear_error() -> None:
    async with mock_client(lambda r: httpx.Response(200, text="<html>")) as client:
        with pytest.raises(ApiError, match="unexpected answer"):
            await client.get_lookup("acme", "x")


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ('{"lookups": [{"name": "é"}], "nextPageToken": -1}'.encode(), ["é"]),
        # What pydantic-core's reader refuses, the json module reads as before.
        (b'\xef\xbb\xbf{"lookups": [{"name": "bom"}], "nextPageToken": -1}', ["bom"]),
        ('{"lookups": [{"name": "wide"}], "nextPageToken": -1}'.encode("utf-16"), ["wide"]),
        # And what neither reads is an unexpected answer, named as the json module names it.
        (b'{"lookups": [{"name": "\xff"}]}', "UnicodeDecodeError"),
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        (b"<html>", "JSONDecodeError"),
    ],
)
async def test_an_answer_is_read_as_json_whatever_its_encoding(body: bytes, outcome: Any) -> None:
    async with mock_client(lambda r: httpx.Response(200, content=body)) as client:
        if isinstance(outcome, list):
            assert [m.name for m in await client.all_lookups("acme")] == outcome
        else:
            with pytest.raises(ApiError, match=f"unexpected answer \\({outcome}\\)"):
                await client.all_lookups("acme")


# --- errors ------------------------------------------------------------------------------------

TOKEN = Settings(
    "http://devo.test/lookup-api", Credentials(token=Secret("tok-canary-77"), source="DEVO_TOKEN")
)


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (
            400,
            {"type": "LookupCreationError", "code": 400, "msg": "KeyAlgorithm values can be"},
            BadRequestError,
            "KeyAlgorithm",
        ),
        (401, {"error": {"code": 401, "message": "Unauthorized"}}, AuthError, "Unauthorized"),
        (
            401,
            {"code": 401, "msg": "Access to 'x' requires valid auth", "cid": "c"},
            AuthError,
            "requires valid auth",
        ),
        (403, {"code": 5, "msg": "Token invalid or expired"}, AuthError, "invalid or expired"),
        (
            403,
            {
                "code": 403,
                "context": "FORBIDDEN",
                "msg": "User is not authorized to perform operations in the domain.",
            },
            AuthError,
            "not authorized",
        ),
        (404, {"code": 404, "msg": "Domain not found."}, NotFoundError, "Domain not found"),
        (404, {"message": "Not Found"}, NotFoundError, "Not Found"),
        (
            409,
            {"code": 409, "msg": "Lookup with domain a and name b already exists"},
            ConflictError,
            "already exists",
        ),
        (418, {"error": "teapot"}, ApiError, "teapot"),
    ],
)
async def test_error_shapes(status: int, body: dict[str, Any], kind: type, words: str) -> None:
    async with mock_client(lambda r: httpx.Response(status, json=body), TOKEN) as client:
        with pytest.raises(kind) as caught:
            await client.get_lookup("acme", "x")
    error = caught.value
    assert words in str(error) and error.status == status
    assert error.method == "GET" and error.url == "http://devo.test/lookup-api/lookup/acme/x"
    text = f"{error} {error.hint}"
    assert "tok-canary-77" not in text
    if status in (401, 403):
        assert "token from DEVO_TOKEN, sent as Authorization: Bearer" in str(error.hint)
    if status == 404:
        assert error.missing == ("domain" if "Domain" in words else "lookup")


# --- retries -----------------------------------------------------------------------------------


async def test_retry_after_is_honoured() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(503),
            httpx.Response(200, json={"jobs": ["j"]}),
        ]
    )
    clock = FakeClock()
    async with mock_client(lambda r: next(answers), clock=clock) as client:
        assert await client.job_ids("acme", "x") == ["j"]
        assert clock.slept[0] >= 3 and len(clock.slept) == 2
        assert client.requests == 3


async def test_retry_budget_runs_out() -> None:
    clock = FakeClock()
    retry = RetryPolicy(budget=5)
    async with mock_client(
        lambda r: httpx.Response(503, json={"msg": "down"}), clock=clock, retry=retry
    ) as client:
        with pytest.raises(ServerError, match="down"):
            await client.job_ids("acme", "x")
    assert sum(clock.slept) <= 5


async def test_connection_errors_are_retried_then_reported() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    clock = FakeClock()
    async with mock_client(refuse, clock=clock, retry=RetryPolicy(budget=2)) as client:
        with pytest.raises(TransportError, match="no answer"):
            await client.job_ids("acme", "x")
        assert client.requests > 1


async def test_no_create_is_ever_sent_twice_under_faults() -> None:
    app = make_app(
        EmulatorConfig(rate_5xx=0.15, rate_429=0.15, rate_drop=0.2, retry_after=0.5, seed=3),
        clock=FakeClock(),
    )
    names = [f"l{i}" for i in range(40)]
    async with client_for(app) as client:
        results = await asyncio.gather(
            *(client.deploy("POST", "deploy-static-query", "acme", n, QUERY) for n in names)
        )
    stats = app.emulator.stats
    assert all(r.job_id for r in results)
    assert sum(stats.faults.values()) > 10  # the faults really happened
    assert stats.faults["drop-after"] > 0 and any(r.recovered for r in results)
    assert {f"acme/{n}": 1 for n in names} == dict(stats.created)
    assert max(stats.posts.values()) == 1  # the server saw each create exactly once


@pytest.mark.waits
def test_no_create_sent_twice_over_loopback() -> None:
    app = make_app(
        EmulatorConfig(rate_5xx=0.1, rate_429=0.1, rate_drop=0.2, retry_after=0.05, seed=5)
    )

    async def run(base: str) -> None:
        settings = Settings(base)
        async with LookupClient(settings, retry=RetryPolicy(budget=60, base=0.01)) as client:
            await asyncio.gather(
                *(
                    client.deploy("POST", "deploy-static-query", "acme", f"n{i}", QUERY)
                    for i in range(30)
                )
            )

    with served(app) as base:
        asyncio.run(run(base))
    assert app.emulator.stats.faults["drop-after"] > 0
    assert len(app.emulator.stats.created) == 30 and max(app.emulator.stats.posts.values()) == 1


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards every request, but loses the answer to the first one of ``method``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str) -> None:
        self.inner, self.method, self.lost = inner, method, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == self.method and not self.lost:
            self.lost += 1
            raise httpx.ReadError(
                "connection reset after the request was processed", request=request
            )
        return response


async def test_delete_whose_answer_was_lost_is_not_an_error() -> None:
    clock = FakeClock()
    app = make_app(EmulatorConfig(delete_latency=0), clock=clock)
    transport = LoseFirstAnswer(httpx.ASGITransport(app=app), "DELETE")
    async with LookupClient(REMOTE, transport=transport, sleep=clock.sleep, clock=clock) as client:
        await client.deploy("POST", "deploy-static-query", "acme", "x", QUERY)
        result = await client.delete("acme", "x")
        assert transport.lost == 1 and result.recovered and result.job_id
        assert await client.find_lookup("acme", "x") is None
        with pytest.raises(NotFoundError):
            await client.delete("acme", "x")  # a plain 404, with no retry, stays an error


async def test_post_whose_answer_was_lost_is_recovered_not_resent() -> None:
    clock = FakeClock()
    app = make_app(EmulatorConfig(), clock=clock)
    transport = LoseFirstAnswer(httpx.ASGITransport(app=app), "POST")
    async with LookupClient(REMOTE, transport=transport, sleep=clock.sleep, clock=clock) as client:
        result = await client.deploy("POST", "deploy-static-query", "acme", "x", QUERY)
    assert result.recovered and result.job_id
    assert app.emulator.stats.posts["acme/x"] == 1


# --- auth on the wire --------------------------------------------------------------------------


async def test_signed_requests_are_accepted(tmp_path: Path) -> None:
    clock = FakeClock()
    app = make_app(
        EmulatorConfig(grants=[Grant(api_key="key-9", api_secret="secret-9")]), clock=clock
    )
    settings = Settings(
        "http://devo.test/lookup-api",
        Credentials(api_key=Secret("key-9"), api_secret=Secret("secret-9")),
    )
    csv = tmp_path / "geo.csv"
    csv.write_text("ip,n\n10.0.0.1,1\n")
    body = {
        "columns": [{"name": "ip", "type": "IP4"}, {"name": "n", "type": "INT4"}],
        "hasHeader": True,
    }
    async with client_for(app, settings, clock=clock) as client:
        created = await client.deploy("POST", "deploy-csv", "acme", "geo", body, csv_file=csv)
        assert created.job_id
        assert (await client.get_lookup("acme", "geo")).numEntries == 1
    wrong = Settings(
        "http://devo.test/lookup-api",
        Credentials(api_key=Secret("key-9"), api_secret=Secret("nope")),
    )
    async with client_for(app, wrong, clock=clock) as client:
        with pytest.raises(AuthError):
            await client.get_lookup("acme", "geo")


@pytest.mark.parametrize("scheme", ["bearer", "standalone"])
async def test_token_schemes(scheme: str) -> None:
    app = make_app(EmulatorConfig(grants=[Grant(token="t-1")]), clock=FakeClock())
    settings = Settings(
        "http://devo.test/lookup-api", Credentials(token=Secret("t-1"), scheme=scheme)
    )  # type: ignore[arg-type]
    async with client_for(app, settings) as client:
        assert await client.all_lookups("acme") == []


async def test_canary_secrets_never_logged_or_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token, s3 = "canary-token-5f1e", "canary-s3-secret-9a2b"

    def handler(request: httpx.Request) -> httpx.Response:
        echoed = request.content.decode(errors="replace")
        return httpx.Response(
            400, json={"msg": f"bad body {echoed} for {request.headers.get('authorization')}"}
        )

    settings = Settings(
        "http://devo.test/lookup-api", Credentials(token=Secret(token), source="DEVO_TOKEN")
    )
    caplog.set_level(logging.DEBUG)
    async with mock_client(handler, settings) as client:
        with pytest.raises(BadRequestError) as caught:
            await client.deploy(
                "POST", "deploy-csv", "acme", "x", {"fileProvider": {"secretKey": s3}}
            )
    shown = (
        f"{caught.value} {caught.value.hint} {caught.value.server_message} {caplog.text} {client!r}"
    )
    assert "bad body" in shown  # the server's message is shown ...
    assert token not in shown and s3 not in shown  # ... without the secrets it echoed


# --- jobs --------------------------------------------------------------------------------------


def statuses(*codes: str) -> list[JobStatus]:
    return [JobStatus(code=c, msg=f"m-{c}") for c in codes]


def test_job_outcome_rule() -> None:
    assert job_outcome(statuses()) == "running"
    assert job_outcome(statuses("create.start")) == "running"
    assert job_outcome(statuses("create.start", "create.ok")) == "settling"
    # push.* is the upload before creation: a job quiet after push.ok has not been created yet.
    assert job_outcome(statuses("create.start", "push.start", "push.ok")) == "running"
    assert job_outcome(statuses("create.ok", "deploy.start", "deploy.ok")) == "done"
    assert job_outcome(statuses("del.start", "del.ok")) == "done"
    assert job_outcome(statuses("create.start", "create.err")) == "failed"
    assert job_outcome(statuses("create.ok", "deploy.err", "deploy.ok")) == "failed"
    assert job_outcome(statuses("CREATE.START", "DEPLOY.OK")) == "done"


async def test_wait_for_job_polls_few_times() -> None:
    clock = FakeClock()
    app = make_app(EmulatorConfig(create_latency=0.5, deploy_latency=1.5), clock=clock)
    seen: list[str] = []
    async with client_for(app, clock=clock) as client:
        job = await client.deploy("POST", "deploy-static-query", "acme", "x", QUERY)
        assert job.job_id
        result = await client.wait_for_job(
            "acme", "x", job.job_id, on_status=lambda s: seen.append(s.code)
        )
    assert seen == ["create.start", "create.ok", "deploy.start", "deploy.ok"]
    assert result.last is not None and result.last.code == "deploy.ok"
    assert result.polls <= 6


async def test_wait_for_job_failure_and_timeout() -> None:
    clock = FakeClock()
    app = make_app(EmulatorConfig(job_failure_pattern="bad*", create_latency=100), clock=clock)
    async with client_for(app, clock=clock) as client:
        bad = await client.deploy("POST", "deploy-static-query", "acme", "bad1", QUERY)
        assert bad.job_id
        with pytest.raises(
            JobFailed, match="deploy.err: Lookup deployment failed: injected failure"
        ):
            await client.wait_for_job("acme", "bad1", bad.job_id, timeout=1000)
        slow = await client.deploy("POST", "deploy-static-query", "acme", "slow", QUERY)
        assert slow.job_id
        with pytest.raises(JobTimeout, match="last status: create.start") as caught:
            await client.wait_for_job("acme", "slow", slow.job_id, timeout=10)
        assert caught.value.job_id == slow.job_id


async def test_wait_for_job_settles_on_create_ok() -> None:
    answers = {"status": [{"code": "create.start"}, {"code": "create.ok", "msg": "created"}]}
    clock = FakeClock()
    async with mock_client(lambda r: httpx.Response(200, json=answers), clock=clock) as client:
        result = await client.wait_for_job("acme", "x", "j", policy=PollPolicy(settle=15))
    assert result.note and "create.ok" in result.note
    assert 15 <= sum(clock.slept) < 25


async def test_wait_for_job_never_settles_on_push_ok() -> None:
    answers = {"status": [{"code": "push.start"}, {"code": "push.ok", "msg": "uploaded"}]}
    clock = FakeClock()
    async with mock_client(lambda r: httpx.Response(200, json=answers), clock=clock) as client:
        with pytest.raises(JobTimeout, match="last status: push.ok") as caught:
            await client.wait_for_job("acme", "x", "j", timeout=60, policy=PollPolicy(settle=15))
    assert caught.value.polls > 5  # the failure says how often the job was read


async def test_job_statuses_under_the_key_jobs_are_read() -> None:
    answers = {"code": 200, "jobs": [{"code": "create.start"}, {"code": "deploy.ok"}]}
    async with mock_client(lambda r: httpx.Response(200, json=answers)) as client:
        result = await client.wait_for_job("acme", "x", "j")
    assert result.last is not None and result.last.code == "deploy.ok"


async def test_an_unknown_job_shape_is_still_running_not_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    odd = {"code": 200, "msg": "Lookup job's statuses", "result": {"state": "ok"}}
    async with mock_client(lambda r: httpx.Response(200, json=odd), clock=clock) as client:
        with pytest.raises(JobTimeout, match="last status: none"):
            await client.wait_for_job("acme", "x", "j", timeout=30)
    assert "no 'status' or 'jobs' list" in caplog.text


async def test_a_delete_job_that_vanishes_with_its_lookup_is_done() -> None:
    clock = FakeClock()
    app = make_app(EmulatorConfig(delete_latency=1.0, jobs_vanish=True), clock=clock)
    async with client_for(app, clock=clock) as client:
        created = await client.deploy("POST", "deploy-static-query", "acme", "x", QUERY)
        assert created.job_id
        await client.wait_for_job("acme", "x", created.job_id)
        deleted = await client.delete("acme", "x")
        assert deleted.job_id
        result = await client.wait_for_job("acme", "x", deleted.job_id, timeout=600, deleting=True)
    assert result.note and "gone" in result.note
    assert clock.now - 1_767_225_600.0 < 60  # not polled until the job timeout


async def test_job_messages_are_redacted_at_the_client() -> None:
    s3 = "AKIA-echoed-in-a-job-message"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json={"id": "j1", "lookupDeployConfig": None})
        return httpx.Response(
            200, json={"status": [{"code": "create.err", "msg": f"cannot read with key {s3}"}]}
        )

    seen: list[str] = []
    async with mock_client(handler) as client:
        await client.deploy("POST", "deploy-csv", "acme", "x", {"fileProvider": {"accessKey": s3}})
        with pytest.raises(JobFailed) as caught:
            await client.wait_for_job(
                "acme", "x", "j1", on_status=lambda s: seen.append(s.msg or "")
            )
    assert seen == ["cannot read with key ***"]
    assert s3 not in str(caught.value)


# --- uploads -----------------------------------------------------------------------------------


async def test_multipart_upload_streams_from_disk(tmp_path: Path) -> None:
    csv = tmp_path / "big.csv"
    with csv.open("w") as handle:
        for i in range(600_000):
            handle.write(f"10.{i % 256}.{i // 256 % 256}.1,{i}\n")
    size = csv.stat().st_size
    received = {"bytes": 0, "largest": 0}

    class Consume(httpx.AsyncBaseTransport):
        """Reads the request body chunk by chunk, as a server socket would (MockTransport
        would read it whole first)."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            async for chunk in request.stream:  # type: ignore[union-attr]
                received["bytes"] += len(chunk)
                received["largest"] = max(received["largest"], len(chunk))
            return httpx.Response(201, json={"id": "job-1", "lookupDeployConfig": {}})

    clock = FakeClock()
    tracemalloc.start()
    async with LookupClient(REMOTE, transport=Consume(), sleep=clock.sleep, clock=clock) as client:
        result = await client.deploy(
            "POST", "deploy-csv", "acme", "big", {"columns": []}, csv_file=csv
        )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.job_id == "job-1"
    assert received["bytes"] > size and received["largest"] <= 1024 * 1024
    assert peak < size / 2, (peak, size)


def test_reader_has_no_write_methods() -> None:
    for name in ("deploy", "delete"):
        assert not hasattr(LookupReader, name) and hasattr(LookupClient, name)


async def test_client_signature_known_answer() -> None:
    """The client signs the exact bytes it sends (vector computed with openssl, as in the emulator test)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "job"})

    settings = Settings(
        "http://devo.test/lookup-api",
        Credentials(api_key=Secret("key-1"), api_secret=Secret("secret-1")),
    )
    clock = FakeClock(start=1_700_000_000.0)
    client = LookupClient(
        settings,
        transport=httpx.MockTransport(handler),
        sleep=clock.sleep,
        clock=clock,
        wall_clock=clock,
    )
    async with client:
        await client.deploy("POST", "deploy-config", "acme", "x", {"a": 1})
    [request] = seen
    assert request.content == b'{"a":1}'
    assert request.headers["x-logtrust-apikey"] == "key-1"
    assert request.headers["x-logtrust-timestamp"] == "1700000000000"
    assert (
        request.headers["x-logtrust-sign"]
        == "00185f3cd17187bca1bb288a355d0b832ca99807a8759525f3c7efd4503f8f82"
    )
    assert "authorization" not in request.headers and "standalonetoken" not in request.headers


async def test_a_csv_upload_leaves_the_byte_order_mark_behind(tmp_path: Path) -> None:
    csv = tmp_path / "excel.csv"
    csv.write_bytes(b"\xef\xbb\xbfip,country\r\n10.0.0.1,ES\r\n")
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        return httpx.Response(201, json={"id": "j1"})

    signed = Settings(
        "http://devo.test/lookup-api",
        Credentials(api_key=Secret("key"), api_secret=Secret("secret")),
    )
    async with mock_client(handler, signed) as client:  # signing reads the body once more
        await client.deploy("POST", "deploy-csv", "acme", "x", {"columns": []}, csv_file=csv)
    [body] = bodies
    assert b"\xef\xbb\xbf" not in body and b"\r\n\r\nip,country\r\n10.0.0.1,ES\r\n" in body


def test_every_endpoint_goes_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client builds its own transports (one per endpoint), so httpx does not read
    HTTPS_PROXY for it: the transports do, NO_PROXY included."""
    from reconciler.client._network import EndpointTransport
    from reconciler.client._transport import endpoint_transport

    limits = httpx.Limits(max_connections=4)

    def through_proxy(url: str, env: dict[str, str]) -> bool:
        transport = endpoint_transport(url, limits, env)
        assert isinstance(transport, EndpointTransport)
        return isinstance(transport.pool, httpcore.AsyncHTTPProxy)

    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": "localhost,.internal.corp"}
    assert through_proxy("https://api-eu.devo.com/lookup-api", env)
    assert not through_proxy("http://127.0.0.1:8080/lookup-api", env)  # no HTTP_PROXY
    assert not through_proxy("https://devo.internal.corp/lookup-api", env)
    assert not through_proxy("https://internal.corp/lookup-api", env)
    assert through_proxy("http://127.0.0.1:8080/x", {"ALL_PROXY": "http://p:1"})
    assert not through_proxy("https://api-eu.devo.com/x", {**env, "NO_PROXY": "*"})
    assert through_proxy(
        "https://a.b/x", {"HTTPS_PROXY": "http://up:1", "https_proxy": "http://low:2"}
    )
    # The client's own endpoint reads the process environment.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    reader = LookupReader(Settings("https://api-us.devo.com/lookup-api"))
    assert isinstance(reader._router.default, EndpointTransport)
    assert isinstance(reader._router.default.pool, httpcore.AsyncHTTPProxy)
