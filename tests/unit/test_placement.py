from __future__ import annotations

import random

from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.master.placement import Candidate, choose_servers, order_for_reader
from vmstore.dfs.types import ServerId

BIG = 100 * CHUNK_SIZE_BYTES


def cand(server: int, label: str, free: int = BIG) -> Candidate:
    return Candidate(ServerId(server), label, free)


def test_distinct_hosts_and_writer_first() -> None:
    rng = random.Random(1)
    servers = [cand(1, "a"), cand(2, "a"), cand(3, "b"), cand(4, "c")]
    for _ in range(50):
        chosen = choose_servers(servers, 3, "b", rng)
        assert chosen[0] == 3
        labels = {s.host_label for s in servers if s.server_id in chosen}
        assert len(labels) == 3


def test_full_disks_and_too_few_hosts() -> None:
    rng = random.Random(2)
    servers = [cand(1, "a", free=CHUNK_SIZE_BYTES), cand(2, "b"), cand(3, "b")]
    chosen = choose_servers(servers, 3, "a", rng)
    assert len(chosen) == 1 and chosen[0] in (2, 3)
    assert choose_servers([], 2, "a", rng) == []


def test_reader_order_prefers_local() -> None:
    assert order_for_reader([(ServerId(1), "a"), (ServerId(2), "b")], "b") == [2, 1]
