"""Every message on the wire, in one place (as MooseFS's MFSCommunication.h).

A message is a frozen msgspec Struct encoded as msgpack in the frame body;
bulk data (chunk bytes) travels beside it as the frame's raw payload and is
never part of the struct. ``TYPE`` is the message's number in the frame
header and must never change once released. A request names the struct its
successful reply uses in ``REPLY``; any request may instead be answered with
``ErrorReply``.

Direction prefixes: ``ClientToMaster``, ``ChunkserverToMaster``,
``MasterToChunkserver``, ``ToChunkserver`` (from a client, or from a chain
member forwarding a write). Units are in field names; byte strings are raw
bytes (names are bytes, as POSIX names are).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    TYPE: ClassVar[int] = 0


class Request(Message, frozen=True, kw_only=True):
    REPLY: ClassVar[type[Message]]


# --- generic replies ----------------------------------------------------------
class EmptyReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 1


class ErrorReply(Message, frozen=True, kw_only=True):
    """``code`` is a ``dfs.errors`` code; ``message`` names what failed."""

    TYPE: ClassVar[int] = 2
    code: int
    message: str
    server_id: int = 0  # the chunkserver at fault, if any (see DfsError.server_id)


# --- authentication (before anything else, both directions) -------------------
class AuthHello(Message, frozen=True, kw_only=True):
    """Connector → acceptor: who I am and a fresh 32-byte nonce."""

    TYPE: ClassVar[int] = 10
    role: str  # "client" | "chunkserver" | "master" | "admin"
    nonce: bytes


class AuthChallenge(Message, frozen=True, kw_only=True):
    """Acceptor → connector: its own nonce and proof that it holds the key.

    ``proof`` = HMAC-SHA256(key, "acceptor" | hello nonce | acceptor nonce).
    """

    TYPE: ClassVar[int] = 11
    nonce: bytes
    proof: bytes


class AuthProof(Message, frozen=True, kw_only=True):
    """Connector → acceptor: HMAC-SHA256(key, "connector" | acceptor nonce | hello nonce)."""

    TYPE: ClassVar[int] = 12
    proof: bytes


class AuthAccepted(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 13


# --- shared records -----------------------------------------------------------
class FileAttrs(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A file's attributes. Times are nanoseconds since the epoch."""

    inode: int
    mode: int  # S_IFMT kind bits | permission bits
    nlink: int
    uid: int
    gid: int
    rdev: int
    size_bytes: int
    allocated_bytes: int  # bytes in chunks that exist (for st_blocks; holes cost nothing)
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    goal: int  # replication goal of a file; inherited default of a directory


