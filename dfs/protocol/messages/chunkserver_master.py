"""Chunkserver ↔ master: registration, heartbeats, damage reports, and the master's commands.

The master drives every change to a replica (create, version bumps,
truncate, delete, replicate, fence); a chunkserver only reports.
"""

from __future__ import annotations

from typing import ClassVar

from vmstore.dfs.protocol.messages.base import U63, EmptyReply, Message, Port, Request
from vmstore.dfs.protocol.messages.records import (
    Capability,
    ChunkOwner,
    ChunkReport,
    ReplicaAddress,
)


class MasterToChunkserverRegistered(Message, frozen=True, kw_only=True):
    """The chunkserver checks the master's identity (dfs.protocol.cluster_identity)
    before it deletes anything; "" and 0 from a master older than cluster ids."""

    TYPE: ClassVar[int] = 200
    server_id: U63
    stale_chunks: list[ChunkReport]  # delete these: the master knows a newer version
    cluster_id: str = ""  # uuid of the master's cluster
    generation: U63 = 0  # of the master's metadata, moved forward at every master start
    incarnation: str = ""  # uuid of this master start
    # The owner records the chunkserver's replicas lacked (``unowned_chunks``), for it
    # to write in their headers; at most REGISTRATION_OWNERS_MAX, the rest next time.
    owners: list[ChunkOwner] = []


class ChunkserverToMasterRegister(Request, frozen=True, kw_only=True):
    """Join the cluster (again) and report every replica held."""

    TYPE: ClassVar[int] = 201
    REPLY: ClassVar[type[Message]] = MasterToChunkserverRegistered
    server_uuid: str  # stable identity, kept in the data directory
    host: str  # IP address clients connect to
    port: Port
    host_label: str
    pid: U63
    bytes_total: U63
    bytes_used: U63
    chunks: list[ChunkReport]
    # The newest master identity this chunkserver accepted; "", 0, "" if none yet.
    cluster_id: str = ""
    generation: U63 = 0
    incarnation: str = ""
    bytes_free: U63 | None = None  # as in a heartbeat
    bytes_reserved: U63 = 0
    # Of ``chunks``, those whose replica header has no owner record (written before
    # records existed); the reply names their owners.
    unowned_chunks: list[U63] = []


class ChunkserverToMasterHeartbeat(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 202
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    bytes_total: U63
    bytes_used: U63
    chunk_count: U63
    # What may still be written, and what of it the replicas there may still take
    # (dfs.chunkserver.space_ledger); None from a chunkserver before reservations.
    bytes_free: U63 | None = None
    bytes_reserved: U63 = 0


class MasterToChunkserverCreateChunk(Request, frozen=True, kw_only=True):
    """Create an empty replica (all holes) at ``version``, its header naming the file
    ``inode`` and the chunk's ``index`` in it (inode 0: not known, no owner record)."""

    TYPE: ClassVar[int] = 210
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63
    inode: U63 = 0
    index: U63 = 0


class MasterToChunkserverSetVersion(Request, frozen=True, kw_only=True):
    """The replica at ``old_version`` is current again as ``new_version``."""

    TYPE: ClassVar[int] = 211
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    old_version: U63
    new_version: U63


class MasterToChunkserverDeleteChunk(Request, frozen=True, kw_only=True):
    """Delete the replica if its version is at most ``version`` (0: any version)."""

    TYPE: ClassVar[int] = 212
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63


class MasterToChunkserverTruncateChunk(Request, frozen=True, kw_only=True):
    """Zero the replica from ``length_bytes`` to its end, then set ``new_version``."""

    TYPE: ClassVar[int] = 213
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    old_version: U63
    new_version: U63
    length_bytes: U63


class MasterToChunkserverReplicate(Request, frozen=True, kw_only=True):
    """Make a replica here by copying the chunk from ``sources`` (any of them).

    The copy is built at ``version - 1`` (stale, never served or adopted)
    and becomes ``version`` only when complete and durable. The sources
    serve the copy's reads only with ``capability``.
    """

    TYPE: ClassVar[int] = 214
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63
    sources: list[ReplicaAddress]
    capability: Capability | None = None  # READ of the chunk, shown to the sources
    inode: U63 = 0  # the file and index the copy's header names; 0: not known
    index: U63 = 0


class MasterToChunkserverFence(Request, frozen=True, kw_only=True):
    """Refuse writes to these chunks with a lease epoch older than ``epoch``.

    Answered only once every write already running on them has finished, so
    that after the reply no write of an older epoch can land here.
    """

    TYPE: ClassVar[int] = 215
    REPLY: ClassVar[type[Message]] = EmptyReply
    epoch: U63
    chunk_ids: list[U63]


class MasterToChunkserverPing(Request, frozen=True, kw_only=True):
    """Are you still there? Sent on a chunkserver's registered link when another
    connection registers under its uuid: a link that answers keeps the identity."""

    TYPE: ClassVar[int] = 216
    REPLY: ClassVar[type[Message]] = EmptyReply


class MasterToChunkserverRevertVersion(Request, frozen=True, kw_only=True):
    """Undo the SetVersion ``old_version`` -> ``new_version`` this process took last for
    the chunk, nothing written since: a copy that bump fenced writes for failed, and a
    failed copy must not move the version (issue 19). StaleChunkVersion (the replica
    stays at ``new_version``) when the replica is not at ``new_version``, or its last
    bump was another one, or it was written since, or this chunkserver restarted since."""

    TYPE: ClassVar[int] = 217
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    old_version: U63
    new_version: U63


class ChunkserverToMasterReportDamaged(Request, frozen=True, kw_only=True):
    """A replica here failed its checksums (on a read or a scrub): drop and rebuild it,
    unless it is the last current copy (then it is kept, its good blocks still served)."""

    TYPE: ClassVar[int] = 203
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    chunk_id: U63
    version: U63
    reason: str
    # [first, end) block index ranges found bad, merged and ordered; empty: not known
    # which (the whole replica is suspect, e.g. it applied a write its chain refused)
    bad_blocks: list[tuple[U63, U63]] = []


class QuarantineCheckReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 205
    safe: list[U63]  # the asked chunk ids whose quarantined replicas may be purged


class ChunkserverToMasterQuarantineCheck(Request, frozen=True, kw_only=True):
    """Which of these chunks, whose replicas sit in this chunkserver's quarantine past
    their retention, are safe without them: no file's any more, or at their goal with
    healthy (not damaged) current replicas on live chunkservers. At most
    QUARANTINE_CHECK_CHUNKS_MAX ids."""

    TYPE: ClassVar[int] = 204
    REPLY: ClassVar[type[Message]] = QuarantineCheckReply
    chunk_ids: list[U63]


class ChunkserverToMasterDiskFailing(Request, frozen=True, kw_only=True):
    """This chunkserver's disk is failing (``dfs.chunkserver.disk_watch``): hung, or
    returning I/O errors. Sent as soon as it is marked and again after every
    registration; the master places nothing new here, moves write chains and reads
    elsewhere, and copies the replicas away, until the chunkserver registers anew."""

    TYPE: ClassVar[int] = 206
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    reason: str
