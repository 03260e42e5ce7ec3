"""The replica file format, and the one way to read its blocks verified.

Promise: ``verified_range`` and ``verified_blocks`` never yield a byte whose
CRC32 does not match the checksum the table holds for its block; a bad
block raises ``ChecksumMismatch`` (or, with a ``bad`` list, is listed there
and read as missing). Holes read as zeros without touching the disk.

Why this sits in ``dfs.protocol``: the file a chunkserver writes is read by
two parties now, the chunkserver's ``ChunkStore`` and a client on the same
host that reads local replicas straight from the file (short-circuit
reads, ``dfs.client.local_replicas``). The format is a contract between
them as much as the wire is, so it lives with the wire, below both, and
both import it: one implementation of the checks, not two that drift.

Layout, one file per replica::

    offset 0       header, 4096 bytes: b"VMSCHNK1", u64 chunk_id, u64 version,
                   u32 crc32 of the 24 bytes before it; then at OWNER_OFFSET (64)
                   the owner record: b"VMSOWNR1", u64 inode, u64 chunk index,
                   u32 crc32 of the 24 bytes before it; the rest zero
    offset 4096    CRC table: BLOCKS_PER_CHUNK u32 (64 KiB), the crc32 of each
                   4 KiB data block; ZERO_BLOCK_CRC for a block of zeros
    DATA_OFFSET    data: CHUNK_SIZE_BYTES, sparse; zero blocks are holes

All integers are little-endian.

The owner record names the file (inode) and the chunk's index in it, so that
``vmstore recover`` can rebuild files from replicas alone when every copy of
the metadata is gone. It came after the format: a replica written before it
has zeros there and reads as before (``decode_owner`` gives None); the master
sends the record at the chunkserver's next registration (``set_owner``). A
reader that predates it ignores the record. A record whose checksum fails is
no record (the replica's data is not in doubt for it).

Caveats, honestly:

* A table entry equal to ZERO_BLOCK_CRC usually means a hole, but 1 in 2**32
  non-zero blocks has that CRC too. So such blocks are read only if the file
  holds data there (lseek SEEK_DATA, one call per run of such blocks): real
  holes cost no read, and a colliding block is still returned intact.
* Nothing here locks: a reader that does not hold the chunkserver's lock
  on the chunk (a short-circuit client) can see a block and a table entry
  from either side of a concurrent write, and gets ChecksumMismatch for a
  block that is not damaged. Such a reader must treat a mismatch as "ask
  the chunkserver", never as damage.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from vmstore.dfs.constants import BLOCK_SIZE_BYTES, BLOCKS_PER_CHUNK, CHUNK_SIZE_BYTES
from vmstore.dfs.errors import ChecksumMismatch

Buffer: TypeAlias = bytes | bytearray | memoryview

MAGIC = b"VMSCHNK1"
HEADER_SIZE_BYTES = 4096
CRC_TABLE_OFFSET = HEADER_SIZE_BYTES
CRC_ENTRY_BYTES = 4
CRC_TABLE_SIZE_BYTES = BLOCKS_PER_CHUNK * CRC_ENTRY_BYTES
DATA_OFFSET = CRC_TABLE_OFFSET + CRC_TABLE_SIZE_BYTES
FILE_SIZE_BYTES = DATA_OFFSET + CHUNK_SIZE_BYTES
CHUNK_ID_MAX = 2**63 - 1
VERSION_MAX = 2**63 - 1

ZERO_BLOCK = bytes(BLOCK_SIZE_BYTES)
ZERO_BLOCK_CRC = zlib.crc32(ZERO_BLOCK)

HEADER = struct.Struct("<8sQQ")
CRC = struct.Struct("<I")
OWNER_MAGIC = b"VMSOWNR1"
OWNER_OFFSET = 64
OWNER = struct.Struct("<8sQQ")
OWNER_INODE_MAX = 2**63 - 1
OWNER_CHUNK_INDEX_MAX = 2**63 - 1
# The bytes of the header every reader checks (the owner record is read apart).
HEADER_USED_BYTES = HEADER.size + CRC.size
# A replica file's permission bits in service, and once quarantined: a
# short-circuit reader's fd of a replica the master had deleted still reads
# a linked file (quarantine is a rename), so the mode is what tells it the
# replica is gone (one fstat, as before; the chunkserver runs as root and
# reads either).
REPLICA_FILE_MODE = 0o640
QUARANTINED_FILE_MODE = 0o000
# Reads, verifies and zero-fills go at most this far per call, which bounds
# the memory a scrub of a whole chunk needs.
RUN_BLOCKS_MAX = 256
# Measured (CPython 3.11, x86-64): bytes.startswith against cached zeros is a
# memcmp, 0.1 us for 4 KiB and 9 us for 1 MiB; buffer.count(0) takes 1.7 us
# and 405 us, `not any(buffer)` 20 us and 3.8 ms.
ZEROS = bytes(1024 * 1024)
ZEROS_VIEW = memoryview(ZEROS)

assert array("I").itemsize == CRC_ENTRY_BYTES, "the CRC table is an array of u32"
assert DATA_OFFSET % BLOCK_SIZE_BYTES == 0


class DamagedReplica(Exception):
    """A replica file that is not one of ours; the message says why."""


@dataclass(frozen=True, slots=True)
class ReplicaOwner:
    """The file a replica's chunk belongs to: its inode, and the chunk's index in it."""

    inode: int
    index: int


def chunk_name(chunk_id: int) -> str:
    return f"chunk {chunk_id:016x}"


def is_zero(buffer: Buffer) -> bool:
    """Whether every byte of *buffer* is zero (a memcmp against cached zeros)."""
    size = buffer.nbytes if isinstance(buffer, memoryview) else len(buffer)
    if size <= len(ZEROS):
        return ZEROS.startswith(buffer)
    view = memoryview(buffer).cast("B")
    return all(
        ZEROS.startswith(view[start : start + len(ZEROS)]) for start in range(0, size, len(ZEROS))
    )


# --- header and table ---------------------------------------------------------
def encode_header(chunk_id: int, version: int, owner: ReplicaOwner | None = None) -> bytes:
    """The header's 4096 bytes; without an owner, the format from before owner records."""
    body = HEADER.pack(MAGIC, chunk_id, version)
    header = (body + CRC.pack(zlib.crc32(body))).ljust(OWNER_OFFSET, b"\0")
    if owner is not None:
        assert 0 < owner.inode <= OWNER_INODE_MAX
        assert 0 <= owner.index <= OWNER_CHUNK_INDEX_MAX
        record = OWNER.pack(OWNER_MAGIC, owner.inode, owner.index)
        header += record + CRC.pack(zlib.crc32(record))
    return header.ljust(HEADER_SIZE_BYTES, b"\0")


