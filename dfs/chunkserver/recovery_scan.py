"""`vmstore recover scan`: what a chunkserver's data directory holds, for rebuilding the
metadata when every copy of it is gone.

Promise: the scan only reads. It opens every replica file under ``chunks/`` read-only,
moves, writes and deletes nothing (unlike ``ChunkStore``, which moves a damaged file
aside), and reports each replica's chunk id, version and owner record (the file and
chunk index its header names, ``replica_format``), whether every block matches its
checksum (a full read, as a scrub does), and where its data ends. A file it cannot
read is listed with the reason, never skipped in silence.

Caveats: it reads every data block, so it takes as long as reading the disk's data
once. Run it with the chunkserver stopped, or at least with no client writing: a
write landing during the scan can make a block look bad (its data and checksum seen
from either side of the write). Quarantined replicas (``quarantine/``) are not
scanned: put one back with `vmstore quarantine restore` first if it is wanted.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from vmstore.dfs.chunkserver.data_dir import chunk_id_of, is_chunk_subdir
from vmstore.dfs.chunkserver.identity import SERVER_UUID_FILE, load_accepted_master
from vmstore.dfs.constants import BLOCK_SIZE_BYTES, BLOCKS_PER_CHUNK
from vmstore.dfs.errors import NotFound
from vmstore.dfs.protocol.recovery_report import (
    REPORT_FORMAT,
    ScannedDataDir,
    ScannedReplica,
    ScanReport,
)
from vmstore.dfs.protocol.replica_format import (
    CRC_TABLE_OFFSET,
    DATA_OFFSET,
    HEADER_SIZE_BYTES,
    DamagedReplica,
    block_ranges,
    decode_header,
    decode_owner,
    is_zero,
    pread_full,
    table_from_bytes,
    verified_blocks,
)


def scan(data_dirs: list[Path]) -> ScanReport:
    """A report of every replica in each of *data_dirs*."""
    return ScanReport(format=REPORT_FORMAT, host=socket.gethostname(),
                      scanned_at_ns=time.time_ns(),
                      data_dirs=[scan_data_dir(data_dir) for data_dir in data_dirs])


def scan_data_dir(data_dir: Path) -> ScannedDataDir:
    chunks_dir = data_dir / "chunks"
    uuid_file = data_dir / SERVER_UUID_FILE
    if not chunks_dir.is_dir() or not uuid_file.is_file():
        raise NotFound(f"{data_dir} is no chunkserver data directory (no chunks/ or"
                       f" {SERVER_UUID_FILE})")
    accepted = load_accepted_master(data_dir)
    replicas: list[ScannedReplica] = []
    unreadable: list[str] = []
    for subdir in sorted(os.scandir(chunks_dir), key=lambda entry: entry.name):
        if not is_chunk_subdir(subdir):
            unreadable.append(f"{subdir.path}: not a chunk subdirectory")
            continue
        for entry in sorted(os.scandir(subdir.path), key=lambda entry: entry.name):
            try:
                replicas.append(scan_replica(entry.path, chunk_id_of(subdir.name, entry)))
            except (DamagedReplica, OSError) as error:
                unreadable.append(f"{entry.path}: {error}")
    return ScannedDataDir(
        data_dir=str(data_dir), server_uuid=uuid_file.read_text().strip(),
        cluster_id=accepted.cluster_id if accepted else "",
        generation=accepted.generation if accepted else 0,
        replicas=replicas, unreadable=unreadable)


def scan_replica(path: str, chunk_id: int) -> ScannedReplica:
    """One replica file: DamagedReplica if its header or checksum table is unreadable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        raw = pread_full(fd, DATA_OFFSET, 0)
        version = decode_header(raw[:HEADER_SIZE_BYTES], chunk_id)
        if len(raw) < DATA_OFFSET:
            raise DamagedReplica("CRC table truncated")
        owner = decode_owner(raw[:HEADER_SIZE_BYTES])
        crcs = table_from_bytes(raw[CRC_TABLE_OFFSET:])
        bad: list[int] = []
        data_end = 0
        for index, content in verified_blocks(fd, crcs, 0, 0, BLOCKS_PER_CHUNK, chunk_id, bad):
            if bad and bad[-1] == index:
                data_end = (index + 1) * BLOCK_SIZE_BYTES  # unknown bytes: count them all
            elif content is not None and not is_zero(content):
                data_end = index * BLOCK_SIZE_BYTES + len(bytes(content).rstrip(b"\0"))
    finally:
        os.close(fd)
    return ScannedReplica(
        chunk_id=chunk_id, version=version, inode=owner.inode if owner else None,
        index=owner.index if owner else None, verified=not bad,
        bad_blocks=block_ranges(bad), data_end_bytes=data_end)
