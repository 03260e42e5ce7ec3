"""Group commit on a real SQLite file: batching, isolation of a failing change."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from vmstore.dfs.errors import Exists, MasterUnavailable
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import ROOT_INODE


async def test_many_concurrent_changes_share_few_commits(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "meta.db")
    committer = GroupCommitter(store)
    namespace = Namespace(store)
    results: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.serve)

        async def create(number: int) -> None:
            attrs = await committer.run(lambda: namespace.create(
                ROOT_INODE, f"f{number}".encode(), 0o100644, 0, 0, 0, 1))
            results[number] = attrs.inode

        async with trio.open_nursery() as clients:
            for number in range(200):
                clients.start_soon(create, number)
        # a failing change is undone alone; the batch around it commits
        async with trio.open_nursery() as clients:
            clients.start_soon(create, 1000)
            with pytest.raises(Exists):
                await committer.run(lambda: namespace.create(
                    ROOT_INODE, b"f0", 0o100644, 0, 0, 0, 1))
        nursery.cancel_scope.cancel()
    assert len(set(results.values())) == 201
    assert committer.changes == 202
    assert committer.batches < 100  # group commit: far fewer fsyncs than changes
    store.close()
    reopened = MetadataStore(tmp_path / "meta.db")  # durable: all there after reopening
    assert Namespace(reopened).inode_count() == 202


async def test_changes_queued_when_serving_ends_are_answered_not_left_waiting(
        tmp_path: Path) -> None:
    """An HA leader deposed (or a master stopping) cancels the committer with changes
    queued: their callers, waiting shielded, must be answered, or the master's
    teardown never ends (found by the cut-link HA test: a deposed leader hung)."""
    store = MetadataStore(tmp_path / "metadata.db")
    committer = GroupCommitter(store)
    in_batch, release = threading.Event(), threading.Event()

    def slow_change() -> str:
        in_batch.set()
        release.wait(10)
        return "committed"

    outcomes: list[object] = []

    async def change(work: Callable[[], object]) -> None:
        try:
            outcomes.append(await committer.run(work))
        except MasterUnavailable as error:
            outcomes.append(error)

    with trio.fail_after(10):
        async with trio.open_nursery() as callers:
            with trio.CancelScope() as serving:
                async with trio.open_nursery() as service:
                    await service.start(committer.serve)
                    callers.start_soon(change, slow_change)
                    await trio.to_thread.run_sync(in_batch.wait)
                    for _ in range(3):  # queued behind the batch under way
                        callers.start_soon(change, lambda: "never")
                    await trio.sleep(0.1)
                    serving.cancel()
                    release.set()
            callers.start_soon(change, lambda: "after")
    assert outcomes[0] == "committed"
    assert len(outcomes) == 5
    assert all(isinstance(outcome, MasterUnavailable) for outcome in outcomes[1:])


async def test_lazy_changes_are_durable_at_a_sync_a_durable_change_or_within_the_delay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        mock_clock: trio.testing.MockClock) -> None:
    """The embedded master's committer (issue 18 part 3): a lazy change is answered
    once committed and fsynced later; a durable one, and anything lazy before it, is
    fsynced before its answer; nothing stays unsynced past METADATA_SYNC_DELAY_S_MAX."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    store = MetadataStore(tmp_path / "meta.db", fsync_commits=False)
    committer = GroupCommitter(store, syncs_commits=True)
    namespace = Namespace(store)
    wal = str(tmp_path / "meta.db-wal")

    def create(name: bytes) -> Callable[[], object]:
        return lambda: namespace.create(ROOT_INODE, name, 0o100644, 0, 0, 0, 1)

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.serve)
        await committer.run(create(b"lazy"), durable=False)
        assert committer.durable_batches < committer.batches
        assert wal not in synced
        await committer.sync()
        assert synced.count(wal) == 1
        assert committer.durable_batches == committer.batches
        await committer.sync()  # nothing new: no fsync
        assert synced.count(wal) == 1

        await committer.run(create(b"lazy2"), durable=False)
        await committer.run(create(b"durable"))  # covers lazy2 too
        assert synced.count(wal) == 2
        assert committer.durable_batches == committer.batches

        def frees_something() -> object:
            committer.insist_durable()
            return create(b"insists")()

        await committer.run(frees_something, durable=False)
        assert synced.count(wal) == 3
        assert committer.durable_batches == committer.batches

        await committer.run(create(b"left"), durable=False)
        assert committer.durable_batches < committer.batches
        # Virtual time moves from here on only (past METADATA_SYNC_DELAY_S_MAX)
        # while this waits in real time for the background's fsync in its thread.
        mock_clock.autojump_threshold = 0
        for _ in range(500):
            if committer.durable_batches == committer.batches:
                break
            await trio.to_thread.run_sync(time.sleep, 0.01)
        assert committer.durable_batches == committer.batches
        assert synced.count(wal) == 4
        nursery.cancel_scope.cancel()
    store.close()


async def test_a_batch_of_lazy_changes_commits_on_the_trio_thread(tmp_path: Path) -> None:
    """No hop to a worker thread and back for what needs no fsync (two GIL handoffs,
    milliseconds on a busy master); a durable change still syncs in a worker."""
    store = MetadataStore(tmp_path / "meta.db", fsync_commits=False)
    committer = GroupCommitter(store, syncs_commits=True)
    namespace = Namespace(store)
    threads: dict[str, threading.Thread] = {}

    def create(name: bytes) -> Callable[[], object]:
        def change() -> object:
            threads[name.decode()] = threading.current_thread()
            return namespace.create(ROOT_INODE, name, 0o100644, 0, 0, 0, 1)
        return change

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.serve)
        await committer.run(create(b"lazy"), durable=False)
        await committer.run(create(b"durable"))
        nursery.cancel_scope.cancel()
    assert threads["lazy"] is threading.current_thread()
    assert threads["durable"] is not threading.current_thread()
    store.close()
    reopened = MetadataStore(tmp_path / "meta.db")
    assert Namespace(reopened).inode_count() == 3  # the root, both files


async def test_a_lazy_change_is_not_held_behind_an_earlier_changes_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit, pipelined: a durable batch's fsync runs beside the batches after
    it, and only its own callers wait for it (a create is not held behind the fsync
    of another file's lease release)."""
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith("-wal"):
            entered.set()
            assert release.wait(30), "the test never let the fsync end"
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    store = MetadataStore(tmp_path / "meta.db", fsync_commits=False)
    committer = GroupCommitter(store, syncs_commits=True)
    namespace = Namespace(store)
    answered: list[str] = []

    def create(name: str) -> Callable[[], object]:
        return lambda: namespace.create(ROOT_INODE, name.encode(), 0o100644, 0, 0, 0, 1)

    async def run(name: str, durable: bool) -> None:
        await committer.run(create(name), durable=durable)
        answered.append(name)

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.serve)
        nursery.start_soon(run, "durable", True)
        await trio.to_thread.run_sync(entered.wait, 30)  # its fsync has begun
        nursery.start_soon(run, "lazy", False)
        try:
            for _ in range(1000):  # 10 s at most
                if answered:
                    break
                await trio.sleep(0.01)
            assert answered == ["lazy"]  # answered while the fsync before it still runs
        finally:
            release.set()
        with trio.fail_after(30):
            while "durable" not in answered:
                await trio.sleep(0.01)
        assert committer.durable_batches >= 1
        nursery.cancel_scope.cancel()
    store.close()