def decode_owner(raw: bytes) -> ReplicaOwner | None:
    """The owner record of a header; None if it has none (written before records
    existed) or one that does not check out."""
    if len(raw) < OWNER_OFFSET + OWNER.size + CRC.size:
        return None
    magic, inode, index = OWNER.unpack_from(raw, OWNER_OFFSET)
    if magic != OWNER_MAGIC:
        return None
    crc_offset = OWNER_OFFSET + OWNER.size
    if CRC.unpack_from(raw, crc_offset)[0] != zlib.crc32(raw[OWNER_OFFSET:crc_offset]):
        return None
    if not 0 < inode <= OWNER_INODE_MAX or index > OWNER_CHUNK_INDEX_MAX:
        return None
    return ReplicaOwner(int(inode), int(index))


def decode_header(raw: bytes, chunk_id: int) -> int:
    """The version in a replica's header; DamagedReplica if it is not ours."""
    if len(raw) < HEADER_USED_BYTES:
        raise DamagedReplica("header truncated")
    magic, header_id, version = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise DamagedReplica(f"bad magic {magic!r}")
    if CRC.unpack_from(raw, HEADER.size)[0] != zlib.crc32(raw[: HEADER.size]):
        raise DamagedReplica("header checksum mismatch")
    if header_id != chunk_id:
        raise DamagedReplica(f"header names chunk {header_id:016x}")
    if not 1 <= version <= VERSION_MAX:
        raise DamagedReplica(f"version {version} out of range")
    return int(version)


def table_bytes(crcs: array[int]) -> bytes:
    if sys.byteorder == "big":
        crcs = array("I", crcs)
        crcs.byteswap()
    return crcs.tobytes()


