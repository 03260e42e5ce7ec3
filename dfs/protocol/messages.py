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

from typing import Annotated, ClassVar

import msgspec

from vmstore.dfs.constants import MAX_GOAL, WRITE_BATCH_EXTENTS_MAX

# Every integer on the wire is checked by the decoder, so that no handler
# meets a value SQLite cannot store (OverflowError) or a negative id, size,
# offset or count. A request that breaks these is answered InvalidArgument
# naming the field (``codec.decode_body``).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
U63 = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # ids, sizes, offsets, counts, modes
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]  # times (before 1970: < 0)
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


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
    code: U63
    message: str
    server_id: U63 = 0  # the chunkserver at fault, if any (see DfsError.server_id)


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

    inode: U63
    mode: U63  # S_IFMT kind bits | permission bits
    nlink: U63
    uid: U63
    gid: U63
    rdev: U63
    size_bytes: U63
    allocated_bytes: U63  # bytes in chunks that exist (for st_blocks; holes cost nothing)
    atime_ns: Int64
    mtime_ns: Int64
    ctime_ns: Int64
    goal: U63  # replication goal of a file; inherited default of a directory


class DirEntry(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    name: bytes
    attrs: FileAttrs
    cookie: U63  # pass as ``after_cookie`` to continue after this entry


class ReplicaAddress(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where one replica lives: a chunkserver and the host it runs on."""

    server_id: U63
    host: str  # IP address to connect to
    port: Port
    host_label: str  # failure domain: replicas of one chunk never share it


# A write chain holds the replicas of one chunk: at most the largest goal,
# and as many again while surplus copies (a drain, a rebuild) wait for
# removal. The bound keeps a request from making a chunkserver forward (or
# flush) round a long loop of itself.
CHAIN_MEMBERS_MAX = 2 * MAX_GOAL
Chain = Annotated[list[ReplicaAddress], msgspec.Meta(max_length=CHAIN_MEMBERS_MAX)]


class Capability(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The master's permission for one operation on one chunk, until a time.

    ``mac`` is HMAC-SHA256 (truncated to 16 bytes) over the other fields with
    a key derived from the cluster key (``protocol.capability``); a
    chunkserver checks it, the chunk, the operation and the expiry (and for
    writes the lease epoch) before serving.
    """

    chunk_id: U63
    operation: U63  # capability.READ (1) | capability.WRITE (2)
    epoch: U63  # a write lease's epoch (chunkservers refuse older ones); 0 for reads
    session_id: U63  # the client session it was issued to (0: the master itself), for logs
    issued_ns: U63  # master wall clock
    expires_ns: U63
    mac: bytes


class ChunkLocation(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Chunk ``index`` of a file, and its current replicas (chain order).

    ``read_capability`` lets the session it was given to read the chunk from
    any of them; None for admin connections, which only look.
    """

    index: U63
    chunk_id: U63
    version: U63
    replicas: list[ReplicaAddress]
    read_capability: Capability | None = None


class ChunkReport(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    chunk_id: U63
    version: U63


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
    pid: U63
    resume_session_id: U63  # 0 for a new session
    open_inodes: list[U63] = []  # files this client has open (kept alive if unlinked)


class MasterToClientSession(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 102
    session_id: U63
    # A session silent this long loses its write leases; renew well inside it.
    lease_expiry_ms: U63 = 20_000


ClientToMasterOpenSession.REPLY = MasterToClientSession


class ClientToMasterHold(Request, frozen=True, kw_only=True):
    """This client opened (``held``) or closed its last handle on ``inode``.

    A held file that loses its last name stays readable and writable until
    its last holder closes it, as POSIX promises for open files.
    """

    TYPE: ClassVar[int] = 103
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    inode: U63
    held: bool


class ClientToMasterLookup(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 110
    REPLY: ClassVar[type[Message]] = AttrsReply
    parent: U63
    name: bytes


class ClientToMasterGetAttr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 111
    REPLY: ClassVar[type[Message]] = AttrsReply
    inode: U63


class ClientToMasterSetAttr(Request, frozen=True, kw_only=True):
    """Change the fields that are not None; ``size_bytes`` truncates or extends."""

    TYPE: ClassVar[int] = 112
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    mode: U63 | None = None  # permission bits only
    uid: U63 | None = None
    gid: U63 | None = None
    size_bytes: U63 | None = None
    atime_ns: Int64 | None = None
    mtime_ns: Int64 | None = None


class ClientToMasterCreate(Request, frozen=True, kw_only=True):
    """Create a non-directory, non-symlink node (regular file, fifo, device, socket)."""

    TYPE: ClassVar[int] = 113
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    mode: U63  # kind bits | permission bits
    uid: U63
    gid: U63
    rdev: U63 = 0


class ClientToMasterMkdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 114
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    mode: U63  # permission bits
    uid: U63
    gid: U63


class ClientToMasterSymlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 115
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    target: bytes
    uid: U63
    gid: U63


class ClientToMasterLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 116
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    new_parent: U63
    new_name: bytes


class ClientToMasterUnlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 117
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes


class ClientToMasterRmdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 118
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes


class ClientToMasterRename(Request, frozen=True, kw_only=True):
    """``flags``: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (``dfs.types``)."""

    TYPE: ClassVar[int] = 119
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    new_parent: U63
    new_name: bytes
    flags: U63 = 0


class ReadLinkReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 120
    target: bytes


class ClientToMasterReadLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 121
    REPLY: ClassVar[type[Message]] = ReadLinkReply
    inode: U63


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
    inode: U63
    after_cookie: U63
    limit: U63


class XattrReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 124
    value: bytes


class ClientToMasterGetXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 125
    REPLY: ClassVar[type[Message]] = XattrReply
    inode: U63
    name: bytes


class ClientToMasterSetXattr(Request, frozen=True, kw_only=True):
    """``flags``: 0, XATTR_CREATE or XATTR_REPLACE (``dfs.types``)."""

    TYPE: ClassVar[int] = 126
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    inode: U63
    name: bytes
    value: bytes
    flags: U63 = 0


class XattrNamesReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 127
    names: list[bytes]


class ClientToMasterListXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 128
    REPLY: ClassVar[type[Message]] = XattrNamesReply
    inode: U63


class ClientToMasterRemoveXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 129
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    inode: U63
    name: bytes


class CountReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 132
    count: U63


class ClientToMasterSetGoal(Request, frozen=True, kw_only=True):
    """Set the replication goal of a file, or of a directory (and below, if recursive)."""

    TYPE: ClassVar[int] = 133
    REPLY: ClassVar[type[Message]] = CountReply
    session_id: U63
    op_id: U63
    inode: U63
    goal: U63
    recursive: bool = False


class StatFsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 130
    total_bytes: U63
    free_bytes: U63
    inodes_used: U63


class ClientToMasterStatFs(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 131
    REPLY: ClassVar[type[Message]] = StatFsReply


# --- client ↔ master: chunks ---------------------------------------------------------
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
    """Writes up to ``size_bytes`` are acknowledged: grow the file to it and set mtime."""

    TYPE: ClassVar[int] = 145
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    size_bytes: U63
    mtime_ns: Int64


# --- write leases: one writer per file, cluster-wide ------------------------------------
class LeaseReply(Message, frozen=True, kw_only=True):
    """The lease's epoch, now held by the asking session.

    0: not taken, but a handover to this client's host allows its first
    write to take it (ClientToMasterChunkForWrite with ``lease_epoch`` 0).
    """

    TYPE: ClassVar[int] = 160
    epoch: U63


class ClientToMasterAcquireLease(Request, frozen=True, kw_only=True):
    """Opening ``inode`` for writing: take its write lease, or fail with LeaseHeld (EBUSY)."""

    TYPE: ClassVar[int] = 161
    REPLY: ClassVar[type[Message]] = LeaseReply
    session_id: U63
    inode: U63


class ClientToMasterReleaseLease(Request, frozen=True, kw_only=True):
    """The last write handle closed: give the lease up if still held at ``epoch``."""

    TYPE: ClassVar[int] = 162
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    inode: U63
    epoch: U63


class RenewReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 163
    lost_inodes: list[U63]  # leases listed in the request that this session no longer holds


class ClientToMasterRenewSession(Request, frozen=True, kw_only=True):
    """The session is alive: keeps its leases; asks which of ``leases`` it lost."""

    TYPE: ClassVar[int] = 164
    REPLY: ClassVar[type[Message]] = RenewReply
    session_id: U63
    leases: list[tuple[U63, U63]]  # (inode, epoch) this client believes it holds


class ClientToMasterCloseSession(Request, frozen=True, kw_only=True):
    """A clean unmount: release the session's leases and open files now."""

    TYPE: ClassVar[int] = 165
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63


class LeaseInfo(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Who may write a file (``vmstore lease``). Empty holder fields: nobody."""

    inode: U63
    epoch: U63
    holder_session: U63
    holder_host: str  # host label
    holder_hostname: str
    holder_address: str
    handover_host: str  # the host allowed to take the lease with its first write, or ""
    silent_ms: U63  # how long the holder has not been heard from


class LeaseInfoReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 166
    lease: LeaseInfo


class ClientToMasterLeaseInfo(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 167
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: U63


class ClientToMasterLeaseHandover(Request, frozen=True, kw_only=True):
    """Allow host ``to_host`` (label or hostname) to take the lease with its first write.

    From that write on, the old holder is fenced. Used by the migration
    coordinator; an empty ``to_host`` cancels a handover not yet taken.
    """

    TYPE: ClassVar[int] = 168
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: U63
    to_host: str


class ClientToMasterLeaseBreak(Request, frozen=True, kw_only=True):
    """Take the lease from its holder now and fence it (its host is known to be dead)."""

    TYPE: ClassVar[int] = 169
    REPLY: ClassVar[type[Message]] = LeaseInfoReply
    inode: U63


# --- status (operators) --------------------------------------------------------------
class ChunkserverStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    id: U63
    address: str
    host: str
    state: str  # "up" | "down"
    pid: U63
    bytes_total: U63
    bytes_used: U63
    chunk_count: U63  # replica files it reported (heartbeat)
    draining: bool = False
    replicas: U63 = 0  # replicas the master counts on it (current or awaiting deletion)


class HealingStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    under_goal: U63  # chunks waiting for a copy (as of the last pass)
    copying: U63  # copies running now
    chunks_copied: U63  # since the master started
    replicas_removed: U63
    copied_bytes_per_s: float  # over the last minute


class ChunkHealth(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    total: U63
    ok: U63
    undergoal: U63
    endangered: U63
    lost: U63


class ClientStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    session_id: U63
    hostname: str
    host_label: str
    mount_point: str
    pid: U63
    address: str


class RefusedChunkserver(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A chunkserver whose registration this master refused (dfs.protocol.cluster_identity)."""

    server_uuid: str
    address: str  # HOST:PORT it serves data on
    reason: str
    refused_at_ns: Int64  # wall clock of the last refusal


class StatusReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 150
    master_address: str
    chunkservers: list[ChunkserverStatus]
    chunks: ChunkHealth
    clients: list[ClientStatus]
    inodes: U63
    healing: HealingStatus | None = None
    write_leases: U63 = 0  # files with a write lease held
    refused: list[RefusedChunkserver] = []  # recent registrations refused, newest last


class ClientToMasterDrain(Request, frozen=True, kw_only=True):
    """Start (``draining``) or stop moving every replica off a chunkserver."""

    TYPE: ClassVar[int] = 152
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    draining: bool


class FsckProblem(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    path: str  # "" when the file has no name any more (open but unlinked)
    inode: U63
    chunk_index: U63
    chunk_id: U63
    state: str  # "lost" | "endangered" | "undergoal"
    live_replicas: U63
    goal: U63


class FsckReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 153
    chunks_checked: U63
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
    """The chunkserver checks the master's identity (dfs.protocol.cluster_identity)
    before it deletes anything; "" and 0 from a master older than cluster ids."""

    TYPE: ClassVar[int] = 200
    server_id: U63
    stale_chunks: list[ChunkReport]  # delete these: the master knows a newer version
    cluster_id: str = ""  # uuid of the master's cluster
    generation: U63 = 0  # of the master's metadata, moved forward at every master start
    incarnation: str = ""  # uuid of this master start


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


class ChunkserverToMasterHeartbeat(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 202
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    bytes_total: U63
    bytes_used: U63
    chunk_count: U63


class MasterToChunkserverCreateChunk(Request, frozen=True, kw_only=True):
    """Create an empty replica (all holes) at ``version``."""

    TYPE: ClassVar[int] = 210
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63


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


class MasterToChunkserverFence(Request, frozen=True, kw_only=True):
    """Refuse writes to these chunks with a lease epoch older than ``epoch``.

    Answered only once every write already running on them has finished, so
    that after the reply no write of an older epoch can land here.
    """

    TYPE: ClassVar[int] = 215
    REPLY: ClassVar[type[Message]] = EmptyReply
    epoch: U63
    chunk_ids: list[U63]


class ChunkserverToMasterReportDamaged(Request, frozen=True, kw_only=True):
    """A replica here failed its checksums (on a read or a scrub): drop and rebuild it."""

    TYPE: ClassVar[int] = 203
    REPLY: ClassVar[type[Message]] = EmptyReply
    server_id: U63
    chunk_id: U63
    version: U63
    reason: str


# --- data: client or chain member → chunkserver -------------------------------------------
class ReadChunkReply(Message, frozen=True, kw_only=True):
    """The payload holds the blocks of the range not listed in ``zero_ranges``."""

    TYPE: ClassVar[int] = 300
    zero_ranges: list[tuple[U63, U63]]  # (offset, length) within the chunk, all zero


class ToChunkserverReadChunk(Request, frozen=True, kw_only=True):
    """Read ``length_bytes`` at ``offset_bytes`` of a replica; checksums are verified."""

    TYPE: ClassVar[int] = 301
    REPLY: ClassVar[type[Message]] = ReadChunkReply
    chunk_id: U63
    version: U63
    offset_bytes: U63
    length_bytes: U63
    capability: Capability | None = None  # READ of this chunk; None is refused


class WriteExtent(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One range of a batched write: its bytes outside ``zero_ranges`` come from
    the frame's payload, after those of the extents before it."""

    offset_bytes: U63
    length_bytes: U63
    zero_ranges: list[tuple[U63, U63]]


class ToChunkserverWriteChunk(Request, frozen=True, kw_only=True):
    """Write ``extents`` in order (then sync, with ``flush``); forward to ``chain_rest`` first.

    The payload holds, extent after extent, the bytes outside each extent's
    ``zero_ranges``; the zero ranges are written as holes. A later extent
    overwrites an earlier one where they overlap. The reply comes only when
    this replica and every one down the chain has every extent.
    """

    TYPE: ClassVar[int] = 302
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63
    extents: Annotated[list[WriteExtent], msgspec.Meta(min_length=1,
                                                       max_length=WRITE_BATCH_EXTENTS_MAX)]
    chain_rest: Chain
    token: Capability | None = None  # WRITE of this chunk; None is refused
    # Also make the replica durable (as ToChunkserverFlushChunk) before answering:
    # a writer that fsyncs after every write saves the flush's round trip.
    flush: bool = False


class ToChunkserverFlushChunk(Request, frozen=True, kw_only=True):
    """Make every write acknowledged so far durable, here and down ``chain_rest``."""

    TYPE: ClassVar[int] = 303
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63
    chain_rest: Chain
    capability: Capability | None = None  # WRITE of this chunk; None is refused


# --- short-circuit reads: a client → a chunkserver on its own host ------------------
# These travel only on the chunkserver's Unix socket (``protocol.local_socket``), one
# frame per SOCK_SEQPACKET message, never over TCP.
class LocalReplicaReply(Message, frozen=True, kw_only=True):
    """The replica, opened read-only, is the one fd that comes with this message
    (SCM_RIGHTS). The client reads it itself and verifies every block
    (``protocol.replica_format``)."""

    TYPE: ClassVar[int] = 310
    chunk_id: U63
    version: U63  # the replica's version when it was opened


class ToChunkserverOpenLocalReplica(Request, frozen=True, kw_only=True):
    """Hand me an fd of your replica of ``chunk_id``, which must be at ``version``.

    Checked as a read is: the READ capability, then the replica's version
    (StaleChunkVersion otherwise); and the peer must run as root or as the
    chunkserver's user (SO_PEERCRED), since the fd reads the whole file.
    """

    TYPE: ClassVar[int] = 311
    REPLY: ClassVar[type[Message]] = LocalReplicaReply
    chunk_id: U63
    version: U63
    capability: Capability | None = None  # READ of this chunk; None is refused


ALL_MESSAGES: tuple[type[Message], ...] = tuple(
    cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, Message) and cls.TYPE != 0
)
MESSAGE_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in ALL_MESSAGES}
assert len(MESSAGE_BY_TYPE) == len(ALL_MESSAGES), "two messages share a TYPE"
