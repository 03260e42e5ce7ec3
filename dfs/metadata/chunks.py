"""Chunk ids, versions, per-file chunk lists, replica sets, registered servers.

Synchronous SQL over ``MetadataStore``; the master calls these inside its
group-commit transactions (mutations) or on its reader connection (queries).
"""

from __future__ import annotations

from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import ChunkId, ChunkVersion, InodeId, ServerId

ChunkRow = tuple[int, ChunkId, ChunkVersion]  # (index, chunk id, version)


class ChunkTable:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # --- queries ----------------------------------------------------------------
    def chunk_at(self, inode: InodeId, index: int) -> tuple[ChunkId, ChunkVersion] | None:
        row = self.store.one(
            "SELECT c.id, c.version FROM file_chunks f JOIN chunks c ON c.id = f.chunk_id"
            " WHERE f.inode_id = ? AND f.chunk_index = ?",
            (inode, index),
        )
        return None if row is None else (ChunkId(row[0]), ChunkVersion(row[1]))

    def chunks_in_range(self, inode: InodeId, first_index: int, count: int) -> list[ChunkRow]:
        rows = self.store.all(
            "SELECT f.chunk_index, c.id, c.version FROM file_chunks f"
            " JOIN chunks c ON c.id = f.chunk_id"
            " WHERE f.inode_id = ? AND f.chunk_index >= ? AND f.chunk_index < ?"
            " ORDER BY f.chunk_index",
            (inode, first_index, first_index + count),
        )
        return [(row[0], ChunkId(row[1]), ChunkVersion(row[2])) for row in rows]

    def version(self, chunk_id: ChunkId) -> ChunkVersion | None:
        row = self.store.one("SELECT version FROM chunks WHERE id = ?", (chunk_id,))
        return None if row is None else ChunkVersion(row[0])

    def replicas(self, chunk_id: ChunkId) -> list[ServerId]:
        rows = self.store.all(
            "SELECT server_id FROM replicas WHERE chunk_id = ? ORDER BY server_id", (chunk_id,)
        )
        return [ServerId(row[0]) for row in rows]

    def replica_counts(self) -> dict[ServerId, int]:
        """How many current replicas each chunkserver holds, as the master counts them."""
        rows = self.store.all("SELECT server_id, COUNT(*) FROM replicas GROUP BY server_id")
        return {ServerId(row[0]): int(row[1]) for row in rows}

    def chunks_on_server(self, server_id: ServerId) -> set[ChunkId]:
        rows = self.store.all("SELECT chunk_id FROM replicas WHERE server_id = ?", (server_id,))
        return {ChunkId(row[0]) for row in rows}

    def pending_deletions(self, limit: int) -> list[tuple[ChunkId, ChunkVersion]]:
        rows = self.store.all(
            "SELECT chunk_id, version FROM chunk_deletions ORDER BY chunk_id LIMIT ?", (limit,)
        )
        return [(ChunkId(c), ChunkVersion(v)) for c, v in rows]

    def is_deleted(self, chunk_id: ChunkId) -> bool:
        return self.store.one("SELECT 1 FROM chunk_deletions WHERE chunk_id = ?",
                              (chunk_id,)) is not None

    def health_rows(self) -> list[tuple[ChunkId, int, list[ServerId]]]:
        """Every live chunk with its file's goal and its replica holders."""
        goals = self.store.all(
            "SELECT f.chunk_id, i.goal FROM file_chunks f JOIN inodes i ON i.id = f.inode_id"
        )
        holders: dict[int, list[ServerId]] = {}
        for chunk_id, server_id in self.store.all("SELECT chunk_id, server_id FROM replicas"):
            holders.setdefault(chunk_id, []).append(ServerId(server_id))
        return [(ChunkId(c), goal, holders.get(c, [])) for c, goal in goals]

    def goal_of(self, chunk_id: ChunkId) -> int | None:
        """The goal of the file the chunk is part of; None if it is no file's."""
        row = self.store.one(
            "SELECT i.goal FROM file_chunks f JOIN inodes i ON i.id = f.inode_id"
            " WHERE f.chunk_id = ?", (chunk_id,)
        )
        return None if row is None else int(row[0])

    def file_of_chunk(self, chunk_id: ChunkId) -> tuple[InodeId, int] | None:
        row = self.store.one(
            "SELECT inode_id, chunk_index FROM file_chunks WHERE chunk_id = ?", (chunk_id,)
        )
        return None if row is None else (InodeId(row[0]), row[1])

    # --- mutations --------------------------------------------------------------
    def reserve_chunk_id(self) -> ChunkId:
        """A new chunk id at version 1, owned by no file yet.

        It is listed for deletion until ``attach`` gives it to a file, so a
        crash between the two leaves nothing behind but a delete to send.
        """
        cursor = self.store.execute("INSERT INTO chunks(version) VALUES (1)")
        chunk_id = ChunkId(cursor.lastrowid or 0)
        assert chunk_id > 0
        self.store.execute(
            "INSERT INTO chunk_deletions(chunk_id, version) VALUES (?, 1)", (chunk_id,)
        )
        return chunk_id

    def attach(
        self, inode: InodeId, index: int, chunk_id: ChunkId, servers: list[ServerId]
    ) -> None:
        self.store.execute("DELETE FROM chunk_deletions WHERE chunk_id = ?", (chunk_id,))
        self.store.execute(
            "INSERT INTO file_chunks(inode_id, chunk_index, chunk_id) VALUES (?, ?, ?)",
            (inode, index, chunk_id),
        )
        self.set_replicas(chunk_id, servers)

    def set_replicas(self, chunk_id: ChunkId, servers: list[ServerId]) -> None:
        self.store.execute("DELETE FROM replicas WHERE chunk_id = ?", (chunk_id,))
        self.store.connection.executemany(
            "INSERT INTO replicas(chunk_id, server_id) VALUES (?, ?)",
            [(chunk_id, server) for server in servers],
        )

    def set_version(self, chunk_id: ChunkId, version: ChunkVersion) -> None:
        self.store.execute("UPDATE chunks SET version = ? WHERE id = ?", (version, chunk_id))

    def add_replica(self, chunk_id: ChunkId, server_id: ServerId) -> None:
        self.store.execute(
            "INSERT OR IGNORE INTO replicas(chunk_id, server_id) VALUES (?, ?)",
            (chunk_id, server_id),
        )

    def remove_replica(self, chunk_id: ChunkId, server_id: ServerId) -> None:
        self.store.execute(
            "DELETE FROM replicas WHERE chunk_id = ? AND server_id = ?", (chunk_id, server_id)
        )

    def finish_deletion(self, chunk_id: ChunkId) -> None:
        """Every holder confirmed the delete: the chunk is gone for good."""
        if not self.is_deleted(chunk_id):
            return  # attached to a file meanwhile: not ours to delete
        self.store.execute("DELETE FROM replicas WHERE chunk_id = ?", (chunk_id,))
        self.store.execute("DELETE FROM chunk_deletions WHERE chunk_id = ?", (chunk_id,))
        self.store.execute("DELETE FROM chunks WHERE id = ?", (chunk_id,))

    # --- servers ------------------------------------------------------------------
    def register_server(self, uuid: str, host: str, port: int, host_label: str) -> ServerId:
        row = self.store.one("SELECT id FROM servers WHERE uuid = ?", (uuid,))
        if row is None:
            cursor = self.store.execute(
                "INSERT INTO servers(uuid, host, port, host_label) VALUES (?, ?, ?, ?)",
                (uuid, host, port, host_label),
            )
            return ServerId(cursor.lastrowid or 0)
        self.store.execute(
            "UPDATE servers SET host = ?, port = ?, host_label = ? WHERE id = ?",
            (host, port, host_label, row[0]),
        )
        return ServerId(row[0])

    def servers(self) -> list[tuple[ServerId, str, str, int, str, bool]]:
        rows = self.store.all(
            "SELECT id, uuid, host, port, host_label, draining FROM servers ORDER BY id")
        return [(ServerId(r[0]), r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def set_draining(self, server_id: ServerId, draining: bool) -> bool:
        cursor = self.store.execute("UPDATE servers SET draining = ? WHERE id = ?",
                                    (int(draining), server_id))
        return cursor.rowcount == 1

    def is_draining(self, server_id: ServerId) -> bool:
        row = self.store.one("SELECT draining FROM servers WHERE id = ?", (server_id,))
        return bool(row and row[0])
