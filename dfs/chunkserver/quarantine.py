"""Replicas the master had deleted, kept aside for a while instead (issue 19).

Layout, under the data directory::

    quarantine/<chunk_id as 16 hex>.v<version>.<quarantined at, ns since the epoch>.chunk

Promise: ``put`` moves a replica file here by rename (one filesystem), and
``keep_copy`` links one here; either takes its mode to QUARANTINED_FILE_MODE,
which a short-circuit reader's fd of it sees (``restore`` gives the mode back);
both fsync this directory (and ``put`` the one
the file left) before returning, so after a crash the replica is in one of
the two places, never gone. Nothing here is reported to the master or read
by clients. Files leave only by ``purge`` (an operator, the retention
passed with the master's word that the chunk is safe, or space pressure)
or by ``restore``, which moves one back into place only if that place is
empty: it never overwrites a replica.

Synchronous, no trio: the chunkserver calls it in its disk thread, the
``vmstore quarantine`` command on a stopped or running chunkserver's data
directory.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from vmstore.dfs.chunkserver.data_dir import fsync_dir, mkdir_new, replica_path
from vmstore.dfs.errors import Exists, InvalidArgument, NotFound
from vmstore.dfs.protocol.replica_format import QUARANTINED_FILE_MODE, REPLICA_FILE_MODE

_NAME = re.compile(r"([0-9a-f]{16})\.v([0-9]+)\.([0-9]+)\.chunk")


@dataclass(frozen=True)
class QuarantinedReplica:
    name: str
    chunk_id: int
    version: int
    quarantined_at_ns: int
    size_bytes: int  # disk space it holds (allocated blocks: replicas are sparse)


class Quarantine:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.directory = self.data_dir / "quarantine"
        if mkdir_new(self.directory):
            fsync_dir(self.data_dir)

    def _target(self, chunk_id: int, version: int) -> Path:
        return self.directory / f"{chunk_id:016x}.v{version}.{time.time_ns()}.chunk"

    def put(self, path: Path, chunk_id: int, version: int) -> Path:
        """Move the replica file at ``path`` here, durably; its new path."""
        target = self.move(path, chunk_id, version)
        self.settle(path)
        return target

    def move(self, path: Path, chunk_id: int, version: int) -> Path:
        """``put`` without the fsyncs, for a caller holding a lock: ``settle`` after."""
        target = self._target(chunk_id, version)
        os.rename(path, target)
        os.chmod(target, QUARANTINED_FILE_MODE)  # what a reader's fd of it sees
        return target

    def settle(self, moved_from: Path) -> None:
        """Make a ``move`` durable."""
        fsync_dir(self.directory)
        fsync_dir(moved_from.parent)

    def keep_copy(self, path: Path, chunk_id: int, version: int) -> Path:
        """Keep the replica file at ``path`` here as well (a hard link: it is about to be
        replaced in place, and the name must never be missing meanwhile)."""
        target = self._target(chunk_id, version)
        os.link(path, target)
        # The inode leaves service (its name is about to be replaced): a reader's fd
        # of it must see that.
        os.chmod(target, QUARANTINED_FILE_MODE)
        fsync_dir(self.directory)
        return target

    def entries(self) -> list[QuarantinedReplica]:
        """What is here, oldest first; files of other names are left alone."""
        found: list[QuarantinedReplica] = []
        for entry in os.scandir(self.directory):
            match = _NAME.fullmatch(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                size_bytes = entry.stat(follow_symlinks=False).st_blocks * 512
            except FileNotFoundError:
                continue  # purged meanwhile
            found.append(QuarantinedReplica(entry.name, int(match.group(1), 16),
                                            int(match.group(2)), int(match.group(3)),
                                            size_bytes))
        return sorted(found, key=lambda q: (q.quarantined_at_ns, q.name))

    def _path(self, name: str) -> Path:
        if _NAME.fullmatch(name) is None:
            raise InvalidArgument(f"{name!r} is not the name of a quarantined replica")
        path = self.directory / name
        if not path.is_file():
            raise NotFound(f"no quarantined replica {name} in {self.directory}")
        return path

    def purge(self, name: str) -> int:
        """Delete one for good; the bytes it freed. The caller says why, in its log."""
        path = self._path(name)
        size_bytes = path.stat().st_blocks * 512
        os.unlink(path)
        return size_bytes

    def restore(self, name: str) -> Path:
        """Put one back in its chunk's place (Exists if a replica is there); that path.

        The master takes it at the chunkserver's next registration if it counts
        its version current; otherwise it is quarantined again.
        """
        path = self._path(name)
        chunk_id = int(name[:16], 16)
        place = replica_path(self.data_dir / "chunks", chunk_id)
        if mkdir_new(place.parent):
            fsync_dir(place.parent.parent)
        try:
            os.link(path, place)  # never over a replica that is there
        except FileExistsError:
            raise Exists(f"chunk {chunk_id:016x} has a replica in place already ({place}):"
                         " purge or move it first") from None
        os.chmod(place, REPLICA_FILE_MODE)
        fsync_dir(place.parent)
        os.unlink(path)
        fsync_dir(self.directory)
        return place
