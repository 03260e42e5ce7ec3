"""The master's chunk logic: allocation, write chains, versions, deletions.

Promises:
* A chunk's version changes whenever the set of replicas holding its
  current data changes, and the change is durable before any client learns
  the new chain. A replica left out (its server down or failed mid-write)
  keeps the old version, so it is stale and never read again.
* Chain changes, truncations and allocations of one chunk are serialised by
  a per-chunk lock; every chunkserver command has a timeout.
* Chunks nobody uses any more are deleted on every holder, eventually: the
  list survives restarts, and a holder that was away is told on its return.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import trio

from vmstore.dfs.constants import (
    CHUNK_DELETIONS_PER_PASS_MAX,
    CHUNK_SIZE_BYTES,
    FENCE_CHUNKS_PER_MESSAGE_MAX,
    FILE_SIZE_BYTES_MAX,
    HEARTBEAT_INTERVAL_S,
    REPLICATION_TIMEOUT_S,
)
from vmstore.dfs.errors import (
    DfsError,
    InvalidArgument,
    NoSpace,
    NotFound,
    ReplicaUnavailable,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.chunkserver_commands import command_all
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.master.damage import DamageBook
from vmstore.dfs.master.keyed_lock import KeyedLock
from vmstore.dfs.master.pardons import Pardons
from vmstore.dfs.master.placement import Candidate, choose_servers, order_for_reader
from vmstore.dfs.master.reconcile import reconcile_report
from vmstore.dfs.master.refused_versions import RefusedVersions
from vmstore.dfs.master.registry import ChunkserverEntry, Registry
from vmstore.dfs.metadata.chunks import ChunkTable
from vmstore.dfs.protocol.capability import CapabilitySigner
from vmstore.dfs.protocol.messages import (
    ChunkLocation,
    ChunkReport,
    MasterToChunkserverCreateChunk,
    MasterToChunkserverDeleteChunk,
    MasterToChunkserverFence,
    MasterToChunkserverReplicate,
    MasterToChunkserverRevertVersion,
    MasterToChunkserverSetVersion,
    MasterToChunkserverTruncateChunk,
    Request,
)
from vmstore.dfs.protocol.replica_format import FILE_SIZE_BYTES
from vmstore.dfs.types import ChunkId, ChunkVersion, InodeId, ServerId

log = logging.getLogger(__name__)


class ChunkManager:
    def __init__(
        self,
        committer: GroupCommitter,
        writer_chunks: ChunkTable,
        reader_chunks: ChunkTable,
        registry: Registry,
        rng: random.Random,
        signer: CapabilitySigner,
    ) -> None:
        self.committer = committer
        self.writer_chunks = writer_chunks  # only inside committer changes
        self.chunks = reader_chunks
        self.registry = registry
        self.rng = rng
        self.signer = signer  # read capabilities for the copies it orders
        self.chunk_locks = KeyedLock()
        self.deletions_wanted = trio.Event()
        self.allocating: set[ChunkId] = set()
        self.damage = DamageBook()  # damaged last copies, kept
        self.refused_versions = RefusedVersions()  # newer versions not adopted
        self.pardons = Pardons()  # holders a failed copy's given-back bump reverted

    # --- reading -----------------------------------------------------------------
    def location(
        self, index: int, chunk_id: ChunkId, version: ChunkVersion, reader_label: str
    ) -> ChunkLocation:
        holders = []
        for server_id in self.chunks.replicas(chunk_id):
            entry = self.registry.chunkservers.get(server_id)
            if entry is not None and entry.up:
                holders.append((server_id, entry.host_label))
        ordered = order_for_reader(holders, reader_label)
        # A silent one or a failing disk last: readers try replicas in order.
        ordered.sort(key=lambda s: self.registry.chunkservers[s].shunned)
        return ChunkLocation(
            index=index, chunk_id=chunk_id, version=version,
            replicas=[self.registry.chunkservers[s].address for s in ordered],
        )

    def locations(
        self, inode: InodeId, first_index: int, count: int, reader_label: str
    ) -> list[ChunkLocation]:
        if first_index < 0 or not 0 < count <= 4096:
            raise InvalidArgument(f"chunk range {first_index}+{count} out of bounds")
        return [self.location(index, chunk_id, version, reader_label)
                for index, chunk_id, version in self.chunks.chunks_in_range(
                    inode, first_index, count)]

    # --- writing -------------------------------------------------------------------
    async def chunk_for_write(
        self, inode: InodeId, index: int, goal: int, writer_label: str
    ) -> ChunkLocation:
        async with self.chunk_locks.hold(("file", inode, index)):
            existing = self.chunks.chunk_at(inode, index)
            if existing is None:
                return await self._allocate(inode, index, goal, writer_label)
            chunk_id, _ = existing
            async with self.chunk_locks.hold(chunk_id):
                return await self._write_chain(index, chunk_id, writer_label)

    async def _write_chain(self, index: int, chunk_id: ChunkId, label: str) -> ChunkLocation:
        """The chain to write to: every holder, all live; else the version moves on first.

        A holder that is down must not keep the current version while others
        take writes, or it would come back looking current with old data.
        The caller holds the chunk's lock.
        """
        version = self.chunks.version(chunk_id)
        if version is None:
            raise NotFound(f"chunk {chunk_id} was deleted meanwhile")
        up, down = self.registry.split_live(self.chunks.replicas(chunk_id))
        # A holder found silent, or with a failing disk, leaves too while another
        # stays: a writer would wait for it, then drop it anyway (never below one).
        shunned = [s for s in up if self.registry.chunkservers[s].shunned]
        if shunned and len(shunned) < len(up):
            down += shunned
            up = [s for s in up if s not in shunned]
        if down:
            await self._change_chain(chunk_id, version, up)
        return self._current_location(index, chunk_id, label)

    def _current_location(self, index: int, chunk_id: ChunkId, label: str) -> ChunkLocation:
        version = self.chunks.version(chunk_id)
        if version is None:
            raise NotFound(f"chunk {chunk_id} was deleted meanwhile")
        location = self.location(index, chunk_id, version, label)
        if not location.replicas:
            raise ReplicaUnavailable(f"no replica of chunk {chunk_id} is on a live chunkserver")
        return location

    async def _allocate(
        self, inode: InodeId, index: int, goal: int, writer_label: str
    ) -> ChunkLocation:
        candidates = [Candidate(e.server_id, e.host_label, e.bytes_free)
                      for e in self.registry.up_servers() if e.takes_new]
        chosen = choose_servers(candidates, goal, writer_label, self.rng)
        if len(chosen) < goal and self.registry.in_startup_grace():
            # Right after a restart most chunkservers have not registered yet:
            # a reason to wait (clients retry this), not to say the disk is full.
            raise ReplicaUnavailable("waiting for chunkservers to register after a restart")
        if not candidates:
            raise ReplicaUnavailable(f"no chunkserver is up to take chunk {index} of inode"
                                     f" {inode}")
        if not chosen:
            raise NoSpace(f"no chunkserver can take chunk {index} of inode {inode}"
                          f" ({len(candidates)} up, all full or none)")
        def reserve() -> ChunkId:
            # Reserved ids sit in chunk_deletions (so a crash here leaks
            # nothing); this set keeps the deletion loop off them while we
            # live. It is filled before the commit makes the row visible.
            reserved = self.writer_chunks.reserve_chunk_id()
            self.allocating.add(reserved)
            return reserved

        chunk_id = await self.committer.run(reserve)
        try:
            return await self._create_and_attach(inode, index, chunk_id, chosen, writer_label)
        finally:
            self.allocating.discard(chunk_id)

    async def _create_and_attach(self, inode: InodeId, index: int, chunk_id: ChunkId,
                                 chosen: list[ServerId], writer_label: str) -> ChunkLocation:
        refusals: dict[ServerId, DfsError] = {}
        created = await self._command_all(
            chosen, lambda _: MasterToChunkserverCreateChunk(chunk_id=chunk_id, version=1,
                                                             inode=inode, index=index),
            refusals)
        self._count_placements(created, refusals)
        if not created:
            if refusals and all(isinstance(e, NoSpace) for e in refusals.values()):
                raise NoSpace(f"no chunkserver has room for chunk {index} of inode {inode}"
                              f" ({len(refusals)} asked, all full)")
            raise ReplicaUnavailable(f"no chunkserver could create chunk {chunk_id}")

        def attach() -> None:
            self.writer_chunks.attach(inode, index, chunk_id, created)

        await self.committer.run(attach)
        # A server that confirmed the create may have died since: the chain must
        # not leave it out at this version, or it would come back current and
        # empty (found by the model check: its copy replaced the written one).
        async with self.chunk_locks.hold(chunk_id):
            return await self._write_chain(index, chunk_id, writer_label)

    def _count_placements(self, created: list[ServerId],
                          refusals: dict[ServerId, DfsError]) -> None:
        """Until their next heartbeats: a new replica's reservation on the servers that
        took one, and no room on those that said they have none."""
        for server_id in created:
            if (entry := self.registry.chunkservers.get(server_id)) is not None:
                entry.placed(FILE_SIZE_BYTES)
        for server_id, error in refusals.items():
            if isinstance(error, NoSpace) and (
                    entry := self.registry.chunkservers.get(server_id)) is not None:
                entry.placed(entry.bytes_free)

    async def report_bad_chain(
        self, inode: InodeId, index: int, chunk_id: ChunkId, version: ChunkVersion,
        failed: list[ServerId], writer_label: str,
    ) -> ChunkLocation:
        async with self.chunk_locks.hold(chunk_id):
            current = self.chunks.version(chunk_id)
            if current is None:
                raise NotFound(f"chunk {chunk_id} no longer exists")
            failed = self.pardons.unpardoned(chunk_id, version, failed)
            if current == version and failed:
                holders = self.chunks.replicas(chunk_id)
                self._suspect(chunk_id, [s for s in failed if s in holders])
                up, _ = self.registry.split_live(holders)
                survivors = [s for s in up if s not in failed]
                await self._change_chain(chunk_id, current, survivors)
            return await self._write_chain(index, chunk_id, writer_label)

    def _suspect(self, chunk_id: ChunkId, servers: list[ServerId]) -> None:
        """A writer dropped these members of the chunk's chain (silent, or failed): avoid
        them everywhere until they heartbeat again, well before CHUNKSERVER_DOWN_AFTER_S
        would mark a silent one down. One that is fine heartbeats within a second."""
        for server_id in servers:
            entry = self.registry.chunkservers.get(server_id)
            if entry is None or entry.suspect or not entry.up:
                continue
            entry.suspect = True
            log.info("chunkserver %d suspect: a writer dropped it from chunk %d's chain;"
                     " avoided until it heartbeats again", server_id, chunk_id,
                     extra=about("chunkserver_suspect", server=server_id, chunk=chunk_id))

    async def _change_chain(
        self, chunk_id: ChunkId, version: ChunkVersion, keep: list[ServerId]
    ) -> None:
        """Bump the version on ``keep``; those that confirm become the replicas."""
        new_version = ChunkVersion(version + 1)
        survivors = await self._command_all(keep, lambda _: MasterToChunkserverSetVersion(
            chunk_id=chunk_id, old_version=version, new_version=new_version))
        if not survivors:
            raise ReplicaUnavailable(f"no live replica of chunk {chunk_id} is left")
        await self._commit_version(chunk_id, new_version, survivors)
        log.info("chunk %d now version %d on servers %s", chunk_id, new_version, survivors)

    async def _commit_version(
        self, chunk_id: ChunkId, version: ChunkVersion, servers: list[ServerId]
    ) -> None:
        def change() -> None:
            self.writer_chunks.set_version(chunk_id, version)
            self.writer_chunks.set_replicas(chunk_id, servers)

        await self.committer.run(change)

    async def cut_chunk(self, inode: InodeId, new_size_bytes: int) -> None:
        """Zero the chunk that straddles a shrinking file's new end, on every replica."""
        index, length_bytes = divmod(new_size_bytes, CHUNK_SIZE_BYTES)
        if length_bytes == 0:
            return
        existing = self.chunks.chunk_at(inode, index)
        if existing is None:
            return
        chunk_id, _ = existing
        async with self.chunk_locks.hold(chunk_id):
            version = self.chunks.version(chunk_id)
            if version is None:
                return  # the file lost this chunk meanwhile: nothing to cut
            up, _ = self.registry.split_live(self.chunks.replicas(chunk_id))
            new_version = ChunkVersion(version + 1)
            survivors = await self._command_all(up, lambda _: MasterToChunkserverTruncateChunk(
                chunk_id=chunk_id, old_version=version, new_version=new_version,
                length_bytes=length_bytes))
            if not survivors:
                raise ReplicaUnavailable(f"cannot truncate chunk {chunk_id}: no live replica")
            await self._commit_version(chunk_id, new_version, survivors)

    async def fence_file(self, inode: InodeId, epoch: int) -> None:
        """Make every replica of the file refuse writes of lease epochs before ``epoch``.

        A replica that cannot be told (its server is down or does not
        answer) leaves its chunk's replica set by a version bump, as after a
        failed write: the fenced writer may still reach it, but nobody will
        read what it writes there.
        """
        rows = self.chunks.chunks_in_range(inode, 0, FILE_SIZE_BYTES_MAX // CHUNK_SIZE_BYTES)
        by_server: dict[ServerId, list[int]] = {}
        for _index, chunk_id, _version in rows:
            for server_id in self.chunks.replicas(chunk_id):
                by_server.setdefault(server_id, []).append(chunk_id)
        unfenced: set[ServerId] = set()
        for start in range(0, max(map(len, by_server.values()), default=0),
                           FENCE_CHUNKS_PER_MESSAGE_MAX):
            servers = [s for s, ids in by_server.items() if len(ids) > start]
            def batch(server_id: ServerId, start: int = start) -> Request:
                return MasterToChunkserverFence(epoch=epoch, chunk_ids=by_server[server_id][
                    start:start + FENCE_CHUNKS_PER_MESSAGE_MAX])

            told = await self._command_all(servers, batch)
            unfenced.update(set(servers) - set(told))
        if not unfenced:
            return
        for _index, chunk_id, _version in rows:
            async with self.chunk_locks.hold(chunk_id):
                version = self.chunks.version(chunk_id)
                holders = self.chunks.replicas(chunk_id)
                if version is None or not unfenced.intersection(holders):
                    continue
                keep = [h for h in holders if h not in unfenced]
                left = sorted(unfenced.intersection(holders))
                log.warning("chunk %d: chunkservers %s could not be fenced; they leave its"
                            " replica set", chunk_id, left,
                            extra=about("unfenced_replicas_dropped", chunk=chunk_id,
                                        servers=left))
                if keep:
                    await self._change_chain(chunk_id, version, keep)

    async def _command_all(
        self, servers: list[ServerId], make: Callable[[ServerId], Request],
        refusals: dict[ServerId, DfsError] | None = None,
    ) -> list[ServerId]:
        """``chunkserver_commands.command_all`` on this master's registry (one seam,
        which tests wrap)."""
        return await command_all(self.registry, servers, make, refusals)

    # --- healing ------------------------------------------------------------------------
    async def add_replica(self, chunk_id: ChunkId, goal: int) -> None:
        """Copy the chunk to one more host.

        The version moves on first, on the live replicas: writes in flight
        with the old version fail, and their clients wait on this chunk's
        lock for the new chain, which includes the copy. So the copy never
        misses a write. It moves only once a target is chosen, and a copy that
        fails gives it back (``_give_back``): a target that flaps, or nowhere to
        copy to, must not move the version once per healing pass (seen: version
        603 in a few minutes), making every replica away meanwhile stale.
        """
        async with self.chunk_locks.hold(chunk_id):
            version = self.chunks.version(chunk_id)
            if version is None or self.chunks.is_deleted(chunk_id):
                return
            up = [s for s in self.chunks.replicas(chunk_id)
                  if (e := self.registry.chunkservers.get(s)) is not None and e.up]
            if len([s for s in up if not self.registry.chunkservers[s].leaving]) >= goal:
                return
            if up and all(self.damage.is_damaged(chunk_id, s) for s in up):
                # A damaged last copy would fail the copy at its first bad block:
                # no bump for a copy that cannot be made.
                raise ReplicaUnavailable(f"chunk {chunk_id}: every live replica is damaged")
            target = self._copy_target(chunk_id, up)
            before = {s: self.registry.chunkservers.get(s) for s in self.chunks.replicas(chunk_id)}
            await self._change_chain(chunk_id, version, up)
            try:
                await self._copy_to(target, chunk_id, ChunkVersion(version + 1))
            except DfsError:
                await self._give_back(chunk_id, version, before)
                raise

    async def _copy_to(self, target: ChunkserverEntry, chunk_id: ChunkId,
                       version: ChunkVersion) -> None:
        holders = self.chunks.replicas(chunk_id)
        sources = [self.registry.chunkservers[h].address for h in sorted(
            holders, key=lambda h: self.registry.chunkservers[h].shunned)
                   if not self.damage.is_damaged(chunk_id, h)]  # a failing disk last
        capability = self.signer.read(0, chunk_id, life_s=REPLICATION_TIMEOUT_S)
        owner = self.chunks.file_of_chunk(chunk_id)  # for the copy's header
        inode, index = owner if owner is not None else (0, 0)
        assert target.connection is not None
        try:
            await target.connection.call(MasterToChunkserverReplicate(
                chunk_id=chunk_id, version=version, sources=sources,
                capability=capability, inode=inode, index=index),
                timeout_s=REPLICATION_TIMEOUT_S)
        except NoSpace:
            target.placed(target.bytes_free)  # full, until its next heartbeat
            raise
        await self.committer.run(lambda: self.writer_chunks.add_replica(chunk_id,
                                                                        target.server_id))
        log.info("chunk %d copied to chunkserver %d (now %d replicas)", chunk_id,
                 target.server_id, len(holders) + 1)

    async def _give_back(self, chunk_id: ChunkId, version: ChunkVersion,
                         before: dict[ServerId, ChunkserverEntry | None]) -> None:
        """A copy failed: its chunk goes back from ``version + 1`` to ``version``, with the
        replicas it had that the bump dropped while away (down, not registered since:
        still at ``version``, and nothing was written meanwhile). The master's record
        moves back first: a crash before the holders follow leaves them newer than it
        (adopted at registration), never older (stale). A holder that does not revert
        (restarted, silent) leaves the chain, as after a failed write; if none reverts,
        the bump stays. The caller holds the chunk's lock."""
        bumped = ChunkVersion(version + 1)
        holders = self.chunks.replicas(chunk_id)
        if self.chunks.version(chunk_id) != bumped:
            return  # a registration adopted a newer replica meanwhile
        away = [s for s, entry in before.items() if s not in holders and entry is not None
                and self.registry.chunkservers.get(s) is entry and not entry.up]

        def record(now: ChunkVersion, to: ChunkVersion, servers: list[ServerId]
                   ) -> Callable[[], None]:
            def change() -> None:
                if self.writer_chunks.version(chunk_id) == now:  # else adopted meanwhile
                    self.writer_chunks.set_version(chunk_id, to)
                    self.writer_chunks.set_replicas(chunk_id, servers)
            return change

        await self.committer.run(record(bumped, version, holders + away))
        reverted = await self._command_all(holders, lambda _: MasterToChunkserverRevertVersion(
            chunk_id=chunk_id, old_version=version, new_version=bumped))
        if not reverted:
            await self.committer.run(record(version, bumped, holders))
            log.warning("chunk %d: a failed copy's bump to version %d could not be given"
                        " back; it stays", chunk_id, bumped,
                        extra=about("copy_bump_kept", chunk=chunk_id, version=bumped))
            return
        if len(reverted) < len(holders):
            await self.committer.run(record(version, version, reverted + away))
        self.pardons.grant(chunk_id, version, reverted)
        log.info("chunk %d: copy failed; back to version %d on servers %s", chunk_id,
                 version, reverted + away, extra=about("copy_bump_given_back",
                                                       chunk=chunk_id, version=version))

    def _copy_target(self, chunk_id: ChunkId, holders: list[ServerId]) -> ChunkserverEntry:
        """A live host with room and no replica of the chunk: ReplicaUnavailable if no
        such host is up (or all are leaving or suspect), NoSpace if none has room."""
        labels = frozenset(self.registry.chunkservers[h].host_label for h in holders)
        candidates = [Candidate(e.server_id, e.host_label, e.bytes_free)
                      for e in self.registry.up_servers()
                      if e.takes_new and e.server_id not in holders]
        if not any(c.host_label not in labels for c in candidates):
            # Not a full disk: say so, or an operator looks for space that is there.
            raise ReplicaUnavailable(f"no chunkserver up on a host without a replica of"
                                     f" chunk {chunk_id} takes new replicas")
        chosen = choose_servers(candidates, 1, "", self.rng, exclude_host_labels=labels)
        if not chosen:
            raise NoSpace(f"no host without a replica of chunk {chunk_id} has room")
        return self.registry.chunkservers[chosen[0]]

    async def remove_replicas(self, chunk_id: ChunkId, servers: tuple[ServerId, ...]) -> int:
        """Delete surplus (or drained) replicas; returns how many went."""
        async with self.chunk_locks.hold(chunk_id):
            version = self.chunks.version(chunk_id)
            holders = self.chunks.replicas(chunk_id)
            doomed = [s for s in servers if s in holders]
            if version is None or not doomed or len(holders) - len(doomed) < 1:
                return 0

            def forget() -> None:
                for server_id in doomed:
                    self.writer_chunks.remove_replica(chunk_id, server_id)

            # Forget first: a client that still writes there fails and gets a new chain.
            await self.committer.run(forget)
            await self._command_all(doomed, lambda _: MasterToChunkserverDeleteChunk(
                chunk_id=chunk_id, version=version))
            return len(doomed)

    async def drop_damaged(self, chunk_id: ChunkId, server_id: ServerId,
                           version: ChunkVersion, bad_blocks: list[tuple[int, int]]) -> None:
        """A replica failed its checksums: it stops counting and is rebuilt elsewhere, if
        a healthy current replica is up. Else it is the last copy: kept, serving its good
        blocks, and listed in ``damage`` (a disk full of torn tails, or one rotten
        block, must not cost the acknowledged rest)."""
        async with self.chunk_locks.hold(chunk_id):
            if self.chunks.version(chunk_id) != version:
                return  # already replaced by a newer version
            if server_id not in self.chunks.replicas(chunk_id):
                return
            if not self._healthy_others(chunk_id, server_id):
                if self.damage.note(chunk_id, server_id, bad_blocks):
                    log.error("chunk %d: replica on chunkserver %d has bad blocks %s but is"
                              " the last current copy up; kept, its good blocks still"
                              " served", chunk_id, server_id,
                              _ranges_text(self.damage.of_chunk(chunk_id) or []),
                              extra=about("damaged_last_copy_kept", chunk=chunk_id,
                                          server=server_id))
                return
            self.damage.forget(chunk_id, server_id)
            await self.committer.run(lambda: self.writer_chunks.remove_replica(chunk_id,
                                                                               server_id))
            log.warning("chunk %d: replica on chunkserver %d is damaged; dropped", chunk_id,
                        server_id, extra=about("replica_damaged", chunk=chunk_id,
                                               server=server_id))
            await self._command_all([server_id], lambda _: MasterToChunkserverDeleteChunk(
                chunk_id=chunk_id, version=version))

    def _healthy_others(self, chunk_id: ChunkId, server_id: ServerId) -> list[ServerId]:
        """The chunk's current replicas other than ``server_id`` that are up and not
        known damaged."""
        return [h for h in self.chunks.replicas(chunk_id)
                if h != server_id and not self.damage.is_damaged(chunk_id, h)
                and (e := self.registry.chunkservers.get(h)) is not None and e.up]

    def safe_without(self, chunk_ids: list[ChunkId]) -> list[ChunkId]:
        """The chunks that need no other replica (a quarantined one may go): no file's any
        more, or at their goal with healthy current replicas on live chunkservers."""
        safe = []
        for chunk_id in chunk_ids:
            goal = self.chunks.goal_of(chunk_id)
            if goal is None or self.chunks.is_deleted(chunk_id):
                safe.append(chunk_id)
            elif len(self._healthy_others(chunk_id, ServerId(0))) >= goal:
                safe.append(chunk_id)
        return safe

    async def recheck_damaged(self) -> None:
        """Drop each kept damaged replica that now has a healthy current copy up (it is
        then rebuilt from that); forget those that are no longer replicas."""
        for chunk_id, server_id, _ in list(self.damage):
            version = self.chunks.version(chunk_id)
            if version is None or server_id not in self.chunks.replicas(chunk_id):
                self.damage.forget(chunk_id, server_id)
            elif self._healthy_others(chunk_id, server_id):
                self.damage.forget(chunk_id, server_id)
                await self.drop_damaged(chunk_id, server_id, version, [])

    # --- chunkserver registration -----------------------------------------------------
    def reconcile_report(
        self, server_id: ServerId, reported: list[ChunkReport]
    ) -> list[ChunkReport]:
        """Runs inside a commit: adopt current replicas, return the stale ones to delete."""
        return reconcile_report(self.writer_chunks, self.refused_versions, server_id,
                                reported)

    # --- deletions ---------------------------------------------------------------------
    async def deletion_loop(self) -> None:
        while True:
            with trio.move_on_after(HEARTBEAT_INTERVAL_S * 5):
                await self.deletions_wanted.wait()
            self.deletions_wanted = trio.Event()
            await self._delete_pass()

    async def _delete_pass(self) -> None:
        for chunk_id, version in self.chunks.pending_deletions(CHUNK_DELETIONS_PER_PASS_MAX):
            # The list above is a snapshot and earlier deletes awaited: decide
            # on this chunk now, with no await between the check and the send.
            # A reserved id is skipped while its allocation runs, and once
            # attached it is no longer listed for deletion at all.
            if chunk_id in self.allocating or not self.chunks.is_deleted(chunk_id):
                continue
            holders = self.chunks.replicas(chunk_id)
            live = [h for h in holders if (e := self.registry.chunkservers.get(h)) and e.up]
            command: Request = MasterToChunkserverDeleteChunk(chunk_id=chunk_id, version=version)

            def same_for_all(_: ServerId, command: Request = command) -> Request:
                return command

            deleted = await self._command_all(live, same_for_all)
            remaining = [h for h in holders if h not in deleted]

            def record(chunk_id: ChunkId = chunk_id, deleted: list[ServerId] = deleted,
                       remaining: list[ServerId] = remaining) -> None:
                if remaining:
                    for server_id in deleted:
                        self.writer_chunks.remove_replica(chunk_id, server_id)
                else:
                    self.writer_chunks.finish_deletion(chunk_id)

            await self.committer.run(record)


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    """Block ranges as an operator reads them: "17, 40-42" ("unknown" if none)."""
    return ", ".join(f"{first}" if end == first + 1 else f"{first}-{end - 1}"
                     for first, end in ranges) or "unknown"
