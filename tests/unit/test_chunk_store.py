"""ChunkStore on real sparse files: roundtrips against a model, holes, corruption, versions."""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstore.dfs.chunkserver.chunk_store import (
    DATA_OFFSET,
    FILE_SIZE_BYTES,
    ZERO_BLOCK_CRC,
    ChunkStore,
    is_zero,
)
from vmstore.dfs.constants import BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES
from vmstore.dfs.errors import (
    ChecksumMismatch,
    ChunkNotFound,
    Exists,
    InvalidArgument,
    StaleChunkVersion,
)

BS = BLOCK_SIZE_BYTES
MiB = 1024 * 1024
CHUNK = 0x1234_5678_9ABC


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    chunk_store = ChunkStore(tmp_path)
    yield chunk_store
    chunk_store.close()


def chunk_path(data_dir: Path, chunk_id: int) -> Path:
    return data_dir / "chunks" / f"{chunk_id & 0xFF:02x}" / f"{chunk_id:016x}.chunk"


def decode(offset: int, length: int, payload: bytes, zero_ranges: list[tuple[int, int]]) -> bytes:
    """The bytes a (payload, zero_ranges) answer stands for; checks the encoding on the way."""
    out = bytearray()
    position, used = offset, 0
    for start, size in zero_ranges:
        assert size > 0 and start >= position and start + size <= offset + length
        assert not out or start > position, "adjacent zero ranges are not merged"
        out += payload[used : used + start - position]
        used += start - position
        out += bytes(size)
        position = start + size
    out += payload[used:]
    assert len(out) == length
    return bytes(out)


def encode(offset: int, want: bytes, rng: random.Random) -> tuple[bytes, list[tuple[int, int]]]:
    """want as (payload, zero_ranges), sending some of its zero runs as ranges."""
    zero_ranges = []
    for run in re.finditer(rb"\x00+", want):
        if rng.random() < 0.6:
            start = rng.randrange(run.start(), run.end())
            stop = rng.randrange(start + 1, run.end() + 1)
            zero_ranges.append((offset + start, stop - start))
    payload = bytearray()
    position = 0
    for start, size in zero_ranges:
        payload += want[position : start - offset]
        position = start - offset + size
    payload += want[position:]
    return bytes(payload), zero_ranges


