"""The chunk store's open replicas: a bounded LRU of fds, each pinned while a call uses it.

Promise: a replica a call is using (``use``) is never closed under it; calls
on one chunk are serialized by its lock; a replica taken out of service
(``retire``, ``replace``) keeps its fd until its last user leaves, and no
later call gets it; beyond ``open_files_max`` the least recently used
unpinned replicas are closed, each synced first (its dirty flag dies with
its fd, so a later flush of that chunk would otherwise return before its
data is durable).

``lock`` guards the map and every replica's pins and retired flag. It is
held only briefly (a cache miss reads 68 KiB under it, an eviction may
fsync), and the store holds it for its own bookkeeping that must change
together with the map (a version bump, a move into quarantine). Methods
named "caller holds lock" expect it held; the others take it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vmstore.dfs.chunkserver.replica_file import OpenReplica, sync_replica
from vmstore.dfs.errors import ChunkNotFound
from vmstore.dfs.protocol.replica_format import chunk_name


class ReplicaCache:
    def __init__(self, open_files_max: int, load: Callable[[int], OpenReplica]) -> None:
        """``load``: opens a chunk's replica (ChunkNotFound if there is none); called
        with ``lock`` held."""
        assert open_files_max >= 1
        self.lock = threading.Lock()
        self._open_files_max = open_files_max
        self._load = load
        self._open: OrderedDict[int, OpenReplica] = OrderedDict()
        self._closed = False

    @contextmanager
    def use(self, chunk_id: int) -> Iterator[OpenReplica]:
        """The open replica, pinned (its fd stays open) and locked for this call."""
        with self.lock:
            assert not self._closed, "ChunkStore used after close()"
            replica = self._open.get(chunk_id)
            if replica is None:
                replica = self._load(chunk_id)
                self._open[chunk_id] = replica
            else:
                self._open.move_to_end(chunk_id)
            replica.pins += 1
        try:
            with replica.lock:
                if replica.retired:
                    raise ChunkNotFound(f"{chunk_name(chunk_id)}: no replica (deleted)")
                yield replica
        finally:
            with self.lock:
                replica.pins -= 1
                if replica.retired and replica.pins == 0:
                    os.close(replica.fd)
                self._evict()

    def add_new(self, replica: OpenReplica) -> bool:
        """Keep a replica just created; False (the caller closes its fd) if a call
        opened that chunk meanwhile, or the cache is closed."""
        with self.lock:
            if replica.chunk_id in self._open or self._closed:
                return False
            self._open[replica.chunk_id] = replica
            self._evict()
            return True

    def cached(self, chunk_id: int) -> OpenReplica | None:
        """The chunk's replica if it is open; the caller holds lock."""
        return self._open.get(chunk_id)

    def replace(self, replica: OpenReplica) -> None:
        """``replica`` takes the place of the chunk's open one, which is retired
        unwritten (its file was renamed over); the caller holds lock."""
        old = self._open.pop(replica.chunk_id, None)
        if old is not None:
            old.retired = True  # its fd closes when its last user leaves
            old.dirty = False
            if old.pins == 0:
                os.close(old.fd)
        self._open[replica.chunk_id] = replica
        self._evict()

    def retire(self, replica: OpenReplica) -> None:
        """The replica (which the caller is using) is gone: no later call gets it; its
        fd closes when the caller leaves. The caller holds lock."""
        replica.retired = True
        del self._open[replica.chunk_id]

    def close(self) -> None:
        """Sync and close every fd; no call may be under way. Unusable after."""
        with self.lock:
            self._closed = True
            while self._open:
                _, replica = self._open.popitem(last=False)
                assert replica.pins == 0, "close() while a call is using the store"
                _close_replica(replica)

    def _evict(self) -> None:
        """Close least recently used replicas beyond the bound; the caller holds lock."""
        if len(self._open) <= self._open_files_max:
            return
        for chunk_id in [key for key, value in self._open.items() if value.pins == 0]:
            if len(self._open) <= self._open_files_max:
                break
            _close_replica(self._open.pop(chunk_id))


def _close_replica(replica: OpenReplica) -> None:
    try:
        sync_replica(replica)
    finally:
        os.close(replica.fd)
