"""Every message on the wire, in one package (as MooseFS's MFSCommunication.h).

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

One module per link, in TYPE order; import them from here
(``from vmstore.dfs.protocol import messages as m``):

    base                 field types (U63, Int64, Port), Message, Request,
                         EmptyReply (1), ErrorReply (2)
    handshake            authentication, before anything else (10-13)
    records              structs shared by messages: FileAttrs, ReplicaAddress,
                         Capability, ChunkLocation, ... (no TYPE)
    client_namespace     client ↔ master: sessions and the namespace, and what
                         the master tells mounts others changed (100-135)
    client_chunks        client ↔ master: chunk locations, write chains (140-146)
    status               operators ↔ master: status, drain, fsck (150-154)
    client_leases        client ↔ master: write leases, session renewal (160-169)
    chunkserver_master   chunkserver ↔ master (200-215)
    data_path            client or chain member → chunkserver, and
                         short-circuit reads on the chunkserver's own host (300-311)

``ALL_MESSAGES`` and ``MESSAGE_BY_TYPE`` (what the codec decodes) are built
from those modules, so a message defined in one is on the wire at once; an
assert below checks that each is also exported here and that no two share
a TYPE.
"""

from __future__ import annotations

from types import ModuleType

from vmstore.dfs.protocol.messages import (
    base,
    chunkserver_master,
    client_chunks,
    client_leases,
    client_namespace,
    data_path,
    handshake,
    records,
    status,
)
from vmstore.dfs.protocol.messages.base import (
    INT64_MAX,
    INT64_MIN,
    U63,
    EmptyReply,
    ErrorReply,
    Int64,
    Message,
    Port,
    Request,
)
from vmstore.dfs.protocol.messages.chunkserver_master import (
    ChunkserverToMasterDiskFailing,
    ChunkserverToMasterHeartbeat,
    ChunkserverToMasterQuarantineCheck,
    ChunkserverToMasterRegister,
    ChunkserverToMasterReportDamaged,
    MasterToChunkserverCreateChunk,
    MasterToChunkserverDeleteChunk,
    MasterToChunkserverFence,
    MasterToChunkserverPing,
    MasterToChunkserverRegistered,
    MasterToChunkserverReplicate,
    MasterToChunkserverRevertVersion,
    MasterToChunkserverSetVersion,
    MasterToChunkserverTruncateChunk,
    QuarantineCheckReply,
)
from vmstore.dfs.protocol.messages.client_chunks import (
    ChunkLocationReply,
    ChunkLocationsReply,
    ClientToMasterChunkForWrite,
    ClientToMasterChunkLocations,
    ClientToMasterReportBadChain,
    ClientToMasterWriteEnd,
    WriteLocationReply,
)
from vmstore.dfs.protocol.messages.client_leases import (
    ClientToMasterAcquireLease,
    ClientToMasterCloseSession,
    ClientToMasterLeaseBreak,
    ClientToMasterLeaseHandover,
    ClientToMasterLeaseInfo,
    ClientToMasterReleaseLease,
    ClientToMasterRenewSession,
    LeaseInfo,
    LeaseInfoReply,
    LeaseReply,
    RenewReply,
)
from vmstore.dfs.protocol.messages.client_namespace import (
    AttrsReply,
    ClientToMasterCreate,
    ClientToMasterGetAttr,
    ClientToMasterGetXattr,
    ClientToMasterHold,
    ClientToMasterLink,
    ClientToMasterListXattr,
    ClientToMasterLookup,
    ClientToMasterMkdir,
    ClientToMasterOpenSession,
    ClientToMasterReadDir,
    ClientToMasterReadLink,
    ClientToMasterRemoveXattr,
    ClientToMasterRename,
    ClientToMasterRmdir,
    ClientToMasterSetAttr,
    ClientToMasterSetGoal,
    ClientToMasterSetXattr,
    ClientToMasterStatFs,
    ClientToMasterSymlink,
    ClientToMasterSyncMetadata,
    ClientToMasterUnlink,
    CountReply,
    MasterToClientInvalidate,
    MasterToClientSession,
    ReadDirReply,
    ReadLinkReply,
    StatFsReply,
    XattrNamesReply,
    XattrReply,
)
from vmstore.dfs.protocol.messages.data_path import (
    LocalReplicaReply,
    ReadChunkReply,
    ToChunkserverFlushChunk,
    ToChunkserverOpenLocalReplica,
    ToChunkserverReadChunk,
    ToChunkserverWriteChunk,
    WriteExtent,
)
from vmstore.dfs.protocol.messages.handshake import (
    AuthAccepted,
    AuthChallenge,
    AuthHello,
    AuthProof,
)
from vmstore.dfs.protocol.messages.records import (
    CHAIN_MEMBERS_MAX,
    Capability,
    Chain,
    ChunkLocation,
    ChunkOwner,
    ChunkReport,
    DirEntry,
    FileAttrs,
    ReplicaAddress,
)
from vmstore.dfs.protocol.messages.status import (
    ChunkHealth,
    ChunkserverStatus,
    ClientStatus,
    ClientToMasterDrain,
    ClientToMasterFsck,
    ClientToMasterStatus,
    DamagedChunk,
    EtcdMemberStatus,
    FsckProblem,
    FsckReply,
    HaStatus,
    HealingStatus,
    RefusedChunkserver,
    RefusedVersion,
    StandbyStatus,
    StatusReply,
)

