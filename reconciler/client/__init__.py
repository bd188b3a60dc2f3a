"""The Lookups API client: the public surface (private modules hold the implementation).

``LookupReader`` reads (list with paging, get, jobs); ``LookupClient`` also deploys and deletes.
``wait_for_job`` and ``job_outcome`` decide when a job is over. ``open_client``/``open_reader`` build
them from resolved ``Settings`` (the embedded emulator in-process when no endpoint is set).
"""

from __future__ import annotations

from reconciler.canonical import visibility_of
from reconciler.client._client import LookupClient, LookupReader
from reconciler.client._jobs import JobResult, PollPolicy, job_outcome, job_state, wait_for_job
from reconciler.client._models import (
    CreationResponse,
    DeployResult,
    FieldInfo,
    JobStatus,
    LookupMeta,
)
from reconciler.client._transport import RetryPolicy, lookup_path

__all__ = [
    "CreationResponse",
    "DeployResult",
    "FieldInfo",
    "JobResult",
    "JobStatus",
    "LookupClient",
    "LookupMeta",
    "LookupReader",
    "PollPolicy",
    "RetryPolicy",
    "job_outcome",
    "job_state",
    "lookup_path",
    "visibility_of",
    "wait_for_job",
]
