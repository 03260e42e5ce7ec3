"""A chunkserver's data directory: recognizing replica files in it, and durable directory ops.

Layout, under the data directory::

    chunks/<chunk_id & 0xff as 2 hex>/<chunk_id as 16 hex>.chunk   the replicas
    damaged/   files that turned out not to be replicas, kept for a human
    quarantine/  replicas the master had deleted, kept for a while (``quarantine``)
    tmp/       replicas being created, linked into chunks/ when complete

Promise: ``chunk_id_of`` accepts only a regular file whose name is a valid
chunk id in the subdirectory that id belongs to, and ``read_header`` only
a header that checks out for that id; anything else is DamagedReplica, for
ChunkStore to move aside (``move_aside``). ``fsync_dir`` makes a directory's entries durable.

Caveat: a scan races with creates and deletes; the caller skips files that
vanish under it (FileNotFoundError).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from vmstore.dfs.protocol.replica_format import (
    CHUNK_ID_MAX,
    HEADER_SIZE_BYTES,
    DamagedReplica,
    ReplicaOwner,
    decode_header,
    decode_owner,
    pread_full,
)

_SUBDIR_NAME = re.compile(r"[0-9a-f]{2}")
_CHUNK_NAME = re.compile(r"([0-9a-f]{16})\.chunk")


def is_chunk_subdir(entry: os.DirEntry[str]) -> bool:
    """Whether an entry of chunks/ is one of its 256 subdirectories."""
    return entry.is_dir(follow_symlinks=False) and _SUBDIR_NAME.fullmatch(entry.name) is not None


def chunk_id_of(subdir: str, entry: os.DirEntry[str]) -> int:
    """The chunk id a replica file's name gives; DamagedReplica if it is none."""
    match = _CHUNK_NAME.fullmatch(entry.name)
    if match is None or not entry.is_file(follow_symlinks=False):
        raise DamagedReplica("not a replica file name")
    chunk_id = int(match.group(1), 16)
    if not 0 < chunk_id <= CHUNK_ID_MAX or subdir != f"{chunk_id & 0xFF:02x}":
        raise DamagedReplica("chunk id out of range or in the wrong subdirectory")
    return chunk_id


def read_header(path: str, chunk_id: int) -> tuple[int, ReplicaOwner | None]:
    """(version, owner record or None) of the replica file at *path*, *chunk_id*'s."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        header = pread_full(fd, HEADER_SIZE_BYTES, 0)
    finally:
        os.close(fd)
    return decode_header(header, chunk_id), decode_owner(header)


def replica_path(chunks_dir: Path, chunk_id: int) -> Path:
    """Where the replica of ``chunk_id`` lives under ``chunks_dir`` (DATA_DIR/chunks)."""
    assert 0 < chunk_id <= CHUNK_ID_MAX
    return chunks_dir / f"{chunk_id & 0xFF:02x}" / f"{chunk_id:016x}.chunk"


def mkdir_new(path: Path) -> bool:
    """Create a directory; whether it was new."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_aside(damaged_dir: Path, path: Path, reason: str, log: logging.Logger) -> None:
    """Keep a file that is not a replica in ``damaged_dir`` for a human to look at, and
    say so on ``log`` (the store's); never raises."""
    target = damaged_dir / f"{path.parent.name}-{path.name}.{time.time_ns()}"
    try:
        os.rename(path, target)
    except OSError as error:
        log.warning("%s is damaged (%s) and could not be moved: %s", path, reason, error)
        return
    log.warning("%s is damaged (%s): moved to %s", path, reason, target)
