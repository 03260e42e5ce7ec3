"""The master's data model: every table, what each column means, its invariants.

This file is the canonical description of the metadata. Code in
``dfs.metadata`` reads and writes these tables and nothing else persists
master state, except the in-memory view of which chunkservers are up (which
is rebuilt from registrations after a restart).

Invariants (checked by ``vmstore fsck`` and by asserts in the code):

* ``inodes.id`` and ``chunks.id`` come from AUTOINCREMENT: never reused, so a
  FUSE inode number or a chunk id names one object for the cluster's life.
* Inode 1 is the root directory; it is its own parent.
* A directory has exactly one dentry naming it (except the root, which has
  none); its ``nlink`` is 2 + the number of its subdirectories.
* A non-directory's ``nlink`` equals the number of dentries naming it; when
  it reaches 0 the inode row, its xattrs and its file_chunks go, and its
  chunks move to ``chunk_deletions`` (their ``replicas`` rows stay, to say
  where the deletes must go, until the chunkservers confirm them).
* ``file_chunks`` has at most one row per (inode, index); a chunk belongs to
  exactly one file and one index.
* ``replicas`` lists the chunkservers that hold the chunk's *current*
  version (``chunks.version``), or, for a chunk in ``chunk_deletions``, the
  ones still to be told to delete it. A replica with another version is
  stale and is never read.
* ``meta`` 'cluster_id' is made once, with the database, and never changes;
  'generation' only grows (``dfs.metadata.identity`` says when and why).
"""

from __future__ import annotations

import sqlite3
import uuid

from vmstore.dfs.errors import DamagedMetadata

SCHEMA_VERSION = 2
# Versions this code can bring up to SCHEMA_VERSION (``_migrate``). 2: the cluster
# identity (meta 'cluster_id', 'generation').
MIGRATABLE_SCHEMA_VERSIONS = frozenset({"1"})

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,   -- 'schema_version'; 'cluster_id' (a uuid, made with the
                              -- database, never changed); 'generation' (an integer that only
                              -- grows, see dfs.metadata.identity); 'last_lease_epoch'
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS inodes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- st_ino; never reused
    mode        INTEGER NOT NULL,  -- S_IFMT kind bits | permission bits (incl. suid/sgid/sticky)
    nlink       INTEGER NOT NULL,  -- see the invariants above
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    rdev        INTEGER NOT NULL DEFAULT 0,  -- device number for device nodes, else 0
    size_bytes  INTEGER NOT NULL DEFAULT 0,  -- logical size; bytes past it read as zero
    atime_ns    INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    goal        INTEGER NOT NULL,  -- replication goal (file) or default for new children (dir)
    target      BLOB               -- symlink target; NULL for every other kind
);

CREATE TABLE IF NOT EXISTS dentries (
    cookie     INTEGER PRIMARY KEY AUTOINCREMENT,  -- readdir position; stable while others change
    parent_id  INTEGER NOT NULL REFERENCES inodes(id),
    name       BLOB NOT NULL,      -- 1..255 bytes, no '/' and no NUL, never '.' or '..'
    inode_id   INTEGER NOT NULL REFERENCES inodes(id),
    UNIQUE (parent_id, name)
);
CREATE INDEX IF NOT EXISTS dentries_by_inode ON dentries(inode_id);

