"""Who is in the cluster right now: chunkservers and client sessions (memory only).

The persistent identity of a chunkserver (its ServerId) lives in SQLite; its
liveness, space and connection live here and are rebuilt from registrations
after a master restart. Until STARTUP_GRACE_S has passed since the master
started, a known chunkserver that has not registered yet is *pending*, not
down, so that a restart does not make the master drop every replica.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from vmstore.dfs.constants import CHUNKSERVER_DOWN_AFTER_S, REFUSED_CHUNKSERVERS_KEPT_MAX
from vmstore.dfs.errors import ReplicaUnavailable
from vmstore.dfs.master.stall_watch import StallWatch
from vmstore.dfs.protocol.messages import (
    ChunkserverStatus,
    ClientStatus,
    RefusedChunkserver,
    ReplicaAddress,
)
from vmstore.dfs.protocol.rpc import Connection
from vmstore.dfs.types import ServerId, SessionId

STARTUP_GRACE_S = CHUNKSERVER_DOWN_AFTER_S * 2


@dataclass
class ChunkserverEntry:
    server_id: ServerId
    host: str
    port: int
    host_label: str
    connection: Connection | None = None
    pid: int = 0
    bytes_total: int = 0
    bytes_used: int = 0
    # What may still be written there, and what of it its replicas may still take
    # (dfs.chunkserver.space_ledger); free None: a chunkserver before reservations.
    bytes_free_reported: int | None = None
    bytes_reserved: int = 0
    chunk_count: int = 0
    last_heartbeat_s: float = 0.0
    draining: bool = False  # its replicas are being copied away; new chunks avoid it
    # Why its disk is failing, as it said (ChunkserverToMasterDiskFailing); "": healthy.
    # Until it registers anew: its replicas are copied away, nothing new goes there.
    disk_failing: str = ""
    # A client found it silent (a chain member dropped for silence) since its last
    # heartbeat: new chains, copies and reads go elsewhere until it heartbeats again,
    # long before it would be marked down (CHUNKSERVER_DOWN_AFTER_S).
    suspect: bool = False

    @property
    def up(self) -> bool:
        return self.connection is not None and not self.connection.closed.is_set()

    @property
    def leaving(self) -> bool:
        """Its replicas are being copied away: drained, or its disk is failing."""
        return self.draining or bool(self.disk_failing)

    @property
    def shunned(self) -> bool:
        """Up perhaps, but chains and reads go to the others while there are any."""
        return self.suspect or bool(self.disk_failing)

    @property
    def takes_new(self) -> bool:
        """Up, and may be given a new replica (a new chunk's, or a copy)."""
        return self.up and not self.leaving and not self.suspect

    @property
    def address(self) -> ReplicaAddress:
        return ReplicaAddress(
            server_id=self.server_id, host=self.host, port=self.port, host_label=self.host_label
        )

    @property
    def bytes_free(self) -> int:
        """Room for new replicas: free less what the replicas there may still take."""
        if self.bytes_free_reported is None:
            return max(0, self.bytes_total - self.bytes_used)
        return max(0, self.bytes_free_reported - self.bytes_reserved)

    def report_space(self, total: int, used: int, free: int | None, reserved: int) -> None:
        """A registration's or heartbeat's figures replace what the master assumed."""
        self.bytes_total, self.bytes_used = total, used
        self.bytes_free_reported, self.bytes_reserved = free, reserved

    def placed(self, replica_bytes: int) -> None:
        """A replica was created there: count its reservation until the next heartbeat
        reports it, so that chunks allocated meanwhile do not all land on one disk."""
        self.bytes_reserved += replica_bytes


@dataclass
class SessionEntry:
    status: ClientStatus
    connections: set[Connection] = field(default_factory=set)
    last_seen_s: float = field(default_factory=trio.current_time)  # for lease expiry


class Registry:
    def __init__(self, startup_grace_s: float = STARTUP_GRACE_S) -> None:
        self.started_s = trio.current_time()
        # Silences of chunkservers and sessions count only time this master ran.
        self.stalls = StallWatch()
        self.startup_grace_s = startup_grace_s
        self.chunkservers: dict[ServerId, ChunkserverEntry] = {}
        self.sessions: dict[SessionId, SessionEntry] = {}
        # Which sessions have a file open. Memory only: clients re-declare
        # their open files when they reconnect (ClientToMasterOpenSession).
        self.holds: dict[int, set[SessionId]] = {}
        # Registrations refused for a cluster mismatch, by server uuid, oldest first:
        # shown by `vmstore status` until that chunkserver registers.
        self.refused: dict[str, RefusedChunkserver] = {}

    def note_refused(self, refused: RefusedChunkserver) -> None:
        self.refused.pop(refused.server_uuid, None)  # re-inserted: newest last
        self.refused[refused.server_uuid] = refused
        while len(self.refused) > REFUSED_CHUNKSERVERS_KEPT_MAX:
            del self.refused[next(iter(self.refused))]

    def is_open(self, inode: int) -> bool:
        return bool(self.holds.get(inode))

    def hold(self, inode: int, session_id: SessionId) -> None:
        self.holds.setdefault(inode, set()).add(session_id)

    def release(self, inode: int, session_id: SessionId) -> bool:
        """Drop a hold; True when nobody holds the file any more."""
        holders = self.holds.get(inode)
        if holders is None:
            return False
        holders.discard(session_id)
        if holders:
            return False
        del self.holds[inode]
        return True

    def release_all(self, session_id: SessionId) -> list[int]:
        """Drop every hold of a session; the files nobody holds any more."""
        unheld = []
        for inode in [i for i, holders in self.holds.items() if session_id in holders]:
            if self.release(inode, session_id):
                unheld.append(inode)
        return unheld

    def known(self, server_id: ServerId, host: str, port: int, host_label: str) -> None:
        """A server from the database, before it registers in this master's life."""
        self.chunkservers.setdefault(server_id, ChunkserverEntry(server_id, host, port, host_label))

    def up_servers(self) -> list[ChunkserverEntry]:
        return [entry for entry in self.chunkservers.values() if entry.up]

    def in_startup_grace(self) -> bool:
        return trio.current_time() - self.started_s < self.startup_grace_s

    def split_live(self, servers: list[ServerId]) -> tuple[list[ServerId], list[ServerId]]:
        """(up, down) among ``servers``; raises while one may still register.

        Raising ReplicaUnavailable makes clients retry, which is what we want
        right after a master restart: no version bump may drop a replica
        whose server simply has not reconnected yet.
        """
        up: list[ServerId] = []
        down: list[ServerId] = []
        for server_id in servers:
            entry = self.chunkservers.get(server_id)
            if entry is not None and entry.up:
                up.append(server_id)
            elif self.in_startup_grace():
                raise ReplicaUnavailable(f"waiting for chunkserver {server_id} to register")
            else:
                down.append(server_id)
        return up, down

    def expire_silent(self) -> list[ChunkserverEntry]:
        """Disconnect chunkservers whose heartbeats stopped; returns them."""
        expired = []
        for entry in self.chunkservers.values():
            silent_s = self.stalls.silent_s(entry.last_heartbeat_s)
            if entry.up and silent_s > CHUNKSERVER_DOWN_AFTER_S:
                assert entry.connection is not None
                entry.connection.close()
                expired.append(entry)
        return expired

    def chunkserver_statuses(self, replicas: dict[ServerId, int] | None = None
                             ) -> list[ChunkserverStatus]:
        return [
            ChunkserverStatus(
                id=entry.server_id,
                address=f"{entry.host}:{entry.port}",
                host=entry.host_label,
                state="up" if entry.up else "down",
                pid=entry.pid,
                bytes_total=entry.bytes_total,
                bytes_used=entry.bytes_used,
                bytes_free=(entry.bytes_free_reported if entry.bytes_free_reported is not None
                            else entry.bytes_free),
                bytes_reserved=entry.bytes_reserved,
                chunk_count=entry.chunk_count,
                draining=entry.draining,
                disk_failing=entry.disk_failing,
                suspect=entry.suspect,
                replicas=(replicas or {}).get(entry.server_id, 0),
            )
            for entry in sorted(self.chunkservers.values(), key=lambda e: e.server_id)
        ]
