"""The chain head's byte-range locks: overlapping writes take turns, others run together."""

from __future__ import annotations

import trio
import trio.testing

from vmstore.dfs.chunkserver.range_lock import RangeLocks
from vmstore.dfs.constants import BLOCK_SIZE_BYTES

BLOCK = BLOCK_SIZE_BYTES


async def _hold_until(locks: RangeLocks, ranges: list[tuple[int, int]], held: list[str],
                      name: str, release: trio.Event) -> None:
    async with locks.hold_many(7, ranges):
        held.append(name)
        await release.wait()
    held.remove(name)


async def test_overlapping_holds_take_turns() -> None:
    locks, held = RangeLocks(), []
    first_done, second_done = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold_until, locks, [(0, 2 * BLOCK)], held, "first", first_done)
        await trio.testing.wait_all_tasks_blocked()
        # Same block, different bytes: blocks are the unit (a read-modify-write).
        nursery.start_soon(_hold_until, locks, [(BLOCK + 10, 5)], held, "second", second_done)
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["first"]
        first_done.set()
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["second"]
        second_done.set()
    assert held == []


async def test_disjoint_holds_run_together() -> None:
    locks, held = RangeLocks(), []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold_until, locks, [(0, BLOCK)], held, "low", done)
        nursery.start_soon(_hold_until, locks, [(BLOCK, BLOCK)], held, "high", done)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(held) == ["high", "low"]
        done.set()


async def test_a_batch_waiting_for_one_range_holds_none() -> None:
    """A batch of blocks 0 and 2 waits for block 2 without holding block 0: a
    write of block 0 alone goes meanwhile, and the batch then gets both."""
    locks, held = RangeLocks(), []
    middle_done, batch_done, low_done = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_hold_until, locks, [(2 * BLOCK, BLOCK)], held, "block 2",
                           middle_done)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_hold_until, locks, [(0, BLOCK), (2 * BLOCK, 100)], held,
                           "batch", batch_done)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(_hold_until, locks, [(0, BLOCK)], held, "block 0", low_done)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(held) == ["block 0", "block 2"]
        middle_done.set()
        low_done.set()
        await trio.testing.wait_all_tasks_blocked()
        assert held == ["batch"]
        batch_done.set()
    assert held == []


async def test_an_error_in_the_block_releases_the_ranges() -> None:
    locks = RangeLocks()
    try:
        async with locks.hold(7, 0, BLOCK):
            raise RuntimeError("the write failed")
    except RuntimeError:
        pass
    with trio.fail_after(1):
        async with locks.hold(7, 0, BLOCK):
            pass
