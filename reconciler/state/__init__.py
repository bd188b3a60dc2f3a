"""State and journal: what the tool recorded of each lookup, where it is kept, and the audit trail.

- ``records``: ``State`` (a record per lookup, an append-only log compacted with conditional writes),
  the state lock, ``unlock`` and ``migrate``;
- ``backends``: where the bytes live (a local folder, or an object store through obstore), sealed
  when a state key is set (``crypto``);
- ``snapshots``: the content of every CSV sent, beside the state;
- ``journal``: the history of every change (JSONL beside a local state, objects beside a remote one).
"""

from reconciler.state.backends import new_run_id
from reconciler.state.crypto import secret_digest, secrets_rotated
from reconciler.state.lock import LockedError, LockInfo, StateLock, read_lock, unlock
from reconciler.state.records import (
    DEPLOYED,
    SUBMITTED,
    VERSION,
    CsvRecord,
    LookupState,
    Observed,
    State,
    migrate,
)

__all__ = [
    "DEPLOYED",
    "SUBMITTED",
    "VERSION",
    "CsvRecord",
    "LockInfo",
    "LockedError",
    "LookupState",
    "Observed",
    "State",
    "StateLock",
    "migrate",
    "new_run_id",
    "read_lock",
    "secret_digest",
    "secrets_rotated",
    "unlock",
]
