"""Operators ↔ master: cluster status, draining a chunkserver, fsck.

Read-only views (apart from drain) for ``vmstore status``, ``drain`` and
``fsck``; the replies are snapshots, stale as soon as they are sent.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from vmstore.dfs.protocol.messages.base import U63, EmptyReply, Int64, Message, Request


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
    disk_failing: str = ""  # why its disk is failing (hung, I/O errors); "": healthy
    suspect: bool = False  # a client found it silent since its last heartbeat
    bytes_free: U63 = 0  # what may still be written there
    bytes_reserved: U63 = 0  # of that, what its replicas may still take (their full size)


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


class DamagedChunk(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A replica with bad blocks kept because no healthy current copy of its chunk is up:
    reads of its good blocks succeed, reads of its bad ones fail (EIO)."""

    chunk_id: U63
    server_id: U63
    bad_blocks: list[tuple[U63, U63]]  # [first, end) 4 KiB block ranges; empty: not known


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


class RefusedVersion(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A chunkserver that never held a chunk claimed it at a version above the master's
    record (dfs.master.refused_versions): not adopted, and quarantined there."""

    chunk_id: U63
    server_id: U63
    claimed_version: U63
    master_version: U63
    refused_at_ns: Int64  # wall clock of the last such claim


class BackupStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The master's scheduled metadata backups ([master] backup_dir, dfs.master.backups)."""

    directory: str
    interval_s: float
    keep: U63
    count: U63  # backups in the directory now
    newest: str  # its file name; "" when there is none
    newest_age_s: float  # by its mtime; -1 when there is none
    error: str  # why the last backup failed; "" when it did not


class StandbyStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A standby master of an HA group, as it last reported itself in etcd
    (``dfs.master.ha_status``: at most every STANDBY_REPORT_INTERVAL_S)."""

    address: str  # HOST:PORT it will serve on once elected (its --advertise)
    position: U63  # the last journal entry applied to its copy of the metadata
    lag_entries: U63  # the leader's position minus that (its report may be a second old)


class EtcdMemberStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One etcd endpoint as the leader sees it (/health and /v3/maintenance/status)."""

    endpoint: str  # the client URL the masters use
    up: bool  # answered /health with health "true" (it has a quorum and serves)
    leader: bool  # etcd's own raft leader
    db_size_bytes: U63  # its backend database file (0 when it did not answer)
    raft_term: U63
    version: str  # etcd's version; "" when it did not answer
    error: str  # why it is not up; "" when it is


class HaStatus(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The metadata HA group (issue 15), from its leader: None on an embedded master."""

    leader_address: str  # this leader's --advertise address
    epoch: U63  # the create revision of the leader key in etcd
    journal_position: U63  # the last journal entry this leader appended
    standbys: list[StandbyStatus]  # those reporting now (a dead one's key expires)
    etcd: list[EtcdMemberStatus]  # every configured endpoint, in --etcd order
    checked_age_s: float  # how old the standby and etcd figures are (probed each second)


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
    damaged: list[DamagedChunk] = []  # last copies with bad blocks, by chunk id
    backups: BackupStatus | None = None  # None: no scheduled backups configured
    ha: HaStatus | None = None  # None: an embedded master (no etcd)
    refused_versions: list[RefusedVersion] = []  # newer versions refused, newest last


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
    state: str  # "lost" | "damaged" (no healthy live replica) | "endangered" | "undergoal"
    live_replicas: U63
    goal: U63
    bad_blocks: list[tuple[U63, U63]] = []  # "damaged": [first, end) 4 KiB block ranges


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
