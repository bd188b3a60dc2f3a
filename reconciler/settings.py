"""Where the reconciler connects and with which credentials (CONTRACT.md, "Where it connects").

Flags beat environment variables; ``--url``/``DEVO_LOOKUP_URL`` beats ``--region``/``DEVO_REGION``.
With neither, the embedded emulator is the default, announced on stderr, except in CI (a truthy
``CI``, or a CI service's own marker such as ``GITHUB_ACTIONS`` or ``JENKINS_URL``) where a forgotten
variable must never turn a deploy into a silent no-op: then ``--emulator`` is required. Credentials
lose surrounding white space (a pasted token ends in a newline); white space inside one is an error. Tokens come from ``DEVO_TOKEN`` or ``--token-file``, never from argv, and are held in
pydantic ``SecretStr`` so no repr, log line or exception can show them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import SecretStr

from reconciler.errors import SettingsError

#: Devo's regions (each with its endpoint, ``region_url``): the one list, the spec model's too.
Region = Literal["us", "eu", "ca", "apac", "es"]
REGIONS: tuple[str, ...] = get_args(Region)
# Variables CI services set: any of them means "running in CI", like a truthy CI.
CI_MARKERS = (
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "JENKINS_URL",
    "BUILDKITE",
    "TF_BUILD",
    "CIRCLECI",
    "TRAVIS",
    "TEAMCITY_VERSION",
    "BITBUCKET_BUILD_NUMBER",
    "CODEBUILD_BUILD_ID",
    "DRONE",
    "BUILD_ID",
)


def in_ci(env: Mapping[str, str]) -> str | None:
    """The variable that says this runs in CI (a truthy ``CI``, or a CI service's marker)."""
    if env.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off"):
        return "CI"
    return next((name for name in CI_MARKERS if env.get(name, "").strip()), None)


def _clean(value: str, source: str) -> str:
    """A credential as pasted: surrounding white space goes; white space inside is an error."""
    value = value.strip()
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SettingsError(
            f"{source} contains white space or control characters inside it",
            hint="paste the credential again: it is one line with no spaces",
        )
    return value


DEFAULT_STATE = Path(".reconciler/state.json")
#: The embedded emulator's database: in ``.reconciler/`` of the working folder whatever the state
#: location (``RECONCILER_EMULATOR_DB`` moves it), so moving the state never "loses" the lookups
#: the emulator holds.
EMULATOR_DB = DEFAULT_STATE.parent / "emulator.db"


def local_state_file(location: str | Path) -> Path:
    """The state file of a local location. The one rule: a location that is a folder (one that
    exists, or one written with a trailing slash) holds ``state.json``; any other location is the
    state file itself. Its lock, record log and journal are kept beside it."""
    text = str(location)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / DEFAULT_STATE.name
    return path


def emulator_db(env: Mapping[str, str] | None = None) -> Path:
    """Where the embedded emulator keeps its lookups (``RECONCILER_EMULATOR_DB``, else
    ``.reconciler/emulator.db``)."""
    env = os.environ if env is None else env
    return Path(env.get("RECONCILER_EMULATOR_DB") or EMULATOR_DB)


#: State locations that are object-store URLs (``reconciler.state.backends`` opens them).
URL_SCHEMES = ("s3://", "gs://", "az://", "abfs://", "memory://")


def is_url(location: str) -> bool:
    """True for an object-store URL, False for a local path."""
    return location.startswith(URL_SCHEMES)


#: One request's whole budget, its retries and the waits between them included (``--timeout``,
#: ``RECONCILER_TIMEOUT``): a wrong endpoint fails a CI job within a minute.
DEFAULT_TIMEOUT = 60.0


def timeout_seconds(value: str | float | None, env: Mapping[str, str]) -> float:
    """``--timeout`` (else ``RECONCILER_TIMEOUT``, else 60) as a positive number of seconds."""
    raw = value if value is not None else env.get("RECONCILER_TIMEOUT") or DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86_400:
        raise SettingsError(
            f"--timeout / RECONCILER_TIMEOUT must be a number of seconds, got {str(raw)[:40]!r}",
            hint="e.g. --timeout 60 (the whole budget of one request, its retries included)",
        )
    return seconds


@dataclass(frozen=True)
class Credentials:
    """How requests are authenticated; ``describe`` names the credential without its value."""

    token: SecretStr | None = None
    scheme: Literal["bearer", "standalone"] = "bearer"
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    source: str = ""

    @property
    def signed(self) -> bool:
        """Requests are signed with an API key and secret."""
        return bool(self.api_key and self.api_secret)

    def describe(self) -> str:
        """``token from DEVO_TOKEN, sent as Authorization: Bearer``, without the value."""
        if self.token:
            header = "Authorization: Bearer" if self.scheme == "bearer" else "standAloneToken"
            return f"token from {self.source}, sent as {header}"
        if self.signed:
            return "API key and secret from DEVO_API_KEY/DEVO_API_SECRET (signed requests)"
        return "no credentials"

    def choice(self) -> str | None:
        """When both a token and an API key are set, which one is used (a line for stderr)."""
        if self.token and self.signed:
            return (
                f"Both a token ({self.source}) and DEVO_API_KEY/DEVO_API_SECRET are set: using the "
                "token. Unset DEVO_TOKEN to sign requests with the API key instead."
            )
        return None

    def secrets(self) -> list[str]:
        """The raw values, for redacting server messages that echo them."""
        return [s.get_secret_value() for s in (self.token, self.api_key, self.api_secret) if s]


@dataclass(frozen=True)
class Settings:
    """The resolved endpoint, credentials and state file of one run."""

    base_url: str | None
    credentials: Credentials = field(default_factory=Credentials)
    state_path: Path = DEFAULT_STATE
    notice: str | None = None
    state_url: str | None = None  # s3://, gs://, az://: the state lives in an object store
    timeout: float = DEFAULT_TIMEOUT  # seconds: one request's whole budget, retries included

    @property
    def state_location(self) -> str:
        """Where state and journal live: the object-store URL, else the state file's path."""
        return self.state_url or str(self.state_path)

    @property
    def embedded(self) -> bool:
        """True when requests go to the embedded emulator in-process."""
        return self.base_url is None

    @property
    def state_dir(self) -> Path:
        """The folder of the state file."""
        return self.state_path.parent

    def describe_endpoint(self) -> str:
        """Where requests go, for messages."""
        return "the embedded emulator" if self.base_url is None else self.base_url


def resolve(
    *,
    url: str | None = None,
    region: str | None = None,
    emulator: bool = False,
    token_file: Path | None = None,
    auth_scheme: str | None = None,
    state: Path | str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve flags and environment into Settings (raises SettingsError when unusable)."""
    from dataclasses import replace

    env = os.environ if env is None else env
    settings = _resolve(url, region, emulator, token_file, auth_scheme, env)
    settings = replace(settings, timeout=timeout_seconds(timeout, env))
    location = str(state) if state is not None else env.get("RECONCILER_STATE") or ""
    if is_url(location):
        settings = replace(settings, state_url=location.rstrip("/"))
    elif location:
        settings = replace(settings, state_path=local_state_file(location))
    if settings.notice:
        if settings.state_url or settings.state_path.absolute() != DEFAULT_STATE.absolute():
            # An emulator run would write its records and journal into a shared state.
            raise SettingsError(
                f"no Devo endpoint configured, and the state is {settings.state_location}: the "
                "embedded emulator is chosen implicitly only with the default local state "
                f"({DEFAULT_STATE})",
                hint="set DEVO_LOOKUP_URL or DEVO_REGION; or pass --emulator if an emulator run "
                "is really meant to record into that state",
            )
        settings = replace(
            settings, notice=f"{settings.notice[:-1]} (data in {emulator_db(env).parent}/)."
        )
    return settings


def _resolve(
    url: str | None,
    region: str | None,
    emulator: bool,
    token_file: Path | None,
    auth_scheme: str | None,
    env: Mapping[str, str],
) -> Settings:
    state_path = DEFAULT_STATE
    credentials = _credentials(token_file, auth_scheme, env)
    if emulator:
        return Settings(None, credentials, state_path)
    url = url or env.get("DEVO_LOOKUP_URL") or None
    region = region or env.get("DEVO_REGION") or None
    if url:
        problem = endpoint_problem(url)
        if problem is not None:
            raise SettingsError(f"--url / DEVO_LOOKUP_URL: {problem[0]}", hint=problem[1])
        return Settings(url.rstrip("/"), credentials, state_path)
    if region:
        if region not in REGIONS:
            raise SettingsError(
                f"unknown region {region!r}", hint=f"one of {', '.join(REGIONS)}, or set --url"
            )
        return Settings(region_url(region), credentials, state_path)
    marker = in_ci(env)
    if marker is not None:
        raise SettingsError(
            f"no Devo endpoint configured, and this runs in CI ({marker}={env[marker].strip()})",
            hint="set DEVO_LOOKUP_URL or DEVO_REGION, or pass --emulator to use the embedded "
            "emulator on purpose",
        )
    return Settings(
        None,
        credentials,
        state_path,
        notice="No DEVO_LOOKUP_URL or DEVO_REGION set: using the embedded Lookups API emulator.",
    )


_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def is_loopback(host: str) -> bool:
    """True for a name or address of this machine's loopback (``localhost``, 127/8, ``::1``)."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problem(url: str) -> tuple[str, str] | None:
    """Why ``url`` cannot be a Lookups API endpoint (message, hint), or None when it can.

    The messages never quote the URL: it may hold a user name and password. An endpoint is
    ``https://HOST[:PORT][/PATH]``; ``http://`` only on loopback (a token sent in clear to
    another host is a token anyone on the path can read).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return "the endpoint URL cannot be parsed", "e.g. https://api-us.devo.com/lookup-api"
    if parts.scheme not in ("https", "http"):
        return (
            "the endpoint URL must start with https://",
            "e.g. https://api-us.devo.com/lookup-api",
        )
    if not parts.hostname:
        return "the endpoint URL names no host", "e.g. https://api-us.devo.com/lookup-api"
    if parts.username is not None or parts.password is not None:
        return (
            "the endpoint URL holds a user name or password (not shown)",
            "credentials go in DEVO_TOKEN, --token-file or DEVO_API_KEY/DEVO_API_SECRET, "
            "never in the URL",
        )
    if parts.query or parts.fragment:
        return "the endpoint URL has a query or fragment", "give the base URL only"
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "the endpoint URL holds white space", "e.g. https://api-us.devo.com/lookup-api"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return (
            "http:// endpoints are refused except on loopback: the credential would travel in clear",
            "use https://",
        )
    return None


def region_url(region: str) -> str:
    """The Lookups API endpoint of a Devo region."""
    return f"https://api-{region}.devo.com/lookup-api"


def named_credentials(
    token_env: str | None,
    api_key_env: str | None,
    api_secret_env: str | None,
    env: Mapping[str, str],
    owner: str,
) -> Credentials:
    """A credential read from the environment variables a Domain names (``owner`` for messages).

    Unset or empty is an error naming the variable, never a fallback to another credential.
    """
    names = [n for n in (token_env, api_key_env, api_secret_env) if n]
    missing = [n for n in names if not (env.get(n) or "").strip()]
    if missing:
        raise SettingsError(
            f"{owner}: environment variable {', '.join(missing)} is not set; nothing was sent",
            hint=f"export it where reconciler runs (the credential of {owner})",
        )
    if token_env:
        return Credentials(token=SecretStr(_clean(env[token_env], token_env)), source=token_env)
    if not (api_key_env and api_secret_env):
        raise RuntimeError("invariant broken: api_key_env and api_secret_env")
    return Credentials(
        api_key=SecretStr(_clean(env[api_key_env], api_key_env)),
        api_secret=SecretStr(_clean(env[api_secret_env], api_secret_env)),
        source=f"{api_key_env}/{api_secret_env}",
    )


def _credentials(
    token_file: Path | None, auth_scheme: str | None, env: Mapping[str, str]
) -> Credentials:
    scheme = (auth_scheme or env.get("DEVO_AUTH_SCHEME") or "bearer").lower()
    if scheme not in ("bearer", "standalone"):
        raise SettingsError(
            f"unknown auth scheme {scheme!r}", hint="bearer (Authorization: Bearer) or standalone"
        )
    token: SecretStr | None = None
    source = ""
    if token_file is not None:
        try:
            text = token_file.read_text().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read token file {token_file}: {exc.strerror}") from exc
        if not text:
            raise SettingsError(f"token file {token_file} is empty")
        source = f"--token-file {token_file}"
        token = SecretStr(_clean(text, source))
    elif env.get("DEVO_TOKEN", "").strip():
        token, source = SecretStr(_clean(env["DEVO_TOKEN"], "DEVO_TOKEN")), "DEVO_TOKEN"
    key = _clean(env.get("DEVO_API_KEY", ""), "DEVO_API_KEY") or None
    secret = _clean(env.get("DEVO_API_SECRET", ""), "DEVO_API_SECRET") or None
    if bool(key) != bool(secret):
        raise SettingsError(
            "DEVO_API_KEY and DEVO_API_SECRET go together", hint="set both, or neither"
        )
    return Credentials(
        token=token,
        scheme="standalone" if scheme == "standalone" else "bearer",
        api_key=SecretStr(key) if key else None,
        api_secret=SecretStr(secret) if secret else None,
        source=source,
    )