def crcs_from_bytes(raw: bytes) -> array[int]:
    """Table entries (a whole table or a slice of one) from their on-disk bytes."""
    assert len(raw) % CRC_ENTRY_BYTES == 0
    crcs = array("I")
    crcs.frombytes(raw)
    if sys.byteorder == "big":
        crcs.byteswap()
    return crcs


def table_from_bytes(raw: bytes) -> array[int]:
    crcs = crcs_from_bytes(raw)
    assert len(crcs) == BLOCKS_PER_CHUNK
    return crcs


# --- file access ----------------------------------------------------------------
def pread_full(fd: int, size: int, offset: int) -> bytes:
    """Up to *size* bytes at *offset*; fewer only at the end of the file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    while size > (done := sum(len(part) for part in parts)):
        more = os.pread(fd, size - done, offset + done)
        if not more:
            break
        parts.append(more)
    return b"".join(parts)


def has_data(fd: int, start: int, end: int) -> bool:
    """Whether the file holds anything but holes in [start, end)."""
    try:
        return os.lseek(fd, start, os.SEEK_DATA) < end
    except OSError as error:
        if error.errno == errno.ENXIO:
            return False  # only holes from start to the end of the file
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return True  # cannot tell: read it and look
        raise


# --- verified blocks --------------------------------------------------------------
# A run: (first block, end block, the verified content of blocks [first, end)
# back to back, or None when they are all zeros).
Run: TypeAlias = tuple[int, int, memoryview | None]


def verified_blocks(
    fd: int,
    crcs: Sequence[int],
    crcs_first: int,
    first: int,
    end: int,
    chunk_id: int,
    bad: list[int] | None = None,
) -> Iterator[tuple[int, memoryview | None]]:
    """(index, verified content or None for zeros) of blocks [first, end) of a replica.

    ``crcs[i]`` is the table entry of block ``crcs_first + i``: the whole
    table (``crcs_first`` 0) or just the entries of the range. A bad block
    raises ChecksumMismatch, or with *bad* is appended to it and yielded as
    None.
    """
    for run_first, run_end, content in verified_runs(fd, crcs, crcs_first, first, end,
                                                     chunk_id, bad):
        for index in range(run_first, run_end):
            if content is None:
                yield index, None
            else:
                at = (index - run_first) * BLOCK_SIZE_BYTES
                yield index, content[at : at + BLOCK_SIZE_BYTES]


def verified_runs(
    fd: int,
    crcs: Sequence[int],
    crcs_first: int,
    first: int,
    end: int,
    chunk_id: int,
    bad: list[int] | None = None,
) -> Iterator[Run]:
    """The blocks [first, end) as runs, in order, each verified as ``verified_blocks``
    verifies a block: the same checks, without a Python step per block of a
    good run (a 1 MiB read is 256 blocks)."""
    assert crcs_first <= first <= end <= crcs_first + len(crcs)
    index = first
    while index < end:
        zero_run = crcs[index - crcs_first] == ZERO_BLOCK_CRC
        stop, limit = index + 1, min(end, index + RUN_BLOCKS_MAX)
        while stop < limit and (crcs[stop - crcs_first] == ZERO_BLOCK_CRC) == zero_run:
            stop += 1
        start_byte = DATA_OFFSET + index * BLOCK_SIZE_BYTES
        size = (stop - index) * BLOCK_SIZE_BYTES
        if not zero_run:
            yield from _data_run(fd, crcs, crcs_first, index, stop, chunk_id, bad)
        elif has_data(fd, start_byte, start_byte + size):
            yield from _zero_run(fd, index, stop, chunk_id, bad)
        else:
            yield index, stop, None  # a hole: zeros without reading, most of a VM image
        index = stop


def verified_range(
    fd: int, crcs: Sequence[int], crcs_first: int, offset: int, length: int, chunk_id: int
) -> tuple[bytes, list[tuple[int, int]]]:
    """(payload, zero_ranges) of chunk bytes [offset, offset + length), every block verified.

    zero_ranges are the merged, ordered parts of the range whose blocks are
    zero; the payload is the rest of the range, in order (the encoding of a
    read reply on the wire).
    """
    if length == 0:
        return b"", []
    end = offset + length
    parts: list[memoryview] = []
    zero_ranges: list[tuple[int, int]] = []
    first, last = offset // BLOCK_SIZE_BYTES, (end - 1) // BLOCK_SIZE_BYTES + 1
    for run_first, run_end, content in verified_runs(fd, crcs, crcs_first, first, last,
                                                     chunk_id):
        base = run_first * BLOCK_SIZE_BYTES
        start, stop = max(offset, base), min(end, run_end * BLOCK_SIZE_BYTES)
        if content is not None:
            parts.append(content[start - base : stop - base])
        elif zero_ranges and sum(zero_ranges[-1]) == start:
            zero_ranges[-1] = (zero_ranges[-1][0], stop - zero_ranges[-1][0])
        else:
            zero_ranges.append((start, stop - start))
    if len(parts) == 1:
        whole = parts[0].obj
        if isinstance(whole, bytes) and len(whole) == parts[0].nbytes:
            return whole, zero_ranges  # one aligned run: the pread's own bytes, no copy
    return b"".join(parts), zero_ranges


def _data_run(
    fd: int,
    crcs: Sequence[int],
    crcs_first: int,
    first: int,
    end: int,
    chunk_id: int,
    bad: list[int] | None,
) -> Iterator[Run]:
    size = (end - first) * BLOCK_SIZE_BYTES
    raw = memoryview(pread_full(fd, size, DATA_OFFSET + first * BLOCK_SIZE_BYTES))
    # Fast path: the whole run is there and every block matches its entry.
    if raw.nbytes == size and [
        zlib.crc32(raw[at : at + BLOCK_SIZE_BYTES]) for at in range(0, size, BLOCK_SIZE_BYTES)
    ] == list(crcs[first - crcs_first : end - crcs_first]):
        yield first, end, raw
        return
    # Slow path: find the bad blocks, one by one.
    for index in range(first, end):
        at = (index - first) * BLOCK_SIZE_BYTES
        block = raw[at : at + BLOCK_SIZE_BYTES]
        if len(block) < BLOCK_SIZE_BYTES:
            # The file ends early (corruption): the block is gone.
            _bad_block(chunk_id, index, bad, "short read")
            yield index, index + 1, None
        elif zlib.crc32(block) != crcs[index - crcs_first]:
            _bad_block(chunk_id, index, bad, "checksum mismatch")
            yield index, index + 1, None
        else:
            yield index, index + 1, block


def _zero_run(
    fd: int, first: int, end: int, chunk_id: int, bad: list[int] | None
) -> Iterator[Run]:
    """Blocks whose entry says zeros but whose file range holds data."""
    size = (end - first) * BLOCK_SIZE_BYTES
    raw = pread_full(fd, size, DATA_OFFSET + first * BLOCK_SIZE_BYTES)
    # Past the end of the file is zeros, which is what these blocks hold.
    view = memoryview(raw + bytes(size - len(raw)) if len(raw) < size else raw)
    for index in range(first, end):
        at = (index - first) * BLOCK_SIZE_BYTES
        block = view[at : at + BLOCK_SIZE_BYTES]
        if is_zero(block):
            yield index, index + 1, None  # zeros written out (no hole punching here)
        elif zlib.crc32(block) == ZERO_BLOCK_CRC:
            yield index, index + 1, block  # data whose CRC happens to equal that of zeros
        else:
            _bad_block(chunk_id, index, bad, "data where the table says zeros")
            yield index, index + 1, None


def _bad_block(chunk_id: int, index: int, bad: list[int] | None, why: str) -> None:
    if bad is None:
        start = index * BLOCK_SIZE_BYTES
        raise ChecksumMismatch(f"{chunk_name(chunk_id)} block {index} (chunk bytes {start}"
                               f"-{start + BLOCK_SIZE_BYTES - 1}): {why}")
    bad.append(index)


def block_ranges(indexes: Sequence[int]) -> list[tuple[int, int]]:
    """Block indexes as merged, ordered [first, end) ranges: [3, 4, 5, 9] -> [(3, 6), (9, 10)]."""
    ranges: list[tuple[int, int]] = []
    for index in sorted(set(indexes)):
        if ranges and ranges[-1][1] == index:
            ranges[-1] = (ranges[-1][0], index + 1)
        else:
            ranges.append((index, index + 1))
    return ranges
