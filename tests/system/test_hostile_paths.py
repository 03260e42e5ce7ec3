"""Path and id tricks against live daemons: refused with a clear error, nothing touched.

Through the raw protocol (the client library sends names and numbers as
given; the master and the chunkservers are what judge them): names with
'/', NUL, '.', '..', empty or over 255 bytes; sizes, offsets, indexes and
ids negative, over 64 bits or past the largest file; chunk ids that would
escape a data directory if they were ever used in a path. And through a
real FUSE mount where the kernel lets them through. Afterwards the cluster's
files are exactly what they were, and nothing appeared outside it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, Mount
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import FILE_SIZE_BYTES_MAX
from vmstore.dfs.errors import (
    ChunkNotFound,
    DfsError,
    FileTooLarge,
    InvalidArgument,
    NameTooLong,
    WriteRefused,
)
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import CapabilitySigner
from vmstore.dfs.protocol.rpc import open_connection
from vmstore.dfs.types import ROOT_INODE

pytestmark = pytest.mark.system

ESCAPE = b"vmstore-escape-probe"
BAD_NAMES: list[tuple[bytes, type[DfsError], str]] = [
    (b"a/b", InvalidArgument, "'/' or NUL"),
    (b"../../../../../tmp/" + ESCAPE, InvalidArgument, "'/' or NUL"),
    (b"a\0b", InvalidArgument, "'/' or NUL"),
    (b"..", InvalidArgument, "reserved"),
    (b".", InvalidArgument, "reserved"),
    (b"", InvalidArgument, "empty name"),
    (b"x" * 256, NameTooLong, "over 255"),
    (b"y" * 5000, NameTooLong, "over 255"),
]
HUGE = [2**63 - 1, 2**63, 2**64 - 1]


NAME_OPERATIONS = ["create", "mkdir", "symlink", "lookup", "unlink", "rmdir", "link", "rename"]


async def name_operation(client: Client, operation: str, name: bytes, victim: int) -> object:
    """One namespace call with ``name`` where a name goes."""
    if operation == "create":
        return await client.create(ROOT_INODE, name, 0o100644)
    if operation == "symlink":
        return await client.symlink(ROOT_INODE, name, b"/etc/passwd")
    if operation == "link":
        return await client.link(victim, ROOT_INODE, name)
    if operation == "rename":
        return await client.rename(ROOT_INODE, b"victim", ROOT_INODE, name)
    return await getattr(client, operation)(ROOT_INODE, name)


def cluster_files(cluster: Cluster) -> set[str]:
    """Every file of the cluster but logs and the master's database (which both change)."""
    found = set()
    for path in cluster.directory.rglob("*"):
        relative = path.relative_to(cluster.directory)
        if relative.parts[0] not in ("logs", "master"):
            found.add(str(relative))
    return found


def escaped(roots: list[Path]) -> list[Path]:
    """Files named like the attack's escape under ``roots``. Directories that cannot
    be listed (another run's dead mount under /tmp) are passed over, not fatal."""
    found: list[Path] = []
    for root in roots:
        for directory, subdirectories, files in os.walk(root, onerror=lambda _error: None):
            found += [Path(directory, name) for name in [*subdirectories, *files]
                      if ESCAPE.decode() in name]
    return found


async def test_names_and_numbers_through_the_raw_protocol(cluster: Cluster) -> None:
    async with cluster.client() as client:
        victim = await client.create_file("/victim")
        await client.write(victim.inode, 0, b"v" * 10000)
        await client.fsync(victim.inode)
        before = cluster_files(cluster)
        for name, error, text in BAD_NAMES:
            for operation in NAME_OPERATIONS:
                with pytest.raises(error, match=text):
                    await name_operation(client, operation, name, victim.inode)
        with pytest.raises(FileTooLarge):
            await client.setattr(victim.inode, size_bytes=FILE_SIZE_BYTES_MAX + 1)
        with pytest.raises(FileTooLarge):
            await client.write(victim.inode, FILE_SIZE_BYTES_MAX, b"x")
        with pytest.raises(FileTooLarge):
            await client.chunk_locations(victim.inode, 2**63 - 1, 4096)
        # Values no honest client can send: the decoder refuses them by field.
        for value in HUGE[1:]:
            with pytest.raises(InvalidArgument, match=r"ClientToMasterGetAttr\.inode"):
                await client.master.call(m.ClientToMasterGetAttr(inode=value),
                                         reply_type=m.AttrsReply)
        with pytest.raises(InvalidArgument, match=r"ClientToMasterSetAttr\.size_bytes"):
            await client.setattr(victim.inode, size_bytes=-1)
        with pytest.raises(InvalidArgument, match=r"ClientToMasterChunkLocations\.first_index"):
            await client.chunk_locations(victim.inode, -1, 1)
        with pytest.raises(FileTooLarge, match="chunk index"):
            await client.master.mutate(m.ClientToMasterChunkForWrite(
                session_id=0, op_id=0, inode=victim.inode, index=2**40),
                reply_type=m.WriteLocationReply)
        assert (await client.getattr(victim.inode)).size_bytes == 10000
        assert await client.read(victim.inode, 0, 10000, 10000) == b"v" * 10000
        locations = await client.chunk_locations(victim.inode, 0, 1)
    await chunk_ids_and_ranges(cluster, locations[0])
    assert cluster_files(cluster) == before, "an attack changed the cluster's files"
    assert not escaped([cluster.directory.parent, Path("/tmp")])


