"""Client sessions and the reply cache that makes retried mutations safe.

A client numbers its mutating requests (``op_id``) per session. The reply
to each is stored in the same transaction as its effect, so a request
retried after a lost reply (the master restarted, a connection broke) gets
the original answer instead of running twice (create twice → EEXIST).
"""

from __future__ import annotations

from vmstore.dfs.constants import REPLY_CACHE_PER_SESSION_MAX
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import SessionId


class SessionTable:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def open(self, hostname: str, host_label: str, mount_point: str, pid: int,
             now_ns: int) -> SessionId:
        cursor = self.store.execute(
            "INSERT INTO sessions(hostname, host_label, mount_point, pid, opened_ns)"
            " VALUES (?, ?, ?, ?, ?)",
            (hostname, host_label, mount_point, pid, now_ns),
        )
        return SessionId(cursor.lastrowid or 0)

    def close(self, session_id: SessionId) -> None:
        """The session ended (unmounted, or expired): it can no longer be resumed."""
        self.store.execute("DELETE FROM reply_cache WHERE session_id = ?", (session_id,))
        self.store.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def all(self) -> list[tuple[SessionId, str, str, str, int]]:
        """(id, hostname, host label, mount point, pid) of every open session."""
        rows = self.store.all("SELECT id, hostname, host_label, mount_point, pid FROM sessions")
        return [(SessionId(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def exists(self, session_id: SessionId) -> bool:
        return self.store.one("SELECT 1 FROM sessions WHERE id = ?", (session_id,)) is not None

    def cached_reply(self, session_id: SessionId, op_id: int) -> bytes | None:
        row = self.store.one(
            "SELECT reply FROM reply_cache WHERE session_id = ? AND op_id = ?",
            (session_id, op_id),
        )
        return None if row is None else bytes(row[0])

    def store_reply(self, session_id: SessionId, op_id: int, reply: bytes) -> None:
        self.store.execute(
            "INSERT OR REPLACE INTO reply_cache(session_id, op_id, reply) VALUES (?, ?, ?)",
            (session_id, op_id, reply),
        )
        # Only the newest replies can still be retried: a client has at most
        # that many requests in flight.
        self.store.execute(
            "DELETE FROM reply_cache WHERE session_id = ? AND op_id <= ?",
            (session_id, op_id - REPLY_CACHE_PER_SESSION_MAX),
        )
