"""Capabilities against live chunkservers: no read, write or flush without the master's.

A raw client (it holds the cluster key, so it passes authentication, but it
sends what it likes) tries a chunk that holds real data with no capability,
a forged one, an expired one, one for another chunk and one for another
operation. Each is refused with an error naming what was wrong, and the
replicas are unchanged; the honest read with the master's capability works.
"""

from __future__ import annotations

import time

import msgspec
import pytest

from tests.system.conftest import Cluster
from tests.system.replicas import every_replica
from vmstore.dfs.errors import DfsError, ReadRefused, TokenExpired, WriteRefused
from vmstore.dfs.protocol import capability
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import READ
from vmstore.dfs.protocol.rpc import open_connection

pytestmark = pytest.mark.system

DATA = b"secret guest disk " * 512


async def test_chunkservers_serve_only_with_the_masters_capability(cluster: Cluster) -> None:
    async with cluster.client() as client:
        victim = await client.create_file("/victim.img")
        other = await client.create_file("/other.img")
        for attrs in (victim, other):
            await client.write(attrs.inode, 0, DATA)
            await client.fsync(attrs.inode)
        (real,) = await client.chunk_locations(victim.inode, 0, 1)
        (elsewhere,) = await client.chunk_locations(other.inode, 0, 1)
        write, write_elsewhere = [await client.master.mutate(m.ClientToMasterChunkForWrite(
            session_id=0, op_id=0, inode=attrs.inode, index=0,
            lease_epoch=client.leases.epoch_for_write(attrs.inode)),
            reply_type=m.WriteLocationReply) for attrs in (victim, other)]
        before = await every_replica(client, victim.inode, 0, 0, len(DATA))
    assert real.read_capability is not None
    assert set(before.values()) == {DATA}
    key = capability.capability_key(b"not the cluster key" * 2)
    expired = capability.sign(capability.capability_key(cluster.key), operation=READ,
                              chunk_id=real.chunk_id, session_id=1,
                              issued_ns=time.time_ns() - 120 * 10**9, life_ns=60 * 10**9)

    def read(grant: m.Capability | None) -> m.ToChunkserverReadChunk:
        return m.ToChunkserverReadChunk(chunk_id=real.chunk_id, version=real.version,
                                        offset_bytes=0, length_bytes=len(DATA),
                                        capability=grant)

    def write_with(grant: m.Capability | None) -> m.ToChunkserverWriteChunk:
        return m.ToChunkserverWriteChunk(
            chunk_id=real.chunk_id, version=real.version, chain_rest=real.replicas[1:],
            extents=[m.WriteExtent(offset_bytes=0, length_bytes=5, zero_ranges=[])], token=grant)

    forged = msgspec.structs.replace(real.read_capability,
                                     expires_ns=real.read_capability.expires_ns + 10**12)
    attacks: list[tuple[m.Request, bytes, type[DfsError], str]] = [
        (read(None), b"", ReadRefused, "read of chunk .* carries no capability"),
        (read(forged), b"", ReadRefused, "not signed by this cluster's master"),
        (read(capability.sign(key, operation=READ, chunk_id=real.chunk_id, session_id=1,
                              issued_ns=time.time_ns(), life_ns=10**10)),
         b"", ReadRefused, "not signed"),
        (read(expired), b"", TokenExpired, "read capability for chunk .* expired"),
        (read(elsewhere.read_capability), b"", ReadRefused,
         f"is for chunk {elsewhere.chunk_id}, not {real.chunk_id}"),
        (read(write.token), b"", ReadRefused, "allows write, not read"),
        (write_with(None), b"EVIL!", WriteRefused, "carries no capability"),
        (write_with(real.read_capability), b"EVIL!", WriteRefused, "allows read, not write"),
        (write_with(write_elsewhere.token), b"EVIL!", WriteRefused,
         f"is for chunk {elsewhere.chunk_id}, not {real.chunk_id}"),
        (m.ToChunkserverFlushChunk(chunk_id=real.chunk_id, version=real.version,
                                   chain_rest=[], capability=real.read_capability),
         b"", WriteRefused, "allows read, not write"),
    ]
    head = real.replicas[0]
    async with open_connection(head.host, head.port, cluster.key, "client") as connection:
        for request, payload, error, text in attacks:
            with pytest.raises(error, match=text):
                await connection.call(request, payload)
        reply, payload = await connection.call(read(real.read_capability))
        assert payload == DATA, "the honest read with the master's capability works"
    async with cluster.client() as client:
        assert await every_replica(client, victim.inode, 0, 0, len(DATA)) == before
