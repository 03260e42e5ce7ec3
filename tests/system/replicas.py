"""Read what each replica of a chunk holds, straight from its chunkserver."""

from __future__ import annotations

from vmstore.dfs.client.client import Client
from vmstore.dfs.client.zero_ranges import join_zero_ranges
from vmstore.dfs.protocol import messages as m


async def every_replica(client: Client, inode: int, index: int, offset: int,
                        length: int) -> dict[str, bytes]:
    """{host label: bytes at [offset, offset+length) of chunk ``index``} for each replica."""
    (location,) = await client.chunk_locations(inode, index, 1)
    found: dict[str, bytes] = {}
    for replica in location.replicas:
        connection = await client.io.chunkservers.get(replica.host, replica.port)
        reply, payload = await connection.call(m.ToChunkserverReadChunk(
            chunk_id=location.chunk_id, version=location.version, offset_bytes=offset,
            length_bytes=length, capability=location.read_capability),
            reply_type=m.ReadChunkReply)
        found[replica.host_label] = join_zero_ranges(offset, length, reply.zero_ranges,
                                                     payload)
    return found
