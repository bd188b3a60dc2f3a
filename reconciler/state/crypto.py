"""Client-side encryption of everything the tool keeps in a state location (the state, its record
log, the CSV snapshots and the journal; the lock stays plain, it holds no data), as OpenTofu
encrypts its state: AES-256-GCM from ``cryptography``, a fresh 96-bit nonce per object, and the
object's name as associated data, so a sealed object cannot be passed off as another.

A sealed object is ``RCE1`` + the key's id (8 hex characters: a digest of the key, never the key)
+ the nonce + the ciphertext and tag; a sealed log line is ``enc1:`` + that, in base64. Objects
without the marker are read as plain, so a backend half way through a migration (or a rekey) is
readable. The key comes from ``RECONCILER_STATE_KEY`` (64 hex characters, or 32 bytes in base64)
or the file ``RECONCILER_STATE_KEY_FILE`` names (``--state-key-file``); older keys a rekey is
moving away from, from ``RECONCILER_STATE_OLD_KEYS`` (comma-separated). No key value is ever
printed: errors name the variable and the key id.

Also here, the keyed digest a record keeps of the S3 secrets it sent (``secret_digest``): enough to
see a rotation, useless to recover them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as secrets_module
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from reconciler.errors import SettingsError, StateError

MAGIC = b"RCE1"
LINE = b"enc1:"
_NONCE = 12


@dataclass(frozen=True)
class StateKey:
    """A 256-bit key and its id (which names it in headers and messages)."""

    secret: bytes
    id: str

    @classmethod
    def parse(cls, text: str, source: str) -> StateKey:
        """A key written as 64 hex characters or as base64 of 32 bytes; ``source`` for errors."""
        text = text.strip()
        try:
            raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) != 32:
            raise SettingsError(
                f"{source} is not a 256-bit key (not shown)",
                hint="make one with: python -c 'import secrets; print(secrets.token_hex(32))'",
            )
        digest = hashlib.sha256(b"reconciler state key\0" + raw).hexdigest()[:8]
        return cls(raw, digest)


@dataclass(frozen=True)
class Keyring:
    """The key objects are sealed with, and every key they may be opened with."""

    current: StateKey
    older: tuple[StateKey, ...] = ()

    def find(self, key_id: str) -> StateKey | None:
        return next((k for k in (self.current, *self.older) if k.id == key_id), None)


def keyring_from(env: Mapping[str, str] | None = None) -> Keyring | None:
    """The keyring the environment sets up, or None (the state is kept plain)."""
    env = os.environ if env is None else env
    text, source = env.get("RECONCILER_STATE_KEY", ""), "RECONCILER_STATE_KEY"
    if not text.strip() and env.get("RECONCILER_STATE_KEY_FILE"):
        path = Path(env["RECONCILER_STATE_KEY_FILE"])
        source = f"the key file {path}"
        try:
            text = path.read_text()
        except OSError as exc:
            raise SettingsError(f"cannot read {source}: {exc.strerror}") from exc
    if not text.strip():
        return None
    current = StateKey.parse(text, source)
    older = tuple(
        StateKey.parse(part, "RECONCILER_STATE_OLD_KEYS")
        for part in env.get("RECONCILER_STATE_OLD_KEYS", "").split(",")
        if part.strip()
    )
    return Keyring(current, older)


def seal(keyring: Keyring, name: str, data: bytes) -> bytes:
    """``data`` encrypted with the current key, bound to the object's ``name``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE)
    sealed = AESGCM(keyring.current.secret).encrypt(nonce, data, name.encode())
    return MAGIC + keyring.current.id.encode() + nonce + sealed


def unseal(keyring: Keyring | None, name: str, data: bytes) -> bytes:
    """The plain bytes of ``data`` (plain data as it is); ``StateError`` when it cannot be opened."""
    if data.startswith(LINE):
        try:
            data = base64.b64decode(data[len(LINE) :].strip(), validate=True)
        except (ValueError, binascii.Error):
            raise StateError(f"{name}: a sealed entry is damaged") from None
    if not data.startswith(MAGIC):
        return data
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key_id = data[4:12].decode(errors="replace")
    if keyring is None:
        raise StateError(
            f"{name} is encrypted (key {key_id}) and no state key is set",
            hint="set RECONCILER_STATE_KEY (or --state-key-file) to the key it was written with",
        )
    key = keyring.find(key_id)
    if key is None:
        raise StateError(
            f"{name} is encrypted with key {key_id}; the key given is {keyring.current.id}",
            hint="set RECONCILER_STATE_KEY to that key (during a rekey, the old one in "
            "RECONCILER_STATE_OLD_KEYS)",
        )
    nonce, body = data[12 : 12 + _NONCE], data[12 + _NONCE :]
    try:
        return AESGCM(key.secret).decrypt(nonce, body, name.encode())
    except InvalidTag:
        raise StateError(
            f"{name} cannot be decrypted with key {key_id}: it was changed, or moved from "
            "another name",
            hint="restore it from a backup",
        ) from None


def seal_line(keyring: Keyring, name: str, data: bytes) -> bytes:
    """A sealed log line (text-safe: one line of base64)."""
    return LINE + base64.b64encode(seal(keyring, name, data))


__all__ = ["Keyring", "StateKey", "keyring_from", "seal", "seal_line", "unseal"]


class SecretDigest(BaseModel):
    """A record's keyed digest of the S3 secrets it sent: a random salt and the HMAC-SHA256."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    salt: str = ""
    digest: str = ""


def secret_digest(values: list[str], salt: str | None = None) -> SecretDigest:
    """A salted HMAC-SHA256 of secret values: enough to see a rotation, useless to recover them."""
    salt = salt or secrets_module.token_hex(16)
    mac = hmac.new(bytes.fromhex(salt), digestmod=hashlib.sha256)
    for value in values:
        mac.update(len(value).to_bytes(4, "big") + value.encode())
    return SecretDigest(salt=salt, digest=mac.hexdigest())


def secrets_rotated(recorded: SecretDigest | None, values: list[str]) -> bool:
    """True when ``values`` are not the ones whose digest was recorded (False without a record)."""
    if recorded is None or not recorded.salt or not recorded.digest:
        return False
    try:
        current = secret_digest(values, recorded.salt)
    except ValueError:
        return False
    return not hmac.compare_digest(current.digest, recorded.digest)