class DirEntry(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    name: bytes
    attrs: FileAttrs
    cookie: int  # pass as ``after_cookie`` to continue after this entry


class ReplicaAddress(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where one replica lives: a chunkserver and the host it runs on."""

    server_id: int
    host: str  # IP address to connect to
    port: int
    host_label: str  # failure domain: replicas of one chunk never share it


class ChunkLocation(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Chunk ``index`` of a file, and its current replicas (chain order)."""

    index: int
    chunk_id: int
    version: int
    replicas: list[ReplicaAddress]


class WriteToken(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The master's permission to write one chunk under one lease epoch, until a time.

    ``mac`` is HMAC-SHA256 over the other fields with a key derived from the
    cluster key (``protocol.write_token``); every chunkserver of the chain
    checks it, the chunk, the expiry and the epoch before writing.
    """

    chunk_id: int
    epoch: int  # the write lease's epoch; a chunkserver refuses epochs older than it has seen
    session_id: int  # the lease holder, for logs
    issued_ns: int  # master wall clock
    expires_ns: int
    mac: bytes


class ChunkReport(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    chunk_id: int
    version: int


# --- client ↔ master: sessions and namespace ------------------------------------
class AttrsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 100
    attrs: FileAttrs


class ClientToMasterOpenSession(Request, frozen=True, kw_only=True):
    """Start (or, after a reconnect, resume) a client session."""

    TYPE: ClassVar[int] = 101
    REPLY: ClassVar[type[Message]]
    host_label: str  # the client's failure domain, so that its own host gets replica 1
    hostname: str
    mount_point: str
    pid: int
    resume_session_id: int  # 0 for a new session
    open_inodes: list[int] = []  # files this client has open (kept alive if unlinked)


class MasterToClientSession(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 102
    session_id: int
    # A session silent this long loses its write leases; renew well inside it.
    lease_expiry_ms: int = 20_000


ClientToMasterOpenSession.REPLY = MasterToClientSession


class ClientToMasterHold(Request, frozen=True, kw_only=True):
    """This client opened (``held``) or closed its last handle on ``inode``.

    A held file that loses its last name stays readable and writable until
    its last holder closes it, as POSIX promises for open files.
    """

    TYPE: ClassVar[int] = 103
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    inode: int
    held: bool


class ClientToMasterLookup(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 110
    REPLY: ClassVar[type[Message]] = AttrsReply
    parent: int
    name: bytes


class ClientToMasterGetAttr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 111
    REPLY: ClassVar[type[Message]] = AttrsReply
    inode: int


class ClientToMasterSetAttr(Request, frozen=True, kw_only=True):
    """Change the fields that are not None; ``size_bytes`` truncates or extends."""

    TYPE: ClassVar[int] = 112
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    inode: int
    mode: int | None = None  # permission bits only
    uid: int | None = None
    gid: int | None = None
    size_bytes: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


class ClientToMasterCreate(Request, frozen=True, kw_only=True):
    """Create a non-directory, non-symlink node (regular file, fifo, device, socket)."""

    TYPE: ClassVar[int] = 113
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    parent: int
    name: bytes
    mode: int  # kind bits | permission bits
    uid: int
    gid: int
    rdev: int = 0


class ClientToMasterMkdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 114
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    parent: int
    name: bytes
    mode: int  # permission bits
    uid: int
    gid: int


class ClientToMasterSymlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 115
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    parent: int
    name: bytes
    target: bytes
    uid: int
    gid: int


class ClientToMasterLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 116
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    inode: int
    new_parent: int
    new_name: bytes


class ClientToMasterUnlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 117
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    op_id: int
    parent: int
    name: bytes


class ClientToMasterRmdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 118
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    op_id: int
    parent: int
    name: bytes


class ClientToMasterRename(Request, frozen=True, kw_only=True):
    """``flags``: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (``dfs.types``)."""

    TYPE: ClassVar[int] = 119
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    op_id: int
    parent: int
    name: bytes
    new_parent: int
    new_name: bytes
    flags: int = 0


class ReadLinkReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 120
    target: bytes


class ClientToMasterReadLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 121
    REPLY: ClassVar[type[Message]] = ReadLinkReply
    inode: int


class ReadDirReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 122
    entries: list[DirEntry]  # empty: the end of the directory


class ClientToMasterReadDir(Request, frozen=True, kw_only=True):
    """Entries after ``after_cookie`` (0: from the start), at most ``limit``.

    Cookies stay valid while other entries come and go, so a listing that
    runs while the directory changes never repeats or skips a survivor.
    """

    TYPE: ClassVar[int] = 123
    REPLY: ClassVar[type[Message]] = ReadDirReply
    inode: int
    after_cookie: int
    limit: int


class XattrReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 124
    value: bytes


class ClientToMasterGetXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 125
    REPLY: ClassVar[type[Message]] = XattrReply
    inode: int
    name: bytes


class ClientToMasterSetXattr(Request, frozen=True, kw_only=True):
    """``flags``: 0, XATTR_CREATE or XATTR_REPLACE (``dfs.types``)."""

    TYPE: ClassVar[int] = 126
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    op_id: int
    inode: int
    name: bytes
    value: bytes
    flags: int = 0


class XattrNamesReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 127
    names: list[bytes]


class ClientToMasterListXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 128
    REPLY: ClassVar[type[Message]] = XattrNamesReply
    inode: int


class ClientToMasterRemoveXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 129
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    op_id: int
    inode: int
    name: bytes


class CountReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 132
    count: int


class ClientToMasterSetGoal(Request, frozen=True, kw_only=True):
    """Set the replication goal of a file, or of a directory (and below, if recursive)."""

    TYPE: ClassVar[int] = 133
    REPLY: ClassVar[type[Message]] = CountReply
    session_id: int
    op_id: int
    inode: int
    goal: int
    recursive: bool = False


class StatFsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 130
    total_bytes: int
    free_bytes: int
    inodes_used: int


class ClientToMasterStatFs(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 131
    REPLY: ClassVar[type[Message]] = StatFsReply


# --- client ↔ master: chunks ---------------------------------------------------------
class ChunkLocationReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 140
    location: ChunkLocation


class WriteLocationReply(Message, frozen=True, kw_only=True):
    """A write chain (head first) and the token every member of it checks."""

    TYPE: ClassVar[int] = 146
    location: ChunkLocation
    token: WriteToken


class ClientToMasterChunkForWrite(Request, frozen=True, kw_only=True):
    """Where to write chunk ``index`` of ``inode``: allocates it if needed.

    Needs the file's write lease: ``lease_epoch`` is the epoch this client
    holds (the reply is LeaseLost if the lease moved on since), or 0 to take
    the lease now if it is free or handed over to this client's host.
    """

    TYPE: ClassVar[int] = 141
    REPLY: ClassVar[type[Message]] = WriteLocationReply
    session_id: int
    op_id: int
    inode: int
    index: int
    lease_epoch: int = 0


class ChunkLocationsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 142
    locations: list[ChunkLocation]  # chunks never written (holes) are absent


class ClientToMasterChunkLocations(Request, frozen=True, kw_only=True):
    """Current replicas of chunks ``first_index`` .. ``first_index + count - 1``."""

    TYPE: ClassVar[int] = 143
    REPLY: ClassVar[type[Message]] = ChunkLocationsReply
    inode: int
    first_index: int
    count: int
    session_id: int = 0  # so that replicas on the reader's own host come first


class ClientToMasterReportBadChain(Request, frozen=True, kw_only=True):
    """A write to this chunk failed at ``failed_server_ids``: drop them, bump the version.

    The reply is the new chain. If the master already moved on (the version
    is older than the current one), it just answers the current chain.
    """

    TYPE: ClassVar[int] = 144
    REPLY: ClassVar[type[Message]] = WriteLocationReply
    session_id: int
    op_id: int
    inode: int
    index: int
    chunk_id: int
    version: int
    failed_server_ids: list[int]
    lease_epoch: int = 0  # as in ClientToMasterChunkForWrite; only the holder may change chains


class ClientToMasterWriteEnd(Request, frozen=True, kw_only=True):
    """Writes up to ``size_bytes`` are acknowledged: grow the file to it and set mtime."""

    TYPE: ClassVar[int] = 145
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: int
    op_id: int
    inode: int
    size_bytes: int
    mtime_ns: int


# --- write leases: one writer per file, cluster-wide ------------------------------------
class LeaseReply(Message, frozen=True, kw_only=True):
    """The lease's epoch, now held by the asking session.

    0: not taken, but a handover to this client's host allows its first
    write to take it (ClientToMasterChunkForWrite with ``lease_epoch`` 0).
    """

    TYPE: ClassVar[int] = 160
    epoch: int


class ClientToMasterAcquireLease(Request, frozen=True, kw_only=True):
    """Opening ``inode`` for writing: take its write lease, or fail with LeaseHeld (EBUSY)."""

    TYPE: ClassVar[int] = 161
    REPLY: ClassVar[type[Message]] = LeaseReply
    session_id: int
    inode: int


class ClientToMasterReleaseLease(Request, frozen=True, kw_only=True):
    """The last write handle closed: give the lease up if still held at ``epoch``."""

    TYPE: ClassVar[int] = 162
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int
    inode: int
    epoch: int


class RenewReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 163
    lost_inodes: list[int]  # leases listed in the request that this session no longer holds


class ClientToMasterRenewSession(Request, frozen=True, kw_only=True):
    """The session is alive: keeps its leases; asks which of ``leases`` it lost."""

    TYPE: ClassVar[int] = 164
    REPLY: ClassVar[type[Message]] = RenewReply
    session_id: int
    leases: list[tuple[int, int]]  # (inode, epoch) this client believes it holds


class ClientToMasterCloseSession(Request, frozen=True, kw_only=True):
    """A clean unmount: release the session's leases and open files now."""

    TYPE: ClassVar[int] = 165
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: int


class LeaseInfo(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Who may write a file (``vmstore lease``). Empty holder fields: nobody."""

    inode: int
    epoch: int
    holder_session: int
    holder_host: str  # host label
    holder_hostname: str
    holder_address: str
    handover_host: str  # the host allowed to take the lease with its first write, or ""
    silent_ms: int  # how long the holder has not been heard from


class LeaseInfoReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 166
    lease: LeaseInfo


class ClientToMasterLeaseInfo(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 167
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: int


class ClientToMasterLeaseHandover(Request, frozen=True, kw_only=True):
    """Allow host ``to_host`` (label or hostname) to take the lease with its first write.

    From that write on, the old holder is fenced. Used by the migration
    coordinator; an empty ``to_host`` cancels a handover not yet taken.
    """

    TYPE: ClassVar[int] = 168
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: int
    to_host: str


class ClientToMasterLeaseBreak(Request, frozen=True, kw_only=True):
    """Take the lease from its holder now and fence it (its host is known to be dead)."""

    TYPE: ClassVar[int] = 169
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: int


# --- status (operators) --------------------------------------------------------------
class ChunkserverStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    id: int
    address: str
    host: str
    state: str  # "up" | "down"
    pid: int
    bytes_total: int
    bytes_used: int
    chunk_count: int  # replica files it reported (heartbeat)
    draining: bool = False
    replicas: int = 0  # replicas the master counts on it (current or awaiting deletion)


class HealingStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    under_goal: int  # chunks waiting for a copy (as of the last pass)
    copying: int  # copies running now
    chunks_copied: int  # since the master started
    replicas_removed: int
    copied_bytes_per_s: float  # over the last minute


class ChunkHealth(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    total: int
    ok: int
    undergoal: int
    endangered: int
    lost: int


class ClientStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    session_id: int
    hostname: str
    host_label: str
    mount_point: str
    pid: int
    address: str


class StatusReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 150
    master_address: str
    chunkservers: list[ChunkserverStatus]
    chunks: ChunkHealth
    clients: list[ClientStatus]
    inodes: int
    healing: HealingStatus | None = None
    write_leases: int = 0  # files with a write lease held


class ClientToMasterDrain(Request, frozen=True, kw_only=True):
    """Start (``draining``) or stop moving every replica off a chunkserver."""

    TYPE: ClassVar[int] = 152
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: int
    draining: bool


class FsckProblem(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    path: str  # "" when the file has no name any more (open but unlinked)
    inode: int
    chunk_index: int
    chunk_id: int
    state: str  # "lost" | "endangered" | "undergoal"
    live_replicas: int
    goal: int


class FsckReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 153
    chunks_checked: int
    problems: list[FsckProblem]
    namespace_errors: list[str]  # broken invariants (nlink counts, dangling entries)


class ClientToMasterFsck(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 154
    REPLY: ClassVar[type[Message]] = FsckReply


class ClientToMasterStatus(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 151
    REPLY: ClassVar[type[Message]] = StatusReply


# --- chunkserver ↔ master --------------------------------------------------------------
class MasterToChunkserverRegistered(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 200
    server_id: int
    stale_chunks: list[ChunkReport]  # delete these: the master knows a newer version


class ChunkserverToMasterRegister(Request, frozen=True, kw_only=True):
    """Join the cluster (again) and report every replica held."""

    TYPE: ClassVar[int] = 201
    REPLY: ClassVar[type[Message]] = MasterToChunkserverRegistered
    server_uuid: str  # stable identity, kept in the data directory
    host: str  # IP address clients connect to
    port: int
    host_label: str
    pid: int
    bytes_total: int
    bytes_used: int
    chunks: list[ChunkReport]


class ChunkserverToMasterHeartbeat(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 202
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: int
    bytes_total: int
    bytes_used: int
    chunk_count: int


class MasterToChunkserverCreateChunk(Request, frozen=True, kw_only=True):
    """Create an empty replica (all holes) at ``version``."""

    TYPE: ClassVar[int] = 210
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    version: int


class MasterToChunkserverSetVersion(Request, frozen=True, kw_only=True):
    """The replica at ``old_version`` is current again as ``new_version``."""

    TYPE: ClassVar[int] = 211
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    old_version: int
    new_version: int


class MasterToChunkserverDeleteChunk(Request, frozen=True, kw_only=True):
    """Delete the replica if its version is at most ``version`` (0: any version)."""

    TYPE: ClassVar[int] = 212
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    version: int


class MasterToChunkserverTruncateChunk(Request, frozen=True, kw_only=True):
    """Zero the replica from ``length_bytes`` to its end, then set ``new_version``."""

    TYPE: ClassVar[int] = 213
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    old_version: int
    new_version: int
    length_bytes: int


class MasterToChunkserverReplicate(Request, frozen=True, kw_only=True):
    """Make a replica here by copying the chunk from ``sources`` (any of them).

    The copy is built at ``version - 1`` (stale, never served or adopted)
    and becomes ``version`` only when complete and durable.
    """

    TYPE: ClassVar[int] = 214
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    version: int
    sources: list[ReplicaAddress]


class MasterToChunkserverFence(Request, frozen=True, kw_only=True):
    """Refuse writes to these chunks with a lease epoch older than ``epoch``.

    Answered only once every write already running on them has finished, so
    that after the reply no write of an older epoch can land here.
    """

    TYPE: ClassVar[int] = 215
    REPLY: ClassVar[type[Message]] = EmptyReply
    epoch: int
    chunk_ids: list[int]


class ChunkserverToMasterReportDamaged(Request, frozen=True, kw_only=True):
    """A replica here failed its checksums (on a read or a scrub): drop and rebuild it."""

    TYPE: ClassVar[int] = 203
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: int
    chunk_id: int
    version: int
    reason: str


# --- data: client or chain member → chunkserver -------------------------------------------
class ReadChunkReply(Message, frozen=True, kw_only=True):
    """The payload holds the blocks of the range not listed in ``zero_ranges``."""

    TYPE: ClassVar[int] = 300
    zero_ranges: list[tuple[int, int]]  # (offset, length) within the chunk, all zero


class ToChunkserverReadChunk(Request, frozen=True, kw_only=True):
    """Read ``length_bytes`` at ``offset_bytes`` of a replica; checksums are verified."""

    TYPE: ClassVar[int] = 301
    REPLY: ClassVar[type[Message]] = ReadChunkReply
    chunk_id: int
    version: int
    offset_bytes: int
    length_bytes: int


class ToChunkserverWriteChunk(Request, frozen=True, kw_only=True):
    """Write ``length_bytes`` at ``offset_bytes``; forward to ``chain_rest`` first.

    The payload holds the bytes of the range outside ``zero_ranges``; the
    zero ranges are written as holes. The reply comes only when this replica
    and every one down the chain has the write.
    """

    TYPE: ClassVar[int] = 302
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    version: int
    offset_bytes: int
    length_bytes: int
    zero_ranges: list[tuple[int, int]]
    chain_rest: list[ReplicaAddress]
    token: WriteToken | None = None  # every write needs one; None is refused


class ToChunkserverFlushChunk(Request, frozen=True, kw_only=True):
    """Make every write acknowledged so far durable, here and down ``chain_rest``."""

    TYPE: ClassVar[int] = 303
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: int
    version: int
    chain_rest: list[ReplicaAddress]


ALL_MESSAGES: tuple[type[Message], ...] = tuple(
    cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, Message) and cls.TYPE != 0
)
MESSAGE_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in ALL_MESSAGES}
assert len(MESSAGE_BY_TYPE) == len(ALL_MESSAGES), "two messages share a TYPE"
