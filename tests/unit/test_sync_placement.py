"""Where a chunkserver runs fdatasync: inline while the disk is fast, else in the worker."""

from __future__ import annotations

import trio
import trio.testing

from vmstore.dfs.chunkserver.data_service import (
    INLINE_SYNC_SLOW_S,
    SLOW_SYNC_BACKOFF_S,
    SyncPlacement,
)


def run_with_mock_clock(function: object) -> None:
    trio.run(function, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def test_fast_syncs_stay_inline() -> None:
    async def check() -> None:
        placement = SyncPlacement()
        for _ in range(100):
            assert placement.inline()
            placement.took(INLINE_SYNC_SLOW_S / 2, chunk_id=1)
        assert placement.inline()

    run_with_mock_clock(check)


def test_one_slow_sync_sends_syncs_to_the_worker_for_the_backoff() -> None:
    async def check() -> None:
        placement = SyncPlacement()
        placement.took(INLINE_SYNC_SLOW_S * 2, chunk_id=1)
        assert not placement.inline()
        await trio.sleep(SLOW_SYNC_BACKOFF_S * 0.9)
        assert not placement.inline()
        await trio.sleep(SLOW_SYNC_BACKOFF_S * 0.2)
        assert placement.inline()  # the disk gets another chance

    run_with_mock_clock(check)
