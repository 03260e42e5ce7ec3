"""Client ↔ master: write leases, one writer per file cluster-wide, and session liveness.

A session that stops renewing loses its leases; a lease handed over or
broken fences the old holder (``MasterToChunkserverFence``) before the new
one writes.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from vmstore.dfs.protocol.messages.base import U63, EmptyReply, Message, Request


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
