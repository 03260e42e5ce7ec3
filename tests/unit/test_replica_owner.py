"""The owner record in a replica's header (the file and chunk index, for `vmstore
recover`): written, kept across version bumps and copies, and absent from replicas
written before it, which still read."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.errors import StaleChunkVersion
from vmstore.dfs.protocol.replica_format import (
    HEADER_SIZE_BYTES,
    OWNER_OFFSET,
    ReplicaOwner,
    decode_header,
    decode_owner,
    encode_header,
)

CHUNK_ID = 0x1234
OWNER = ReplicaOwner(inode=77, index=5)
DATA = b"\x5a" * 8192


def old_format_header(chunk_id: int, version: int) -> bytes:
    """A header as written before owner records existed (spelled out, not encoded by
    today's code): magic, id, version, crc; the rest zero."""
    body = struct.pack("<8sQQ", b"VMSCHNK1", chunk_id, version)
    return (body + struct.pack("<I", zlib.crc32(body))).ljust(HEADER_SIZE_BYTES, b"\0")


def test_a_header_round_trips_its_owner() -> None:
    header = encode_header(CHUNK_ID, 3, OWNER)
    assert len(header) == HEADER_SIZE_BYTES
    assert decode_header(header, CHUNK_ID) == 3
    assert decode_owner(header) == OWNER


def test_a_header_without_a_record_is_the_old_format_byte_for_byte() -> None:
    assert encode_header(CHUNK_ID, 3) == old_format_header(CHUNK_ID, 3)
    assert decode_owner(old_format_header(CHUNK_ID, 3)) is None


def test_a_damaged_record_is_no_record_and_the_version_still_reads() -> None:
    header = bytearray(encode_header(CHUNK_ID, 3, OWNER))
    header[OWNER_OFFSET + 9] ^= 0x01  # a bit of the inode
    assert decode_owner(bytes(header)) is None
    assert decode_header(bytes(header), CHUNK_ID) == 3


def write_old_replica(store: ChunkStore, chunk_id: int, version: int) -> None:
    """A replica as an old chunkserver left it: created, written, header in the old format."""
    store.create(chunk_id, version)
    store.write(chunk_id, version, 0, len(DATA), DATA, [])
    store.flush(chunk_id)
    path = store._path(chunk_id)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, old_format_header(chunk_id, version), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_an_old_replica_reads_and_is_upgraded_in_place(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as store:
        write_old_replica(store, CHUNK_ID, 2)
    with ChunkStore(tmp_path) as store:
        assert store.list_replicas() == [(CHUNK_ID, 2, None)]
        assert store.read(CHUNK_ID, 2, 0, len(DATA)) == (DATA, [])
        with pytest.raises(StaleChunkVersion):
            store.set_owner(CHUNK_ID, 1, OWNER)  # not the version it is at
        store.set_owner(CHUNK_ID, 2, OWNER)
        assert store.list_replicas() == [(CHUNK_ID, 2, OWNER)]
    with ChunkStore(tmp_path) as store:  # on disk, and the data untouched
        assert store.list_replicas() == [(CHUNK_ID, 2, OWNER)]
        assert store.read(CHUNK_ID, 2, 0, len(DATA)) == (DATA, [])


def test_the_record_survives_version_bumps_truncation_and_a_copy(tmp_path: Path) -> None:
    with ChunkStore(tmp_path / "a") as store:
        store.create(CHUNK_ID, 1, OWNER)
        store.write(CHUNK_ID, 1, 0, len(DATA), DATA, [])
        store.set_version(CHUNK_ID, 1, 2)
        store.truncate_and_set_version(CHUNK_ID, 2, 3, 4096)
    with ChunkStore(tmp_path / "a") as store:
        assert store.list_replicas() == [(CHUNK_ID, 3, OWNER)]
        payload, zeros = store.read(CHUNK_ID, 3, 0, 4096)
    with ChunkStore(tmp_path / "b") as copy:
        staged = copy.stage(CHUNK_ID, 3, OWNER)
        copy.write_staged(staged, 0, 4096, payload, zeros)
        copy.install(staged)
    with ChunkStore(tmp_path / "b") as copy:
        assert copy.list_replicas() == [(CHUNK_ID, 3, OWNER)]