__all__ = [
    "ALL_MESSAGES",
    "MESSAGE_BY_TYPE",
    "INT64_MIN",
    "INT64_MAX",
    "U63",
    "Int64",
    "Port",
    "Message",
    "Request",
    "EmptyReply",
    "ErrorReply",
    "AuthHello",
    "AuthChallenge",
    "AuthProof",
    "AuthAccepted",
    "FileAttrs",
    "DirEntry",
    "ReplicaAddress",
    "CHAIN_MEMBERS_MAX",
    "Chain",
    "Capability",
    "ChunkLocation",
    "ChunkReport",
    "ChunkOwner",
    "AttrsReply",
    "ClientToMasterOpenSession",
    "MasterToClientSession",
    "MasterToClientInvalidate",
    "ClientToMasterHold",
    "ClientToMasterLookup",
    "ClientToMasterGetAttr",
    "ClientToMasterSetAttr",
    "ClientToMasterCreate",
    "ClientToMasterMkdir",
    "ClientToMasterSymlink",
    "ClientToMasterSyncMetadata",
    "ClientToMasterLink",
    "ClientToMasterUnlink",
    "ClientToMasterRmdir",
    "ClientToMasterRename",
    "ReadLinkReply",
    "ClientToMasterReadLink",
    "ReadDirReply",
    "ClientToMasterReadDir",
    "XattrReply",
    "ClientToMasterGetXattr",
    "ClientToMasterSetXattr",
    "XattrNamesReply",
    "ClientToMasterListXattr",
    "ClientToMasterRemoveXattr",
    "CountReply",
    "ClientToMasterSetGoal",
    "StatFsReply",
    "ClientToMasterStatFs",
    "ChunkLocationReply",
    "WriteLocationReply",
    "ClientToMasterChunkForWrite",
    "ChunkLocationsReply",
    "ClientToMasterChunkLocations",
    "ClientToMasterReportBadChain",
    "ClientToMasterWriteEnd",
    "LeaseReply",
    "ClientToMasterAcquireLease",
    "ClientToMasterReleaseLease",
    "RenewReply",
    "ClientToMasterRenewSession",
    "ClientToMasterCloseSession",
    "LeaseInfo",
    "LeaseInfoReply",
    "ClientToMasterLeaseInfo",
    "ClientToMasterLeaseHandover",
    "ClientToMasterLeaseBreak",
    "ChunkserverStatus",
    "HealingStatus",
    "ChunkHealth",
    "ClientStatus",
    "RefusedChunkserver",
    "RefusedVersion",
    "DamagedChunk",
    "StandbyStatus",
    "EtcdMemberStatus",
    "HaStatus",
    "StatusReply",
    "ClientToMasterDrain",
    "FsckProblem",
    "FsckReply",
    "ClientToMasterFsck",
    "ClientToMasterStatus",
    "MasterToChunkserverRegistered",
    "ChunkserverToMasterRegister",
    "ChunkserverToMasterDiskFailing",
    "ChunkserverToMasterHeartbeat",
    "MasterToChunkserverCreateChunk",
    "MasterToChunkserverSetVersion",
    "MasterToChunkserverDeleteChunk",
    "MasterToChunkserverTruncateChunk",
    "MasterToChunkserverReplicate",
    "MasterToChunkserverFence",
    "MasterToChunkserverPing",
    "ChunkserverToMasterReportDamaged",
    "ChunkserverToMasterQuarantineCheck",
    "MasterToChunkserverRevertVersion",
    "QuarantineCheckReply",
    "ReadChunkReply",
    "ToChunkserverReadChunk",
    "WriteExtent",
    "ToChunkserverWriteChunk",
    "ToChunkserverFlushChunk",
    "LocalReplicaReply",
    "ToChunkserverOpenLocalReplica",
]

# In the order the messages were first defined (one module, before the split).
_MESSAGE_MODULES: tuple[ModuleType, ...] = (
    base,
    handshake,
    records,
    client_namespace,
    client_chunks,
    client_leases,
    status,
    chunkserver_master,
    data_path,
)
ALL_MESSAGES: tuple[type[Message], ...] = tuple(
    cls
    for module in _MESSAGE_MODULES
    for cls in list(vars(module).values())
    if isinstance(cls, type)
    and issubclass(cls, Message)
    and cls.TYPE != 0
    and cls.__module__ == module.__name__
)
MESSAGE_BY_TYPE: dict[int, type[Message]] = {cls.TYPE: cls for cls in ALL_MESSAGES}
assert len(MESSAGE_BY_TYPE) == len(ALL_MESSAGES), "two messages share a TYPE"
assert all(globals().get(cls.__name__) is cls for cls in ALL_MESSAGES), "a message not exported"
