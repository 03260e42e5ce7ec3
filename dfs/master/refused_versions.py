"""Newer versions the master refused: a chunkserver claimed a chunk at a version above the
master's record, and it never held that chunk (issue 19: a forgery by a key holder, or a
copy target whose copy the master gave up on).

Promise: every such claim is counted (``vmstore_master_refused_versions_total``) and the
last REFUSED_VERSIONS_KEPT_MAX of them, one per (chunk, chunkserver), are listed for
`vmstore status`, newest last. The master never adopts the claim; the chunkserver is told
to quarantine that replica (reversible for the quarantine's retention time). One owner:
the ChunkManager's registration check (``reconcile_report``) notes them; status reads them.

Caveats: in memory only; a master restart forgets the list (the counter starts at 0,
as Prometheus counters do), and the chunkserver has quarantined the replica by then.
The note is made inside a commit's change (the committer's worker thread): a dict
assignment and a counter increment, both safe under the GIL.
"""

from __future__ import annotations

import time

from prometheus_client import Counter

from vmstore.dfs.constants import REFUSED_VERSIONS_KEPT_MAX
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol.messages import RefusedVersion
from vmstore.dfs.types import ChunkId, ChunkVersion, ServerId

REFUSED_VERSIONS = Counter(
    "vmstore_master_refused_versions_total",
    "Chunk versions above the master's record claimed by a chunkserver that never held"
    " the chunk (a forgery, or an abandoned copy): refused and quarantined",
    registry=REGISTRY)


class RefusedVersions:
    def __init__(self) -> None:
        self._kept: dict[tuple[ChunkId, ServerId], RefusedVersion] = {}

    def note(self, chunk_id: ChunkId, server_id: ServerId, claimed: int,
             master_version: ChunkVersion) -> None:
        REFUSED_VERSIONS.inc()
        key = (chunk_id, server_id)
        self._kept.pop(key, None)  # re-inserted: newest last
        self._kept[key] = RefusedVersion(
            chunk_id=chunk_id, server_id=server_id, claimed_version=claimed,
            master_version=master_version, refused_at_ns=time.time_ns())
        while len(self._kept) > REFUSED_VERSIONS_KEPT_MAX:
            del self._kept[next(iter(self._kept))]

    def listed(self) -> list[RefusedVersion]:
        return list(self._kept.values())
