"""Files without a name that nobody holds open any more: deleted, chunks and all.

Built before the services that let go of files (the lease manager, when a
session's files are released; the client service, when a client closes one),
so that each is built complete with it.
"""

from __future__ import annotations

import trio

from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.master.registry import Registry
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.types import ChunkId, ChunkVersion, InodeId


class Orphans:
    def __init__(self, committer: GroupCommitter, writer_namespace: Namespace,
                 reader_namespace: Namespace, chunk_manager: ChunkManager,
                 registry: Registry) -> None:
        self.committer = committer
        self.writer_namespace = writer_namespace
        self.namespace = reader_namespace
        self.chunk_manager = chunk_manager
        self.registry = registry

    async def delete(self, inodes: list[InodeId]) -> None:
        """Files nobody holds any more that have no name: delete them now.

        Asked at every last close of a file (most still have their name, and
        nothing changes): a lazy change, durable before it returns only when it
        frees chunks, which the deleter may then remove (``dfs.master.committer``).
        """
        def change() -> list[tuple[ChunkId, ChunkVersion]]:
            freed: list[tuple[ChunkId, ChunkVersion]] = []
            for inode in inodes:
                freed.extend(self.writer_namespace.delete_orphan(inode))
            if freed:
                self.committer.insist_durable()
            return freed

        if await self.committer.run(change, durable=False):
            self.chunk_manager.deletions_wanted.set()

    async def sweep_after_restart(self, grace_s: float) -> None:
        """After a restart, clients have ``grace_s`` to re-declare their open files."""
        await trio.sleep(grace_s)
        orphans = [i for i in self.namespace.orphans() if not self.registry.is_open(i)]
        if orphans:
            await self.delete(orphans)
