"""The quarantine empties only by the rules: retention passed and the master's word, or
space pressure (oldest first); restore never overwrites a replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.quarantine_keeper import QuarantineKeeper
from vmstore.dfs.errors import Exists, PeerUnavailable


async def _inline(_size: int, function: Any, *args: Any) -> Any:
    return function(*args)


def _store_with_quarantined(tmp_path: Path, chunk_ids: list[int]) -> ChunkStore:
    store = ChunkStore(tmp_path)
    for chunk_id in chunk_ids:
        store.create(chunk_id, 1)
        store.write(chunk_id, 1, 0, 4096, b"\x07" * 4096, [])
        store.delete(chunk_id)
    return store


async def test_only_chunks_the_master_calls_safe_go_after_the_retention(
        tmp_path: Path) -> None:
    with _store_with_quarantined(tmp_path, [1, 2, 3]) as store:
        asked: list[list[int]] = []

        async def ask(chunk_ids: list[int]) -> list[int]:
            asked.append(chunk_ids)
            return [2]

        roomy = (100 * 2**30, 2**30)
        await QuarantineKeeper(store.quarantine, lambda: roomy, _inline, 3600.0, ask).tend()
        assert asked == [] and len(store.quarantine.entries()) == 3, "within the retention"
        await QuarantineKeeper(store.quarantine, lambda: roomy, _inline, 0.0, ask).tend()
        assert asked == [[1, 2, 3]]
        assert [e.chunk_id for e in store.quarantine.entries()] == [1, 3]

        async def no_master(chunk_ids: list[int]) -> list[int]:
            raise PeerUnavailable("not registered with a master")

        await QuarantineKeeper(store.quarantine, lambda: roomy, _inline, 0.0, no_master).tend()
        assert [e.chunk_id for e in store.quarantine.entries()] == [1, 3]


async def test_space_pressure_purges_the_oldest_first(
        tmp_path: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "purged early")
    with _store_with_quarantined(tmp_path, [5, 4, 6]) as store:
        async def ask(chunk_ids: list[int]) -> list[int]:
            return []

        size = store.quarantine.entries()[0].size_bytes
        total = 100 * size * 20  # 5 % of it free is 100 entries' worth
        short = (total, total - 100 * size + 2 * size)  # two entries short
        await QuarantineKeeper(store.quarantine, lambda: short, _inline, 0.0, ask).tend()
        assert [e.chunk_id for e in store.quarantine.entries()] == [6]


def test_restore_puts_a_replica_back_and_never_over_one(tmp_path: Path) -> None:
    with _store_with_quarantined(tmp_path, [9, 9]) as store:
        older, newer = store.quarantine.entries()
        store.quarantine.restore(newer.name)
        assert store.read(9, 1, 0, 4096) == (b"\x07" * 4096, [])
        with pytest.raises(Exists):
            store.quarantine.restore(older.name)
        assert store.list_chunks() == [(9, 1)]
