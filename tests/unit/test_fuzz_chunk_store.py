"""Fuzzing replica files and chunk ids as the chunk store reads them.

A replica file on disk is hostile input too: a torn write, a bad disk, a
stray file. The property: after truncating, bit-flipping or extending a
replica, a fresh ChunkStore either lists it with its true version and reads
back only verified bytes (or raises ChecksumMismatch), or treats it as
damaged (moved to damaged/, ChunkNotFound); never another exception. And
no chunk id, however chosen, names a path outside the data directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstore.dfs.chunkserver.chunk_store import DATA_OFFSET, HEADER_SIZE_BYTES, ChunkStore
from vmstore.dfs.constants import BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES
from vmstore.dfs.errors import ChecksumMismatch, ChunkNotFound, InvalidArgument

CHUNK_ID = 0x1234
VERSION = 3
DATA = bytes(range(256)) * (3 * BLOCK_SIZE_BYTES // 256)  # three non-zero blocks
# Where damage matters: the header, the CRC table entries of the written
# blocks, the written blocks, and past them.
REGIONS = [(0, 40), (DATA_OFFSET - 65536, DATA_OFFSET - 65536 + 16),
           (DATA_OFFSET, DATA_OFFSET + len(DATA)), (DATA_OFFSET + len(DATA), DATA_OFFSET
                                                    + 8 * BLOCK_SIZE_BYTES)]
HOSTILE_IDS = [0, -1, -(2**63), 2**63, 2**64 - 1, 2**64, 2**80, True, 1.5, "1", "../../etc"]


@pytest.fixture(autouse=True)
def damage_is_reported(expected_logs) -> None:  # type: ignore[no-untyped-def]
    """Every replica moved aside is logged: expected here."""
    expected_logs.allow("vmstore.dfs.chunkserver.chunk_store", r"is damaged \(")


def make_replica(directory: Path) -> Path:
    with ChunkStore(directory) as store:
        store.create(CHUNK_ID, VERSION)
        store.write(CHUNK_ID, VERSION, 0, len(DATA), DATA, [])
        store.flush(CHUNK_ID)
    (path,) = (directory / "chunks").glob("*/*.chunk")
    return path


@st.composite
def damage(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Up to three edits: ("flip", offset, bit) | ("cut", length, 0) | ("extend", bytes, 0)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "extend"]))
        start, end = draw(st.sampled_from(REGIONS))
        if kind == "flip":
            edits.append(("flip", draw(st.integers(start, end - 1)), draw(st.integers(0, 7))))
        elif kind == "cut":
            edits.append(("cut", draw(st.sampled_from(
                [0, 1, 20, HEADER_SIZE_BYTES, DATA_OFFSET - 1, DATA_OFFSET + 100,
                 draw(st.integers(start, end))])), 0))
        else:
            edits.append(("extend", draw(st.integers(1, 5000)), 0))
    return edits


def apply(path: Path, edits: list[tuple[str, int, int]]) -> None:
    with open(path, "r+b") as replica:
        for kind, at, bit in edits:
            if kind == "flip":
                replica.seek(at)
                old = replica.read(1) or b"\0"
                replica.seek(at)
                replica.write(bytes([old[0] ^ (1 << bit)]))
            elif kind == "cut":
                replica.truncate(at)
            else:
                replica.seek(0, os.SEEK_END)
                replica.write(b"\xa5" * at)


@settings(max_examples=60, deadline=None)
@given(damage())
def test_damaged_replica_files(edits: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        apply(make_replica(directory), edits)
        with ChunkStore(directory) as store:
            listed = store.list_chunks()
            assert listed in ([], [(CHUNK_ID, VERSION)])
            if not listed:
                assert list((directory / "damaged").iterdir()), "a damaged replica is kept aside"
                with pytest.raises(ChunkNotFound):
                    store.read(CHUNK_ID, VERSION, 0, len(DATA))
                return
            try:
                payload, zero_ranges = store.read(CHUNK_ID, VERSION, 0, len(DATA))
            except ChecksumMismatch:
                assert store.verify(CHUNK_ID), "a read that failed its checksum shows in scrub"
                return
            except ChunkNotFound:
                return  # the header was readable in the listing, the table was not
            assert payload == DATA and zero_ranges == []


@pytest.mark.parametrize("chunk_id", HOSTILE_IDS)
def test_hostile_chunk_ids_are_refused(tmp_path: Path, chunk_id: object) -> None:
    with ChunkStore(tmp_path) as store:
        for call in (lambda: store.create(chunk_id, 1),  # type: ignore[arg-type]
                     lambda: store.read(chunk_id, 1, 0, 1),  # type: ignore[arg-type]
                     lambda: store.delete(chunk_id)):  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument, match="chunk id"):
                call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "damaged", "quarantine",
                                                          "tmp"]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**63 - 1))
def test_every_valid_chunk_id_maps_inside_the_chunks_directory(chunk_id: int) -> None:
    store = ChunkStore.__new__(ChunkStore)  # _path needs only the directory
    store._chunks_dir = Path("/data/chunks")
    path = store._path(chunk_id)
    assert path.parent.parent == Path("/data/chunks")
    assert os.path.normpath(path) == str(path)
    assert path.name == f"{chunk_id:016x}.chunk"


@pytest.mark.parametrize(("offset", "length"), [
    (-1, 10), (0, -1), (CHUNK_SIZE_BYTES, 1), (2**63, 1), (1, 2**63), (2**64, 0),
    (CHUNK_SIZE_BYTES - 1, 2)])
def test_absurd_ranges_are_refused(tmp_path: Path, offset: int, length: int) -> None:
    with ChunkStore(tmp_path) as store:
        store.create(CHUNK_ID, VERSION)
        with pytest.raises(InvalidArgument, match="range"):
            store.read(CHUNK_ID, VERSION, offset, length)
        with pytest.raises(InvalidArgument, match="range"):
            store.write(CHUNK_ID, VERSION, offset, length, b"", [])
        with pytest.raises(InvalidArgument, match="length"):
            store.truncate_and_set_version(CHUNK_ID, VERSION, VERSION + 1, -1 - abs(length))


def test_a_symlink_in_place_of_a_replica_is_not_followed(tmp_path: Path) -> None:
    """Even to a perfect replica elsewhere: nothing outside the data directory is used."""
    outside = make_replica(tmp_path / "elsewhere")
    before = outside.read_bytes()[:DATA_OFFSET]
    path = make_replica(tmp_path / "data")
    path.unlink()
    path.symlink_to(outside)
    with ChunkStore(tmp_path / "data") as store:
        with pytest.raises(ChunkNotFound, match="not a regular file"):
            store.write(CHUNK_ID, VERSION, 0, 4, b"evil", [])
        assert store.list_chunks() == []
    assert not path.exists() and not path.is_symlink(), "the link is moved aside"
    assert outside.read_bytes()[:DATA_OFFSET] == before
    with ChunkStore(tmp_path / "elsewhere") as store:
        assert store.read(CHUNK_ID, VERSION, 0, len(DATA)) == (DATA, [])
