"""Group commit on a real SQLite file: batching, isolation of a failing change."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.errors import Exists
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
