"""Write leases as rows: who may write each file, at which epoch (table ``leases``).

Synchronous SQL, run inside the master's group-commit changes (mutations)
or on its reader connection (queries). The rules of who gets a lease live
in ``master.lease_manager``; this module only keeps the rows true:
* every grant and every break takes a new epoch from a cluster-wide
  counter, so epochs only grow, even across files and restarts;
* a row exists only while someone holds the lease or a handover waits.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import InodeId, SessionId

_COLUMNS = "inode_id, epoch, holder_session, holder_host, handover_host"


@dataclass(frozen=True)
class LeaseRow:
    inode: InodeId
    epoch: int
    holder_session: SessionId  # 0: nobody holds it
    holder_host: str
    handover_host: str  # '' : no handover waiting


class LeaseTable:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # --- queries ----------------------------------------------------------------
    def get(self, inode: InodeId) -> LeaseRow | None:
        row = self.store.one(f"SELECT {_COLUMNS} FROM leases WHERE inode_id = ?", (inode,))
        return None if row is None else _lease(row)

    def held_by(self, session_id: SessionId) -> list[LeaseRow]:
        rows = self.store.all(f"SELECT {_COLUMNS} FROM leases WHERE holder_session = ?",
                              (session_id,))
        return [_lease(row) for row in rows]

    def holder_sessions(self) -> set[SessionId]:
        rows = self.store.all("SELECT DISTINCT holder_session FROM leases"
                              " WHERE holder_session != 0")
        return {SessionId(row[0]) for row in rows}

    def held_count(self) -> int:
        row = self.store.one("SELECT COUNT(*) FROM leases WHERE holder_session != 0")
        return 0 if row is None else int(row[0])

    # --- changes ------------------------------------------------------------------
    def grant(self, inode: InodeId, session_id: SessionId, host_label: str) -> int:
        """``session_id`` holds the lease from now, at a new epoch; a waiting handover ends."""
        epoch = self._next_epoch()
        self.store.execute(
            f"INSERT OR REPLACE INTO leases({_COLUMNS}) VALUES (?, ?, ?, ?, '')",
            (inode, epoch, session_id, host_label))
        return epoch

    def release(self, inode: InodeId) -> None:
        """Nobody holds the lease; a waiting handover stays."""
        self.store.execute("UPDATE leases SET holder_session = 0, holder_host = ''"
                           " WHERE inode_id = ?", (inode,))
        self._drop_if_unused(inode)

    def revoke(self, inode: InodeId) -> int:
        """Take the lease from its holder at a new epoch (to fence it); returns that epoch."""
        epoch = self._next_epoch()
        self.store.execute("UPDATE leases SET holder_session = 0, holder_host = '', epoch = ?"
                           " WHERE inode_id = ?", (epoch, inode))
        self._drop_if_unused(inode)
        return epoch

    def set_handover(self, inode: InodeId, host: str) -> None:
        current = self.get(inode)
        if current is None:
            self.store.execute(f"INSERT INTO leases({_COLUMNS}) VALUES (?, 0, 0, '', ?)",
                               (inode, host))
        else:
            self.store.execute("UPDATE leases SET handover_host = ? WHERE inode_id = ?",
                               (host, inode))
        self._drop_if_unused(inode)

    def _drop_if_unused(self, inode: InodeId) -> None:
        self.store.execute("DELETE FROM leases WHERE inode_id = ? AND holder_session = 0"
                           " AND handover_host = ''", (inode,))

    def _next_epoch(self) -> int:
        row = self.store.one("SELECT value FROM meta WHERE key = 'last_lease_epoch'")
        epoch = 1 if row is None else int(row[0]) + 1
        self.store.execute("INSERT OR REPLACE INTO meta(key, value)"
                           " VALUES ('last_lease_epoch', ?)", (str(epoch),))
        return epoch


def _lease(row: tuple[object, ...]) -> LeaseRow:
    inode, epoch, holder, holder_host, handover_host = row
    return LeaseRow(InodeId(int(inode)), int(epoch),  # type: ignore[call-overload]
                    SessionId(int(holder)), str(holder_host),  # type: ignore[call-overload]
                    str(handover_host))