async def chunk_ids_and_ranges(cluster: Cluster, real: m.ChunkLocation) -> None:
    """Hostile reads, writes and flushes at a chunkserver holding the real chunk."""
    host, port = real.replicas[0].host, real.replicas[0].port  # a server that holds it
    loop = m.ReplicaAddress(server_id=9, host=host, port=port, host_label="x")

    # Holding the cluster key, this attacker can sign capabilities for any chunk id:
    # so the ids are judged by the chunk store itself, past the capability check.
    assert real.read_capability is not None
    signer = CapabilitySigner(cluster.key, write_life_s=60.0,
                              generation=real.read_capability.generation)

    def read(chunk_id: int = real.chunk_id, offset: int = 0,
             length: int = 4096) -> m.ToChunkserverReadChunk:
        capability = (signer.read(0, chunk_id) if 0 <= chunk_id < 2**63
                      else real.read_capability)
        return m.ToChunkserverReadChunk(chunk_id=chunk_id, version=real.version,
                                        offset_bytes=offset, length_bytes=length,
                                        capability=capability)

    refused: list[tuple[m.Request, type[DfsError], str]] = [
        (read(chunk_id=0), InvalidArgument, "chunk id"),
        (read(chunk_id=2**63 - 1), ChunkNotFound, "no replica"),  # the largest valid id
        *[(read(chunk_id=value), InvalidArgument, r"ToChunkserverReadChunk\.chunk_id")
          for value in HUGE[1:]],
        (read(chunk_id=-1), InvalidArgument, r"ToChunkserverReadChunk\.chunk_id"),
        (read(offset=2**63 - 1), InvalidArgument, "range"),
        (read(offset=-4096), InvalidArgument, r"\.offset_bytes"),
        (read(length=-1), InvalidArgument, r"\.length_bytes"),
        (read(length=2**40), InvalidArgument, "at most"),
        (m.ToChunkserverWriteChunk(chunk_id=2**63 - 1, version=1, chain_rest=[], extents=[
            m.WriteExtent(offset_bytes=0, length_bytes=0, zero_ranges=[])]),
         WriteRefused, "write of chunk 9223372036854775807 carries no capability"),
        (m.ToChunkserverFlushChunk(chunk_id=real.chunk_id, version=real.version,
                                   chain_rest=[loop] * 100),
         InvalidArgument, r"\.chain_rest"),
        (m.ToChunkserverFlushChunk(chunk_id=2**63, version=1, chain_rest=[]),
         InvalidArgument, r"\.chunk_id"),
        (m.MasterToChunkserverDeleteChunk(chunk_id=real.chunk_id, version=0),
         DfsError, "not a data request"),
    ]
    async with open_connection(host, port, cluster.key, "client") as connection:
        for request, error, text in refused:
            with pytest.raises(error, match=text):
                await connection.call(request)
        reply, payload = await connection.call(read(length=10000))
        assert payload == b"v" * 10000, "the replica is untouched and still served"


async def test_tricks_through_the_mount(cluster: Cluster, mount: Mount) -> None:
    root = mount.path
    outside_before = sorted(os.listdir(root.parent))
    for length in (256, 1000, 5000):
        for make in (lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)),
                     os.mkdir, lambda p: os.symlink("target", p)):
            with pytest.raises(OSError) as caught:
                make(root / ("n" * length))
            assert caught.value.errno == errno.ENAMETOOLONG, (length, caught.value)
    (root / ("n" * 255)).write_bytes(b"ok")  # the longest name there is works
    path = root / "big"
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(descriptor, b"first", 0)
        for offset in (FILE_SIZE_BYTES_MAX, 2**62):
            with pytest.raises(OSError) as caught:
                os.pwrite(descriptor, b"x", offset)
                os.fsync(descriptor)
            assert caught.value.errno in (errno.EFBIG, errno.EINVAL), caught.value
        with pytest.raises(OSError) as caught:
            os.pwrite(descriptor, b"x", 2**63 - 1)
        assert caught.value.errno in (errno.EFBIG, errno.EINVAL), caught.value
        with pytest.raises(OSError) as caught:
            os.ftruncate(descriptor, FILE_SIZE_BYTES_MAX + 1)
        assert caught.value.errno == errno.EFBIG, caught.value
        with pytest.raises(OSError) as caught:
            os.ftruncate(descriptor, -1)
        assert caught.value.errno == errno.EINVAL
    finally:
        os.close(descriptor)
    assert path.read_bytes() == b"first"
    assert os.stat(path).st_size == 5
    assert sorted(os.listdir(root.parent)) == outside_before
    assert (root / ".." / "mnt" / "big").resolve() == path.resolve()
