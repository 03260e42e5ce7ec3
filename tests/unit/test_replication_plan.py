"""The replication planner is pure: chunk rows and server states in, work out."""

from __future__ import annotations

from vmstore.dfs.master.registry import ChunkserverEntry
from vmstore.dfs.master.replication import plan
from vmstore.dfs.types import ChunkId, ServerId

NOW_S = 1000.0
DELAY_S = 30.0


class _Open:
    """Stands for a live connection: only ``closed.is_set()`` is asked."""

    class closed:  # noqa: N801 - mimics trio.Event's interface
        @staticmethod
        def is_set() -> bool:
            return False


def servers(up: list[int], down_since: dict[int, float] | None = None,
            draining: tuple[int, ...] = ()) -> dict[ServerId, ChunkserverEntry]:
    result = {}
    for server in up:
        entry = ChunkserverEntry(ServerId(server), "127.0.0.1", 9000 + server, f"h{server}",
                                 connection=_Open(), last_heartbeat_s=NOW_S)  # type: ignore[arg-type]
        entry.draining = server in draining
        result[ServerId(server)] = entry
    for server, heartbeat_s in (down_since or {}).items():
        result[ServerId(server)] = ChunkserverEntry(ServerId(server), "127.0.0.1", 9000 + server,
                                                    f"h{server}", last_heartbeat_s=heartbeat_s)
    return result


def row(chunk: int, goal: int, *holders: int) -> tuple[ChunkId, int, list[ServerId]]:
    return ChunkId(chunk), goal, [ServerId(h) for h in holders]


def test_most_endangered_first_and_lost_chunks_skipped() -> None:
    state = servers([1, 2, 3], down_since={4: NOW_S - 100})
    under, over = plan([row(10, 3, 1, 2), row(11, 2, 1, 4), row(12, 2, 4), row(13, 2, 1, 2)],
                       state, NOW_S, DELAY_S)
    assert [need.chunk_id for need in under] == [11, 10]  # one live copy before two
    assert over == []  # chunk 12 has no live source: nothing to copy from


def test_a_briefly_absent_server_still_counts() -> None:
    state = servers([1], down_since={2: NOW_S - 5})
    under, _ = plan([row(10, 2, 1, 2)], state, NOW_S, DELAY_S)
    assert under == []
    under, _ = plan([row(10, 2, 1, 2)], state, NOW_S + DELAY_S, DELAY_S)
    assert [need.chunk_id for need in under] == [10]


def test_surplus_and_draining() -> None:
    state = servers([1, 2, 3], draining=(3,))
    under, over = plan([row(10, 1, 1, 2), row(11, 2, 1, 3), row(12, 2, 1, 2, 3)],
                       state, NOW_S, DELAY_S)
    assert [need.chunk_id for need in under] == [11]  # a draining copy does not count
    assert {need.chunk_id: need.surplus for need in over} == {10: (2,), 12: (3,)}
