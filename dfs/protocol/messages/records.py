"""Records shared by several messages: attributes, replica addresses, capabilities.

These are fields, never messages of their own: no ``TYPE``, never framed
alone. ``Chain`` bounds a write chain's length on the wire, so that no
request can make a chunkserver forward round a long loop of itself.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from vmstore.dfs.constants import GOAL_MAX
from vmstore.dfs.protocol.messages.base import U63, Int64, Port


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
CHAIN_MEMBERS_MAX = 2 * GOAL_MAX
Chain = Annotated[list[ReplicaAddress], msgspec.Meta(max_length=CHAIN_MEMBERS_MAX)]


class Capability(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The master's permission for one operation on one chunk, until a time.

    ``mac`` is HMAC-SHA256 (truncated to 16 bytes) over the other fields with
    a key derived from the cluster key (``protocol.capability``); a
    chunkserver checks it, the chunk, the operation and the expiry (and for
    writes the lease epoch) before serving, and the generation of the master that
    issued it: a chunkserver refuses one older than the newest generation it has seen
    (fencing across masters).

    Format 2 added ``generation`` and ``token_format``, last, so that a format-1
    capability still decodes (as format 1, generation 0) and is refused by name.
    """

    chunk_id: U63
    operation: U63  # capability.READ (1) | capability.WRITE (2)
    epoch: U63  # a write lease's epoch (chunkservers refuse older ones); 0 for reads
    session_id: U63  # the client session it was issued to (0: the master itself), for logs
    issued_ns: U63  # master wall clock
    expires_ns: U63
    mac: bytes
    generation: U63 = 0  # the issuing master's metadata generation: its epoch
    token_format: U63 = 1  # capability.TOKEN_FORMAT when issued; 1: before generations


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


class ChunkOwner(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """The file a chunk belongs to, for the owner record of its replicas' headers
    (``replica_format``): what ``vmstore recover`` rebuilds files from."""

    chunk_id: U63
    version: U63  # the replica's current version; a replica at another is left as it is
    inode: U63
    index: U63  # the chunk's index in the file (byte offset // CHUNK_SIZE_BYTES)
