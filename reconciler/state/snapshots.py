"""Content snapshots: the CSV bytes apply sent for each ``csv.file`` lookup, kept beside the state.

A snapshot is content-addressed (``snapshots/SHA256.zst``, the sha256 of the uncompressed file, the
one the record holds) and compressed with zstd (level 3: about a third of a CSV's bytes at ~190 MB/s,
against gzip's 17 MB/s for a slightly smaller file; measured in ``bench/RESULTS.md``). It is written
before the record that points at it, so a record never names a snapshot that is not there. With it,
the content last applied is known without git history: row diffs and delta uploads work on shallow
clones, for generated files never committed, and after a history rewrite. A snapshot no record
names any more is removed at the end of a successful apply, under the state's lock.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from pathlib import Path

import zstandard

from reconciler.state.backends import AlreadyExists, Backend, open_backend

PREFIX = "snapshots/"
LEVEL = 3
_NAME = re.compile(r"^snapshots/([0-9a-f]{64})\.zst$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Snapshots:
    """The snapshots of one state location."""

    def __init__(self, location: str, backend: Backend | None = None) -> None:
        self.location = location
        self.backend = backend if backend is not None else open_backend(location)[0]
        self._kept: set[str] | None = None  # listed once, on the first put

    @staticmethod
    def key(sha256: str) -> str:
        """Where the snapshot of content ``sha256`` is kept."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256: {sha256[:80]!r}")
        return f"{PREFIX}{sha256}.zst"

    def put(self, path: Path, sha256: str) -> int:
        """Keep the content of ``path`` (whose sha256 is ``sha256``); the bytes written (0 when a
        snapshot of it is there already). The content is hashed again on the way: a file that
        changed since it was sent is not kept under another's name."""
        key = self.key(sha256)
        if self._kept is None:
            self._kept = set(self.sizes())
        if sha256 in self._kept:
            return 0
        digest = hashlib.sha256()
        compressor = zstandard.ZstdCompressor(level=LEVEL).compressobj()
        parts = []
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                parts.append(compressor.compress(chunk))
        parts.append(compressor.flush())
        if digest.hexdigest() != sha256:
            return 0  # changed on disk since it was sent: nothing proves what was sent
        data = b"".join(parts)
        try:
            self.backend.write(key, data, create=True)
        except AlreadyExists:
            return 0  # another run kept the same content
        finally:
            self._kept.add(sha256)
        return len(data)

    def fetch(self, sha256: str, into: Path) -> Path | None:
        """The content ``sha256`` written to ``into`` (checked against its sha256), or None when
        no snapshot of it is kept (or what is kept is not that content, or ``sha256`` is not one:
        a record edited by hand names no content)."""
        if not _SHA256.fullmatch(sha256):
            return None
        stored = self.backend.read(self.key(sha256))
        if stored is None:
            return None
        digest = hashlib.sha256()
        try:
            with (
                zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored.data)) as reader,
                into.open("wb") as out,
            ):
                while chunk := reader.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except zstandard.ZstdError:
            return None
        return into if digest.hexdigest() == sha256 else None

    def sizes(self) -> dict[str, int]:
        """Every snapshot kept: sha256 → its compressed size in bytes."""
        found = {}
        for key, size in self.backend.sizes(PREFIX).items():
            match = _NAME.match(key)
            if match:
                found[match.group(1)] = size
        return found

    def collect(self, referenced: set[str]) -> list[str]:
        """Remove every snapshot no record names; the sha256s removed."""
        removed = []
        for sha256 in sorted(set(self.sizes()) - referenced):
            self.backend.delete(self.key(sha256))
            removed.append(sha256)
        return removed


def referenced(records: Mapping[str, object]) -> set[str]:
    """The sha256s the records of a state point at (a malformed one points at nothing)."""
    found = set()
    for record in records.values():
        sha = getattr(getattr(record, "csv", None), "sha256", None)
        if isinstance(sha, str) and _SHA256.fullmatch(sha):
            found.add(sha)
    return found


__all__ = ["PREFIX", "Snapshots", "referenced"]
