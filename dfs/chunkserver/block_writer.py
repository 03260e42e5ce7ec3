"""Writing a range of one replica as 4 KiB blocks: data, holes and their CRC table entries.

Promise: every block a write touches gets its new content and its CRC32 in
the table, in that order, and an edge block that is only partly written
is verified before its old bytes are merged in (ChecksumMismatch
otherwise). Blocks that end up all zero become holes (fallocate
PUNCH_HOLE) with ZERO_BLOCK_CRC, so zeros never reach the disk. Nothing
here is durable: the store syncs (``replica_file.sync_replica``).

The caller holds the replica's lock and has validated the range
(``store_arguments.segments_of``).

Caveats: data and table are two writes, not one atomic step (see
``chunk_store``). Without hole punching (a filesystem that lacks it) zero
blocks are written as zeros: correct, but they use disk space.
"""

from __future__ import annotations

import logging
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

from vmstore.dfs.chunkserver.replica_file import (
    OpenReplica,
    punch_hole,
    pwrite_all,
    start_writeback,
)
from vmstore.dfs.chunkserver.store_arguments import Segment
from vmstore.dfs.constants import BLOCK_SIZE_BYTES
from vmstore.dfs.protocol.replica_format import (
    CRC_TABLE_OFFSET,
    DATA_OFFSET,
    ZERO_BLOCK_CRC,
    ZEROS,
    ZEROS_VIEW,
    is_zero,
    table_bytes,
    verified_blocks,
)

# The store's logger name: its records are the store's, and operators' filters
# (and tests' expected logs) name them so.
logger = logging.getLogger("vmstore.dfs.chunkserver.chunk_store")

# A block's new or current content; None means all zeros (a hole).
_Block: TypeAlias = memoryview | bytearray | None


class BlockWriter:
    """Writes ranges into the replicas of one data directory (which may not punch holes)."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._can_punch = True

    def write_segments(self, replica: OpenReplica, offset: int, segments: list[Segment]) -> None:
        """Write the blocks the segments (from offset on, contiguous) touch."""
        end = segments[-1][1]
        first, last = offset // BLOCK_SIZE_BYTES, (end - 1) // BLOCK_SIZE_BYTES + 1
        if self._write_whole_blocks(replica, offset, segments):
            return
        # Every block's new content is known (and the old edge blocks
        # verified) before the first byte is written.
        blocks = [
            self._new_block(replica, index, offset, end, segments) for index in range(first, last)
        ]
        crcs = array("I", [ZERO_BLOCK_CRC if blk is None else zlib.crc32(blk) for blk in blocks])
        start = 0
        while start < len(blocks):
            zero_run = blocks[start] is None
            stop = start + 1
            while stop < len(blocks) and (blocks[stop] is None) == zero_run:
                stop += 1
            at = DATA_OFFSET + (first + start) * BLOCK_SIZE_BYTES
            if zero_run:
                self._punch(replica.fd, at, (stop - start) * BLOCK_SIZE_BYTES)
                replica.punched = True
            else:
                pwrite_all(replica.fd, [blk for blk in blocks[start:stop] if blk is not None], at)
            start = stop
        for index, block in enumerate(blocks):
            # The payload may be a caller's bytearray: it must not have changed under us.
            assert block is None or zlib.crc32(block) == crcs[index], "payload changed mid-write"
        pwrite_all(replica.fd, [table_bytes(crcs)], CRC_TABLE_OFFSET + first * 4)
        replica.crcs[first:last] = crcs
        replica.dirty = True

    def _write_whole_blocks(
        self, replica: OpenReplica, offset: int, segments: list[Segment]
    ) -> bool:
        """The common case, done in one pwrite: whole blocks of immutable bytes, none
        all zero. False (nothing written) for anything else, which the general
        path handles block by block.
        """
        start, end, source = segments[0]
        if len(segments) != 1 or source is None:
            return False
        if start % BLOCK_SIZE_BYTES or end % BLOCK_SIZE_BYTES or not isinstance(source.obj,
                                                                                  bytes):
            return False  # edge blocks to merge, or a buffer that could change under us
        crcs = array("I", [zlib.crc32(source[at:at + BLOCK_SIZE_BYTES])
                           for at in range(0, end - start, BLOCK_SIZE_BYTES)])
        # A zero block has ZERO_BLOCK_CRC, so only those blocks need a look.
        if ZERO_BLOCK_CRC in crcs and any(
                crc == ZERO_BLOCK_CRC and is_zero(source[at * BLOCK_SIZE_BYTES:
                                                         (at + 1) * BLOCK_SIZE_BYTES])
                for at, crc in enumerate(crcs)):
            return False  # zero blocks become holes: the general path
        first = start // BLOCK_SIZE_BYTES
        pwrite_all(replica.fd, [source], DATA_OFFSET + start)
        start_writeback(replica.fd, DATA_OFFSET + start, end - start)
        pwrite_all(replica.fd, [table_bytes(crcs)], CRC_TABLE_OFFSET + first * 4)
        replica.crcs[first:first + len(crcs)] = crcs
        replica.dirty = True
        return True

    def _new_block(
        self, replica: OpenReplica, index: int, offset: int, end: int, segments: list[Segment]
    ) -> _Block:
        """The content block *index* gets from the segments; None if all zero."""
        block_start, block_end = index * BLOCK_SIZE_BYTES, (index + 1) * BLOCK_SIZE_BYTES
        covering = list(_overlapping(segments, block_start, block_end))
        seg_start, seg_end, source = covering[0]
        if len(covering) == 1 and seg_start <= block_start and block_end <= seg_end:
            # The common case: the block comes whole from one segment, no copy.
            if source is None:
                return None
            view = source[block_start - seg_start : block_end - seg_start]
            return None if is_zero(view) else view
        content = bytearray(BLOCK_SIZE_BYTES)
        if block_start < offset or end < block_end:
            # Read-modify-write of an edge block; its old content is verified.
            old = next(verified_blocks(replica.fd, replica.crcs, 0, index, index + 1,
                                       replica.chunk_id, None))[1]
            if old is not None:
                content[:] = old
        for seg_start, seg_end, source in covering:
            start, stop = max(seg_start, block_start), min(seg_end, block_end)
            if source is None:
                content[start - block_start : stop - block_start] = ZEROS_VIEW[: stop - start]
            else:
                content[start - block_start : stop - block_start] = source[
                    start - seg_start : stop - seg_start
                ]
        return None if is_zero(content) else content

    def _punch(self, fd: int, start: int, size: int) -> None:
        """Make [start, start + size) of the file zeros, as a hole if the filesystem can."""
        if self._can_punch:
            if punch_hole(fd, start, size):
                return
            logger.warning("%s: no hole punching, zero blocks will use disk space", self._data_dir)
            self._can_punch = False
        for at in range(start, start + size, len(ZEROS)):
            pwrite_all(fd, [ZEROS_VIEW[: min(len(ZEROS), start + size - at)]], at)


def _overlapping(segments: list[Segment], start: int, end: int) -> Iterator[Segment]:
    """The segments that overlap [start, end), in order (binary search for the first)."""
    low, high = 0, len(segments)
    while low < high:
        middle = (low + high) // 2
        if segments[middle][1] <= start:
            low = middle + 1
        else:
            high = middle
    for segment in segments[low:]:
        if segment[0] >= end:
            break
        yield segment