def data_bytes_in(path: Path, start: int, end: int) -> int:
    """How many bytes of [start, end) of the file are not holes (SEEK_DATA/SEEK_HOLE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        total, position = 0, start
        while position < end:
            try:
                data = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as error:
                assert error.errno == errno.ENXIO
                break
            if data >= end:
                break
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            total += min(hole, end) - data
            position = hole
        return total
    finally:
        os.close(fd)


def random_content(rng: random.Random, size: int) -> bytes:
    """Random bytes with some zero spans, some of them whole blocks."""
    content = bytearray(rng.randbytes(size))
    for _ in range(rng.randrange(4) if size else 0):
        start = rng.randrange(size)
        stop = min(size, start + rng.choice([1, 100, BS, 3 * BS]))
        content[start:stop] = bytes(stop - start)
    return bytes(content)


# --- roundtrips ---------------------------------------------------------------
WINDOW = 24 * BS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    at_end=st.booleans(),
    ops=st.lists(
        st.tuples(st.integers(0, WINDOW - 1), st.integers(0, 6 * BS), st.sampled_from("dzp")),
        min_size=1,
        max_size=8,
    ),
)
def test_roundtrip_matches_a_model(
    seed: int, at_end: bool, ops: list[tuple[int, int, str]]
) -> None:
    rng = random.Random(seed)
    base = CHUNK_SIZE_BYTES - WINDOW if at_end else 0  # the last blocks of a chunk too
    model = bytearray(WINDOW)
    with tempfile.TemporaryDirectory() as directory:
        with ChunkStore(Path(directory)) as store:
            store.create(CHUNK, 3)
            for start, size, kind in ops:
                size = min(size, WINDOW - start)
                if kind == "d":
                    want = random_content(rng, size)
                elif kind == "z":
                    want = bytes(size)
                else:  # a patch of few bytes inside existing data
                    want = rng.randbytes(min(size, 7))
                    size = len(want)
                payload, zero_ranges = encode(base + start, want, rng)
                store.write(CHUNK, 3, base + start, size, payload, zero_ranges)
                model[start : start + size] = want
                # Read back a random range, touching partial blocks at both ends.
                offset = rng.randrange(WINDOW)
                length = rng.randrange(WINDOW - offset + 1)
                got = store.read(CHUNK, 3, base + offset, length)
                assert decode(base + offset, length, *got) == model[offset : offset + length]
            store.flush(CHUNK)
            assert store.verify(CHUNK) == []
        with ChunkStore(Path(directory)) as store:  # the table as loaded from disk
            payload, zero_ranges = store.read(CHUNK, 3, base, WINDOW)
            assert decode(base, WINDOW, payload, zero_ranges) == model
            for start, size in zero_ranges:  # zero ranges are whole blocks but at the edges
                assert start == base or start % BS == 0
                assert start + size == base + WINDOW or (start + size) % BS == 0


def test_new_replica_is_all_holes(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 1)
    path = chunk_path(tmp_path, CHUNK)
    assert os.stat(path).st_size == FILE_SIZE_BYTES
    assert data_bytes_in(path, DATA_OFFSET, FILE_SIZE_BYTES) == 0
    assert os.stat(path).st_blocks * 512 <= 2 * DATA_OFFSET  # header and table only
    assert store.read(CHUNK, 1, 0, CHUNK_SIZE_BYTES) == (b"", [(0, CHUNK_SIZE_BYTES)])
    assert store.read(CHUNK, 1, 5, 0) == (b"", [])
    assert store.version_of(CHUNK) == 1
    with pytest.raises(Exists):
        store.create(CHUNK, 2)
    assert store.version_of(CHUNK) == 1
    assert list((tmp_path / "tmp").iterdir()) == []


def test_zero_writes_become_holes(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 1)
    path = chunk_path(tmp_path, CHUNK)
    blocks_before = os.stat(path).st_blocks
    # 1 MiB of zeros as a zero range, and 1 MiB of zeros as payload: no space used.
    store.write(CHUNK, 1, 0, MiB, b"", [(0, MiB)])
    store.write(CHUNK, 1, MiB, MiB, bytes(MiB), [])
    store.flush(CHUNK)
    assert os.stat(path).st_blocks == blocks_before
    assert data_bytes_in(path, DATA_OFFSET, FILE_SIZE_BYTES) == 0
    assert store.read(CHUNK, 1, 0, 2 * MiB) == (b"", [(0, 2 * MiB)])

    data = os.urandom(MiB)
    store.write(CHUNK, 1, 0, MiB, data, [])
    assert data_bytes_in(path, DATA_OFFSET, DATA_OFFSET + MiB) == MiB
    assert store.read(CHUNK, 1, 0, MiB) == (data, [])
    # Written blocks overwritten with zeros (payload or range) are punched again.
    store.write(CHUNK, 1, 0, 4 * BS, bytes(4 * BS), [])
    store.write(CHUNK, 1, 8 * BS, 4 * BS, b"", [(8 * BS, 4 * BS)])
    # A zero range covering part of a block only: that block stays data.
    store.write(CHUNK, 1, 20 * BS + 10, 100, b"", [(20 * BS + 10, 100)])
    store.flush(CHUNK)
    assert data_bytes_in(path, DATA_OFFSET, DATA_OFFSET + MiB) == MiB - 8 * BS
    payload, zero_ranges = store.read(CHUNK, 1, 0, MiB)
    assert zero_ranges == [(0, 4 * BS), (8 * BS, 4 * BS)]
    expected = bytearray(data)
    expected[0 : 4 * BS] = bytes(4 * BS)
    expected[8 * BS : 12 * BS] = bytes(4 * BS)
    expected[20 * BS + 10 : 20 * BS + 110] = bytes(100)
    assert decode(0, MiB, payload, zero_ranges) == expected
    # Zeroing the rest of a partly written block by read-modify-write punches it.
    store.write(CHUNK, 1, 600 * BS, 10, b"x" * 10, [])
    assert data_bytes_in(path, DATA_OFFSET + 600 * BS, DATA_OFFSET + 601 * BS) == BS
    store.write(CHUNK, 1, 600 * BS, 10, b"", [(600 * BS, 10)])
    assert store.read(CHUNK, 1, 600 * BS, BS) == (b"", [(600 * BS, BS)])
    assert data_bytes_in(path, DATA_OFFSET + 600 * BS, DATA_OFFSET + 601 * BS) == 0
    assert store.verify(CHUNK) == []


def test_unaligned_writes_keep_their_neighbours(store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    first = os.urandom(3 * BS)
    store.write(CHUNK, 1, 0, 3 * BS, first, [])
    store.write(CHUNK, 1, BS - 5, 10, b"0123456789", [])
    payload, zero_ranges = store.read(CHUNK, 1, 0, 3 * BS)
    assert zero_ranges == []
    assert payload == first[: BS - 5] + b"0123456789" + first[BS + 5 :]


# --- corruption -----------------------------------------------------------------
def flip_bit(path: Path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0x10]))


def test_bit_flip_is_detected_and_repairable(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 1)
    data = os.urandom(4 * BS)
    store.write(CHUNK, 1, 0, 4 * BS, data, [])
    store.flush(CHUNK)
    flip_bit(chunk_path(tmp_path, CHUNK), DATA_OFFSET + 2 * BS + 123)
    with pytest.raises(ChecksumMismatch, match=f"{CHUNK:016x} block 2"):
        store.read(CHUNK, 1, 2 * BS + 4000, 10)  # even a read of a few bytes of it
    assert store.read(CHUNK, 1, 0, 2 * BS) == (data[: 2 * BS], [])  # other blocks are fine
    assert store.verify(CHUNK) == [2]
    # A write covering part of the bad block is refused and changes nothing.
    with pytest.raises(ChecksumMismatch, match="block 2"):
        store.write(CHUNK, 1, 0, 2 * BS + 10, bytes(2 * BS + 9) + b"x", [])
    assert store.read(CHUNK, 1, 0, BS) == (data[:BS], [])
    assert store.verify(CHUNK) == [2]
    # A whole-block write replaces it (repair from another replica).
    store.write(CHUNK, 1, 2 * BS, BS, data[2 * BS : 3 * BS], [])
    assert store.verify(CHUNK) == []
    assert store.read(CHUNK, 1, 0, 4 * BS) == (data, [])
    # Reopened, the table comes from disk and still matches.
    store.close()
    with ChunkStore(tmp_path) as again:
        assert again.read(CHUNK, 1, 0, 4 * BS) == (data, [])


def test_data_in_a_zero_block_is_detected(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 1)
    with open(chunk_path(tmp_path, CHUNK), "r+b") as file:
        file.seek(DATA_OFFSET + 5 * BS + 7)
        file.write(b"garbage")
    with pytest.raises(ChecksumMismatch, match="block 5"):
        store.read(CHUNK, 1, 4 * BS, 3 * BS)
    assert store.verify(CHUNK) == [5]


def force_crc(prefix: bytes, target: int) -> bytes:
    """prefix plus 4 bytes whose crc32 is target (CRC32 is affine over GF(2))."""
    base = zlib.crc32(prefix + bytes(4))
    basis: dict[int, tuple[int, int]] = {}
    for bit in range(32):
        value = zlib.crc32(prefix + (1 << bit).to_bytes(4, "little")) ^ base
        combination = 1 << bit
        while value:
            top = value.bit_length() - 1
            if top not in basis:
                basis[top] = (value, combination)
                break
            value ^= basis[top][0]
            combination ^= basis[top][1]
    want, combination = target ^ base, 0
    while want:
        value, bits = basis[want.bit_length() - 1]
        want ^= value
        combination ^= bits
    return prefix + combination.to_bytes(4, "little")


def test_block_whose_crc_is_that_of_zeros_survives(store: ChunkStore) -> None:
    block = force_crc(os.urandom(BS - 4), ZERO_BLOCK_CRC)
    assert zlib.crc32(block) == ZERO_BLOCK_CRC and not is_zero(block)
    store.create(CHUNK, 1)
    store.write(CHUNK, 1, BS, BS, block, [])
    assert store.read(CHUNK, 1, 0, 3 * BS) == (block, [(0, BS), (2 * BS, BS)])
    assert store.verify(CHUNK) == []
    store.write(CHUNK, 1, BS, BS, bytes(BS), [])  # and zeroing it really zeroes it
    assert store.read(CHUNK, 1, 0, 3 * BS) == (b"", [(0, 3 * BS)])


def test_truncated_file_reads_zeros_only_where_the_table_says_so(
    store: ChunkStore, tmp_path: Path
) -> None:
    store.create(CHUNK, 1)
    data = os.urandom(2 * BS)
    store.write(CHUNK, 1, 0, 2 * BS, data, [])
    store.flush(CHUNK)
    os.truncate(chunk_path(tmp_path, CHUNK), DATA_OFFSET + BS + 100)
    assert store.read(CHUNK, 1, 0, BS) == (data[:BS], [])
    assert store.read(CHUNK, 1, 2 * BS, MiB) == (b"", [(2 * BS, MiB)])
    with pytest.raises(ChecksumMismatch, match="block 1"):
        store.read(CHUNK, 1, BS, 10)
    assert store.verify(CHUNK) == [1]


# --- versions -------------------------------------------------------------------
def test_version_mismatch(store: ChunkStore) -> None:
    store.create(CHUNK, 4)
    with pytest.raises(StaleChunkVersion, match=r"version 3 .* has 4"):
        store.read(CHUNK, 3, 0, 10)
    with pytest.raises(StaleChunkVersion):
        store.write(CHUNK, 5, 0, 3, b"abc", [])
    assert store.read(CHUNK, 4, 0, BS) == (b"", [(0, BS)])


def test_revert_version_undoes_only_an_unwritten_bump_of_this_process(
        store: ChunkStore, tmp_path: Path) -> None:
    """A failed copy gives its fencing bump back (issue 19), never more than that."""
    store.create(CHUNK, 1)
    store.write(CHUNK, 1, 0, 3, b"abc", [])
    store.set_version(CHUNK, 1, 2)
    with pytest.raises(StaleChunkVersion, match="version 3 asked"):
        store.revert_version(CHUNK, 1, 3)  # not its current version
    store.revert_version(CHUNK, 1, 2)
    assert store.version_of(CHUNK) == 1
    assert store.read(CHUNK, 1, 0, 3) == (b"abc", [])
    with pytest.raises(StaleChunkVersion):
        store.revert_version(CHUNK, 1, 2)  # once
    store.set_version(CHUNK, 1, 2)
    store.write(CHUNK, 2, 0, 3, b"xyz", [])
    with pytest.raises(StaleChunkVersion, match="not an unwritten bump"):
        store.revert_version(CHUNK, 1, 2)  # written since: its data is not version 1's
    store.set_version(CHUNK, 2, 3)
    store.close()
    reopened = ChunkStore(tmp_path)
    try:
        with pytest.raises(StaleChunkVersion, match="not an unwritten bump"):
            reopened.revert_version(CHUNK, 2, 3)  # a restart forgets what it may undo
        assert reopened.version_of(CHUNK) == 3
    finally:
        reopened.close()


def test_set_version(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 1)
    store.write(CHUNK, 1, 0, 3, b"abc", [])
    store.set_version(CHUNK, 1, 7)
    assert store.version_of(CHUNK) == 7
    with pytest.raises(StaleChunkVersion):
        store.set_version(CHUNK, 1, 8)
    with pytest.raises(InvalidArgument):
        store.set_version(CHUNK, 7, 7)
    with pytest.raises(InvalidArgument):
        store.set_version(CHUNK, 7, 0)
    assert store.read(CHUNK, 7, 0, 3) == (b"abc", [])
    store.close()
    with ChunkStore(tmp_path) as again:
        assert again.version_of(CHUNK) == 7
        assert again.list_chunks() == [(CHUNK, 7)]


def test_truncate_and_set_version(store: ChunkStore, tmp_path: Path) -> None:
    store.create(CHUNK, 2)
    data = os.urandom(5 * BS)
    store.write(CHUNK, 2, 0, 5 * BS, data, [])
    store.write(CHUNK, 2, CHUNK_SIZE_BYTES - 10, 10, b"0123456789", [])
    with pytest.raises(StaleChunkVersion):
        store.truncate_and_set_version(CHUNK, 1, 3, 0)
    with pytest.raises(InvalidArgument):
        store.truncate_and_set_version(CHUNK, 2, 3, CHUNK_SIZE_BYTES + 1)
    store.truncate_and_set_version(CHUNK, 2, 3, BS + 100)
    assert store.version_of(CHUNK) == 3
    payload, zero_ranges = store.read(CHUNK, 3, 0, CHUNK_SIZE_BYTES)
    assert payload == data[: BS + 100] + bytes(BS - 100)
    assert zero_ranges == [(2 * BS, CHUNK_SIZE_BYTES - 2 * BS)]
    path = chunk_path(tmp_path, CHUNK)
    assert data_bytes_in(path, DATA_OFFSET, FILE_SIZE_BYTES) == 2 * BS
    assert store.verify(CHUNK) == []
    store.truncate_and_set_version(CHUNK, 3, 4, 0)
    assert store.read(CHUNK, 4, 0, CHUNK_SIZE_BYTES) == (b"", [(0, CHUNK_SIZE_BYTES)])
    assert data_bytes_in(path, DATA_OFFSET, FILE_SIZE_BYTES) == 0


# --- the directory ----------------------------------------------------------------
def test_list_chunks_and_damaged_files(tmp_path: Path, expected_logs: Any) -> None:
    expected = [(1, 1), (255, 2), (256, 3), (2**63 - 1, 9), (CHUNK, 5)]
    with ChunkStore(tmp_path) as store:
        for chunk_id, version in expected:
            store.create(chunk_id, version)
        store.write(CHUNK, 5, 0, 4, b"data", [])
        for chunk_id in (77, 78, 79, 80):
            store.create(chunk_id, 1)
    # Damage: wrong magic, header checksum, header id (a copy under another
    # name), names that do not parse, a file in the wrong subdirectory.
    with open(chunk_path(tmp_path, 77), "r+b") as file:
        file.write(b"NOTACHNK")
    flip_bit(chunk_path(tmp_path, 78), 10)
    chunk_path(tmp_path, 81).parent.mkdir()
    os.replace(chunk_path(tmp_path, 80), chunk_path(tmp_path, 81))
    chunk_path(tmp_path, 79).rename(chunk_path(tmp_path, 79).with_name("hello.chunk"))
    chunk_path(tmp_path, 1).rename(chunk_path(tmp_path, 255).with_name(f"{1:016x}.chunk"))
    chunk_path(tmp_path, 1).parent.joinpath("stray.txt").write_text("x")
    (tmp_path / "chunks" / "zz").mkdir()
    expected.remove((1, 1))
    expected_logs.allow("vmstore.dfs.chunkserver.chunk_store", r"is damaged .* moved to", count=7)
    with ChunkStore(tmp_path) as store:
        assert store.list_chunks() == sorted(expected)
        assert len(list((tmp_path / "damaged").iterdir())) == 7
        assert store.list_chunks() == sorted(expected)  # nothing more to move
        assert store.read(CHUNK, 5, 0, 4) == (b"data", [])
        store.delete(255)
        with pytest.raises(ChunkNotFound):
            store.delete(255)
        with pytest.raises(ChunkNotFound):
            store.version_of(255)
        assert (255, 2) not in store.list_chunks()
        store.create(255, 4)  # a deleted id can come back
        assert store.version_of(255) == 4


def test_damaged_header_found_on_open(tmp_path: Path, expected_logs: Any) -> None:
    with ChunkStore(tmp_path) as store:
        store.create(CHUNK, 1)
    flip_bit(chunk_path(tmp_path, CHUNK), 20)
    expected_logs.allow("vmstore.dfs.chunkserver.chunk_store", r"header checksum", count=1)
    with ChunkStore(tmp_path) as store:
        with pytest.raises(ChunkNotFound, match="damaged"):
            store.read(CHUNK, 1, 0, 1)
        assert store.list_chunks() == []
        store.create(CHUNK, 2)


def test_missing_chunk(store: ChunkStore) -> None:
    for call in (
        lambda: store.read(CHUNK, 1, 0, 1),
        lambda: store.write(CHUNK, 1, 0, 1, b"x", []),
        lambda: store.version_of(CHUNK),
        lambda: store.delete(CHUNK),
        lambda: store.flush(CHUNK),
        lambda: store.verify(CHUNK),
        lambda: store.set_version(CHUNK, 1, 2),
    ):
        with pytest.raises(ChunkNotFound):
            call()


# --- arguments ------------------------------------------------------------------
@pytest.mark.parametrize("chunk_id", [0, -1, 2**63, True, "12"])
def test_invalid_chunk_ids(store: ChunkStore, tmp_path: Path, chunk_id: object) -> None:
    with pytest.raises(InvalidArgument):
        store.create(chunk_id, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        store.read(chunk_id, 1, 0, 1)  # type: ignore[arg-type]
    assert store.list_chunks() == []
    assert list((tmp_path / "chunks").iterdir()) == []


@pytest.mark.parametrize(
    ("version", "offset", "length", "payload", "zero_ranges"),
    [
        (0, 0, 1, b"x", []),  # version
        (1, -1, 1, b"x", []),  # offset
        (1, 0, -1, b"", []),  # length
        (1, CHUNK_SIZE_BYTES - 1, 2, b"xy", []),  # past the end
        (1, CHUNK_SIZE_BYTES, 1, b"x", []),
        (1, 0, 10, b"x" * 9, []),  # payload short
        (1, 0, 10, b"x" * 11, []),  # payload long
        (1, 0, 10, b"x" * 5, [(0, 4)]),  # payload vs zero ranges
        (1, 10, 10, b"x" * 5, [(5, 5)]),  # zero range before the range
        (1, 0, 10, b"x" * 5, [(6, 5)]),  # zero range past it
        (1, 0, 10, b"x" * 4, [(4, 3), (2, 3)]),  # out of order
        (1, 0, 10, b"x" * 5, [(2, 3), (4, 2)]),  # overlapping
        (1, 0, 10, b"x" * 10, [(2, 0)]),  # empty
        (1, 0, 10, b"x" * 12, [(2, -2)]),  # negative
    ],
)
def test_invalid_writes_change_nothing(
    store: ChunkStore,
    tmp_path: Path,
    version: int,
    offset: int,
    length: int,
    payload: bytes,
    zero_ranges: list[tuple[int, int]],
) -> None:
    store.create(CHUNK, 1)
    store.flush(CHUNK)
    path = chunk_path(tmp_path, CHUNK)
    before = path.read_bytes()[:DATA_OFFSET]
    with pytest.raises(InvalidArgument):
        store.write(CHUNK, version, offset, length, payload, zero_ranges)
    assert path.read_bytes()[:DATA_OFFSET] == before
    assert data_bytes_in(path, DATA_OFFSET, FILE_SIZE_BYTES) == 0
    assert store.read(CHUNK, 1, 0, CHUNK_SIZE_BYTES) == (b"", [(0, CHUNK_SIZE_BYTES)])


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1), (CHUNK_SIZE_BYTES, 1), (1.5, 1)])
def test_invalid_reads(store: ChunkStore, offset: int, length: int) -> None:
    store.create(CHUNK, 1)
    with pytest.raises(InvalidArgument):
        store.read(CHUNK, 1, offset, length)


# --- the fd cache and threads -----------------------------------------------------
def test_evicted_replicas_keep_their_writes(tmp_path: Path) -> None:
    data = {chunk_id: os.urandom(3 * BS + 5) for chunk_id in range(1, 9)}
    with ChunkStore(tmp_path, open_files_max=2) as store:
        for chunk_id, content in data.items():
            store.create(chunk_id, 1)
            store.write(chunk_id, 1, 7, len(content), content, [])
        for chunk_id, content in data.items():
            assert store.read(chunk_id, 1, 7, len(content)) == (content, [])
            store.flush(chunk_id)
    with ChunkStore(tmp_path) as store:
        for chunk_id, content in data.items():
            assert store.read(chunk_id, 1, 7, len(content)) == (content, [])


def test_threads(tmp_path: Path) -> None:
    errors: list[Exception] = []
    with ChunkStore(tmp_path, open_files_max=3) as store:
        for chunk_id in range(1, 7):
            store.create(chunk_id, 1)

        def work(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(60):
                    chunk_id = rng.randrange(1, 7)
                    # Each thread owns its blocks, in every chunk.
                    block = seed + 8 * rng.randrange(16)
                    content = rng.randbytes(BS)
                    store.write(chunk_id, 1, block * BS, BS, content, [])
                    assert store.read(chunk_id, 1, block * BS, BS) == (content, [])
            except Exception as error:  # noqa: BLE001 (the main thread reports it)
                errors.append(error)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for chunk_id in range(1, 7):
            assert store.verify(chunk_id) == []


# --- odds and ends ----------------------------------------------------------------
def test_space(store: ChunkStore) -> None:
    total, used = store.space()
    assert 0 < used <= total


def test_is_zero() -> None:
    assert is_zero(b"")
    assert is_zero(bytes(BS))
    assert is_zero(bytearray(3 * MiB))
    assert is_zero(memoryview(bytes(5 * MiB))[MiB:])
    assert not is_zero(b"\0" * 100 + b"\1")
    big = bytearray(3 * MiB)
    big[-1] = 1
    assert not is_zero(big)
    assert not is_zero(memoryview(big)[2 * MiB :])


def test_leftover_tmp_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "0000000000000001.1.tmp").write_bytes(b"half")
    with ChunkStore(tmp_path) as store:
        assert store.list_chunks() == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_no_warnings_on_a_clean_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), ChunkStore(tmp_path) as store:
        store.create(1, 1)
        assert store.list_chunks() == [(1, 1)]
    assert caplog.records == []