CREATE TABLE IF NOT EXISTS xattrs (
    inode_id  INTEGER NOT NULL REFERENCES inodes(id),
    name      BLOB NOT NULL,      -- full name with namespace prefix, e.g. b'trusted.libvirt...'
    value     BLOB NOT NULL,
    PRIMARY KEY (inode_id, name)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS chunks (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,  -- cluster-unique chunk id; never reused
    version  INTEGER NOT NULL   -- bumped whenever the set of current replicas changes
);

CREATE TABLE IF NOT EXISTS file_chunks (
    inode_id     INTEGER NOT NULL REFERENCES inodes(id),
    chunk_index  INTEGER NOT NULL,  -- byte offset / CHUNK_SIZE_BYTES; absent rows are holes
    chunk_id     INTEGER NOT NULL UNIQUE REFERENCES chunks(id),
    PRIMARY KEY (inode_id, chunk_index)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS servers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- ServerId; never reused
    uuid        TEXT NOT NULL UNIQUE,  -- identity kept in the chunkserver's data directory
    host        TEXT NOT NULL,         -- last address it registered with
    port        INTEGER NOT NULL,
    host_label  TEXT NOT NULL,         -- failure domain (one physical host)
    draining    INTEGER NOT NULL DEFAULT 0  -- 1: move its replicas away, place nothing new
);

CREATE TABLE IF NOT EXISTS replicas (
    chunk_id   INTEGER NOT NULL REFERENCES chunks(id),
    server_id  INTEGER NOT NULL REFERENCES servers(id),
    PRIMARY KEY (chunk_id, server_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replicas_by_server ON replicas(server_id);

-- Chunks no file uses any more, whose replicas still have to be deleted on
-- the chunkservers. A row goes once every holder has confirmed the delete;
-- a holder that was down meanwhile reports the chunk as unknown on its next
-- registration and is told to delete it then.
CREATE TABLE IF NOT EXISTS chunk_deletions (
    chunk_id  INTEGER PRIMARY KEY,
    version   INTEGER NOT NULL
);

-- Client sessions: the identity that write leases and the reply cache hang
-- off. Ids are never reused, so a resumed session never takes a stranger's.
CREATE TABLE IF NOT EXISTS sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- SessionId
    hostname    TEXT NOT NULL,
    host_label  TEXT NOT NULL,
    mount_point TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    opened_ns   INTEGER NOT NULL
);
-- Write leases: the one client session that may write a file. A row exists
-- while someone holds the lease or a handover waits for its new holder.
-- Epochs come from meta 'last_lease_epoch': cluster-wide, they only grow, so
-- an epoch a chunkserver has seen is never handed out again.
CREATE TABLE IF NOT EXISTS leases (
    inode_id        INTEGER PRIMARY KEY,
    epoch           INTEGER NOT NULL,  -- of the current holder (or of the last one)
    holder_session  INTEGER NOT NULL,  -- sessions.id; 0: free, a handover waits
    holder_host     TEXT NOT NULL,     -- the holder's host label, for operators
    handover_host   TEXT NOT NULL      -- host (label or hostname) allowed to take it; '' none
) WITHOUT ROWID;
-- How far this copy of the metadata has come in the HA journal (etcd): the
-- last entry applied here, in the transaction that applied it. One row, or
-- none (an embedded master, or a copy that never joined a journal). Not
-- journaled itself (dfs.metadata.change_capture): each copy keeps its own.
CREATE TABLE IF NOT EXISTS journal_position (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL   -- the last journal entry in this copy
);
-- Replies to mutating client requests, so that a request retried after a
-- lost reply (master restart, broken connection) is answered, not redone.
CREATE TABLE IF NOT EXISTS reply_cache (
    session_id  INTEGER NOT NULL,
    op_id       INTEGER NOT NULL,  -- client-chosen, increasing per session
    reply       BLOB NOT NULL,     -- the encoded reply frame body (type + msgpack)
    PRIMARY KEY (session_id, op_id)
) WITHOUT ROWID;
"""


def create_tables(connection: sqlite3.Connection) -> None:
    """Create the schema on a new database, or check an existing one's version (migrating
    an older one)."""
    connection.executescript(SCHEMA_SQL)
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        _add_identity(connection)
        connection.execute(
            "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    elif str(row[0]) in MIGRATABLE_SCHEMA_VERSIONS:
        _migrate(connection)
    elif str(row[0]) != str(SCHEMA_VERSION):
        # Compared as text: a damaged value ("", "x", a blob) is named, not parsed.
        raise DamagedMetadata(
            f"metadata schema version {row[0]!r} is not {SCHEMA_VERSION}; no migration known"
        )


def _add_identity(connection: sqlite3.Connection) -> None:
    """A new cluster id and generation 0 (the first master start moves it to 1).

    OR IGNORE: a migration cut short and run again keeps the id it made the first time.
    """
    connection.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('cluster_id', ?)",
                       (str(uuid.uuid4()),))
    connection.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('generation', '0')")


def _migrate(connection: sqlite3.Connection) -> None:
    """1 → 2: a database from before cluster ids gets one. Its chunkservers have none
    stored yet, so they adopt it at their next registration."""
    # One transaction: the version moves only with the rows it promises.
    connection.execute("BEGIN IMMEDIATE")
    try:
        _add_identity(connection)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                           (str(SCHEMA_VERSION),))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
