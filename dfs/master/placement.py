"""Where replicas go: pure functions, no I/O, a seeded RNG for tests.

Rules, in order: replicas of one chunk sit on distinct hosts (host labels);
a server without room for a whole chunk beside the reservations of the
chunks it holds is never chosen; the writer's own
host comes first (reads stay local, the chain starts next to the writer);
the rest are drawn at random weighted by free space, so full disks fill
last and new disks fill first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vmstore.dfs.constants import SPACE_MARGIN_BYTES
from vmstore.dfs.protocol.replica_format import FILE_SIZE_BYTES
from vmstore.dfs.types import ServerId

# A new replica reserves its full size on its chunkserver, which refuses it
# unless its free space less its reservations keeps SPACE_MARGIN_BYTES over
# (dfs.chunkserver.space_ledger): candidates' bytes_free is that free less reserved.
RESERVE_BYTES = FILE_SIZE_BYTES + SPACE_MARGIN_BYTES


@dataclass(frozen=True)
class Candidate:
    server_id: ServerId
    host_label: str
    bytes_free: int


def choose_servers(
    candidates: list[Candidate], count: int, writer_host_label: str, rng: random.Random,
    exclude_host_labels: frozenset[str] = frozenset(),
) -> list[ServerId]:
    """Up to ``count`` servers on distinct hosts, writer's host first."""
    assert count >= 0
    usable = [c for c in candidates
              if c.bytes_free >= RESERVE_BYTES and c.host_label not in exclude_host_labels]
    chosen: list[Candidate] = []
    used_labels: set[str] = set()
    local = [c for c in usable if c.host_label == writer_host_label]
    if local and count > 0:
        best = max(local, key=lambda c: (c.bytes_free, -c.server_id))
        chosen.append(best)
        used_labels.add(best.host_label)
    while len(chosen) < count:
        pool = [c for c in usable if c.host_label not in used_labels]
        if not pool:
            break
        pick = rng.choices(pool, weights=[c.bytes_free for c in pool])[0]
        chosen.append(pick)
        used_labels.add(pick.host_label)
    return [c.server_id for c in chosen]


def order_for_reader(
    holders: list[tuple[ServerId, str]], reader_host_label: str
) -> list[ServerId]:
    """Replicas on the reader's host first, the rest in a stable order."""
    return [server for server, label in
            sorted(holders, key=lambda h: (h[1] != reader_host_label, h[0]))]
