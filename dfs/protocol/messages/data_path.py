"""The data path: a client or a chain member → a chunkserver (reads, writes, flushes).

Chunk bytes travel as the frame's raw payload beside these structs, never
inside them; ranges that are all zero travel as ``zero_ranges`` only. Every
request is refused without the master's capability for the chunk.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from vmstore.dfs.constants import DATA_RPC_TIMEOUT_S, WRITE_BATCH_EXTENTS_MAX
from vmstore.dfs.protocol.messages.base import U63, EmptyReply, Message, Request
from vmstore.dfs.protocol.messages.records import Capability, Chain


# --- reads, writes and flushes over TCP ---------------------------------------------
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


# A chain write's silence unit (seconds, chosen by the writer from the chain's
# recent latency): a member forwarding to N more members answers
# ReplicaUnavailable naming its successor when no reply came within N units,
# so the writer, which waits one unit more per member, learns which member
# went silent. 0: the fixed DATA_RPC_TIMEOUT_S (a writer that sets none).
SilenceS = Annotated[float, msgspec.Meta(ge=0.0, le=DATA_RPC_TIMEOUT_S)]


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
    silence_s: SilenceS = 0.0  # see SilenceS


class ToChunkserverFlushChunk(Request, frozen=True, kw_only=True):
    """Make every write acknowledged so far durable, here and down ``chain_rest``."""

    TYPE: ClassVar[int] = 303
    REPLY: ClassVar[type[Message]] = EmptyReply
    chunk_id: U63
    version: U63
    chain_rest: Chain
    capability: Capability | None = None  # WRITE of this chunk; None is refused
    silence_s: SilenceS = 0.0  # see SilenceS


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
