"""Client ↔ master: where a file's chunks live, write chains, and the end of a write.

Locations come with a READ capability, write chains with a WRITE one; the
chunkservers check them (``protocol.capability``). Writing needs the
file's write lease (``messages.client_leases``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from vmstore.dfs.protocol.messages.base import U63, Int64, Message, Request
from vmstore.dfs.protocol.messages.client_namespace import AttrsReply
from vmstore.dfs.protocol.messages.records import CHAIN_MEMBERS_MAX, Capability, ChunkLocation


class ChunkLocationReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 140
    location: ChunkLocation


class WriteLocationReply(Message, frozen=True, kw_only=True):
    """A write chain (head first) and the write capability every member of it checks."""

    TYPE: ClassVar[int] = 146
    location: ChunkLocation
    token: Capability  # operation WRITE, at the lease's epoch


class ClientToMasterChunkForWrite(Request, frozen=True, kw_only=True):
    """Where to write chunk ``index`` of ``inode``: allocates it if needed.

    Needs the file's write lease: ``lease_epoch`` is the epoch this client
    holds (the reply is LeaseLost if the lease moved on since), or 0 to take
    the lease now if it is free or handed over to this client's host.
    """

    TYPE: ClassVar[int] = 141
    REPLY: ClassVar[type[Message]] = WriteLocationReply
    session_id: U63
    op_id: U63
    inode: U63
    index: U63
    lease_epoch: U63 = 0


class ChunkLocationsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 142
    locations: list[ChunkLocation]  # chunks never written (holes) are absent


class ClientToMasterChunkLocations(Request, frozen=True, kw_only=True):
    """Current replicas of chunks ``first_index`` .. ``first_index + count - 1``."""

    TYPE: ClassVar[int] = 143
    REPLY: ClassVar[type[Message]] = ChunkLocationsReply
    inode: U63
    first_index: U63
    count: U63
    session_id: U63 = 0  # so that replicas on the reader's own host come first


class ClientToMasterReportBadChain(Request, frozen=True, kw_only=True):
    """A write to this chunk failed at ``failed_server_ids``: drop them, bump the version.

    The reply is the new chain. If the master already moved on (the version
    is older than the current one), it just answers the current chain.
    """

    TYPE: ClassVar[int] = 144
    REPLY: ClassVar[type[Message]] = WriteLocationReply
    session_id: U63
    op_id: U63
    inode: U63
    index: U63
    chunk_id: U63
    version: U63
    failed_server_ids: Annotated[list[U63], msgspec.Meta(max_length=CHAIN_MEMBERS_MAX)]
    lease_epoch: U63 = 0  # as in ClientToMasterChunkForWrite; only the holder may change chains


class ClientToMasterWriteEnd(Request, frozen=True, kw_only=True):
    """Writes up to ``size_bytes`` are acknowledged: grow the file to it and set mtime.

    ``durable`` (an fsync's): on stable storage before the reply, with every
    change committed before it. Off (a close's): committed at once, durable
    within METADATA_SYNC_DELAY_S_MAX (``dfs.master.committer``).
    """

    TYPE: ClassVar[int] = 145
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    size_bytes: U63
    mtime_ns: Int64
    durable: bool = True
