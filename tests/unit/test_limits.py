"""Limits on what one peer can make a daemon hold: request bytes, connections."""

from __future__ import annotations

import contextlib

import pytest
import trio
import trio.testing

from tests.unit.test_rpc import KEY, attrs, start_server
from vmstore.dfs.constants import REQUEST_BYTES_PER_CONNECTION_MAX
from vmstore.dfs.errors import PeerUnavailable
from vmstore.dfs.protocol import rpc
from vmstore.dfs.protocol.limits import ByteBudget, PeerConnections, acquire_uncontended_at_once
from vmstore.dfs.protocol.messages import AttrsReply, ClientToMasterGetAttr, ClientToMasterStatFs

MIB = 1024 * 1024


async def test_byte_budget_serves_in_order_and_never_overflows() -> None:
    budget = ByteBudget(10, "test")
    await budget.acquire(6)
    order: list[str] = []

    async def take(name: str, wanted: int) -> None:
        await budget.acquire(wanted)
        order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take, "big", 8)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(take, "small", 1)  # fits now, but waits behind the big one
        await trio.testing.wait_all_tasks_blocked()
        assert order == [] and budget.used_bytes == 6
        budget.release(6)
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(order) == ["big", "small"] and budget.used_bytes == 9
    with pytest.raises(ValueError, match="exceed the whole budget"):
        await budget.acquire(11)


async def test_a_cancelled_waiter_holds_nothing_and_blocks_nobody() -> None:
    budget = ByteBudget(10, "test")
    await budget.acquire(5)
    granted: list[int] = []
    big_waiter = trio.CancelScope()

    async def big() -> None:
        with big_waiter:
            await budget.acquire(9)

    async def small() -> None:
        await budget.acquire(4)
        granted.append(4)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(big)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(small)
        await trio.testing.wait_all_tasks_blocked()
        assert granted == []  # behind the big one
        big_waiter.cancel()
    assert granted == [4] and budget.used_bytes == 9


def test_connections_are_counted_per_address_and_in_all() -> None:
    limits = PeerConnections(per_peer=2, total=3)
    with limits.admit("10.0.0.1") as first, limits.admit("10.0.0.1") as second:
        assert (first, second) == ("", "")
        with limits.admit("10.0.0.1") as third:
            assert third == "10.0.0.1 already has 2 connections (at most 2 per address)"
        with limits.admit("10.0.0.2") as other:
            assert other == ""
            with limits.admit("10.0.0.3") as over:
                assert over == "3 connections open (at most 3)"
    with limits.admit("10.0.0.1") as again:
        assert again == ""  # slots come back when connections end
    assert limits.refusals_to_log("10.0.0.9", 100.0) == 1
    assert limits.refusals_to_log("10.0.0.9", 101.0) == 0  # quiet for a while
    assert limits.refusals_to_log("10.0.0.9", 102.0) == 0
    assert limits.refusals_to_log("10.0.0.9", 111.0) == 3  # then the count since


async def test_a_flood_of_large_requests_holds_one_connection_budget_and_others_go_on(
) -> None:
    """Requests that never finish, 4 MiB each, 160 MiB in all: the server reads
    until the connection's budget is full and then stops reading; another
    peer's calls are answered meanwhile."""
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        async with rpc.open_connection("127.0.0.1", port, KEY, "client") as flood:
            async def stuck_call() -> None:
                with contextlib.suppress(PeerUnavailable):  # when the flood is closed
                    await flood.call(ClientToMasterStatFs(), bytes(4 * MIB), timeout_s=600)

            for _ in range(40):  # the server's handler sleeps forever on StatFs
                nursery.start_soon(stuck_call)
            with trio.move_on_after(10):
                while rpc.PROCESS_REQUEST_BYTES.used_bytes < (
                        REQUEST_BYTES_PER_CONNECTION_MAX - 4 * MIB):
                    await trio.sleep(0.05)
            await trio.sleep(0.5)  # would it read more?
            held = rpc.PROCESS_REQUEST_BYTES.used_bytes
            assert REQUEST_BYTES_PER_CONNECTION_MAX - 4 * MIB < held <= (
                REQUEST_BYTES_PER_CONNECTION_MAX)
            async with rpc.open_connection("127.0.0.1", port, KEY, "client") as honest:
                reply, _ = await honest.call(ClientToMasterGetAttr(inode=7), timeout_s=10,
                                             reply_type=AttrsReply)
                assert reply.attrs == attrs(7)
        nursery.cancel_scope.cancel()
    assert rpc.PROCESS_REQUEST_BYTES.used_bytes == 0  # all given back when the flood ended


async def test_connections_over_the_per_address_limit_are_closed_at_once(
        monkeypatch: pytest.MonkeyPatch, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused")
    monkeypatch.setattr(rpc, "CONNECTIONS_PER_PEER_MAX", 3)
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        silent = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
                  for _ in range(3)]  # they say nothing: still in their handshake
        extra = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        with trio.fail_after(5):
            assert await extra.receive_some(100) == b""  # closed without a word
        async with rpc.open_connection("127.0.0.1", port, KEY, "client") as honest:
            reply, _ = await honest.call(ClientToMasterGetAttr(inode=3), reply_type=AttrsReply)
            assert reply.attrs.inode == 3
        for stream in silent:
            await stream.aclose()
        await trio.sleep(0.2)
        later = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
        with trio.move_on_after(0.5) as waited:
            await later.receive_some(100)  # admitted: the server waits for its hello
        assert waited.cancelled_caught
        await later.aclose()
        nursery.cancel_scope.cancel()


async def test_a_free_resource_is_taken_at_once_and_a_held_one_waited_for() -> None:
    lock = trio.Lock()
    with trio.CancelScope() as scope:
        scope.cancel()  # a checkpoint in here would raise Cancelled
        await acquire_uncontended_at_once(lock)
    assert lock.locked() and not scope.cancelled_caught
    taken = trio.Event()

    async def second() -> None:
        await acquire_uncontended_at_once(lock)
        taken.set()
        lock.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        assert not taken.is_set()
        lock.release()
    assert taken.is_set()
