"""Client ↔ master: sessions and the namespace (lookups, attributes, names, xattrs).

Every request that changes the namespace carries ``session_id`` and
``op_id``, so that a retry after a lost reply is answered, not done twice.
"""

from __future__ import annotations

from typing import ClassVar

from vmstore.dfs.protocol.messages.base import U63, EmptyReply, Int64, Message, Request
from vmstore.dfs.protocol.messages.records import DirEntry, FileAttrs


class AttrsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 100
    attrs: FileAttrs
    # The write lease's epoch, taken by this request (a create with ``write_lease``);
    # 0: none taken.
    lease_epoch: U63 = 0


class ClientToMasterOpenSession(Request, frozen=True, kw_only=True):
    """Start (or, after a reconnect, resume) a client session."""

    TYPE: ClassVar[int] = 101
    REPLY: ClassVar[type[Message]]
    host_label: str  # the client's failure domain, so that its own host gets replica 1
    hostname: str
    mount_point: str
    pid: U63
    resume_session_id: U63  # 0 for a new session
    open_inodes: list[U63] = []  # files this client has open (kept alive if unlinked)
    # A mount: tell it what other sessions change (MasterToClientInvalidate), so
    # that the kernel's caches of names and attributes there never go stale.
    invalidations: bool = False


class MasterToClientSession(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 102
    session_id: U63
    # A session silent this long loses its write leases; renew well inside it.
    lease_expiry_ms: U63 = 20_000
    # The master's metadata generation (its epoch, in every capability it signs): a
    # client refuses a master older than one it has met (a deposed one). 0: not known.
    generation: U63 = 0


ClientToMasterOpenSession.REPLY = MasterToClientSession


class ClientToMasterHold(Request, frozen=True, kw_only=True):
    """This client opened (``held``) or closed its last handle on ``inode``.

    A held file that loses its last name stays readable and writable until
    its last holder closes it, as POSIX promises for open files.
    """

    TYPE: ClassVar[int] = 103
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    inode: U63
    held: bool


class ClientToMasterLookup(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 110
    REPLY: ClassVar[type[Message]] = AttrsReply
    parent: U63
    name: bytes


class ClientToMasterGetAttr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 111
    REPLY: ClassVar[type[Message]] = AttrsReply
    inode: U63


class ClientToMasterSetAttr(Request, frozen=True, kw_only=True):
    """Change the fields that are not None; ``size_bytes`` truncates or extends."""

    TYPE: ClassVar[int] = 112
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    mode: U63 | None = None  # permission bits only
    uid: U63 | None = None
    gid: U63 | None = None
    size_bytes: U63 | None = None
    atime_ns: Int64 | None = None
    mtime_ns: Int64 | None = None


class ClientToMasterCreate(Request, frozen=True, kw_only=True):
    """Create a non-directory, non-symlink node (regular file, fifo, device, socket).

    ``open_handle``: the creator opens it too (an open(O_CREAT)), as a
    ClientToMasterHold would say, in the same commit; with ``write_lease`` (a
    regular file opened for writing) it also takes the file's write lease, as a
    ClientToMasterAcquireLease would, and the reply's ``lease_epoch`` is the
    lease's epoch. One round trip and one commit instead of three and two.
    """

    TYPE: ClassVar[int] = 113
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    mode: U63  # kind bits | permission bits
    uid: U63
    gid: U63
    rdev: U63 = 0
    open_handle: bool = False
    write_lease: bool = False  # only with open_handle


class ClientToMasterMkdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 114
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    mode: U63  # permission bits
    uid: U63
    gid: U63


class ClientToMasterSymlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 115
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    target: bytes
    uid: U63
    gid: U63


class ClientToMasterLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 116
    REPLY: ClassVar[type[Message]] = AttrsReply
    session_id: U63
    op_id: U63
    inode: U63
    new_parent: U63
    new_name: bytes


class ClientToMasterUnlink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 117
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes


class ClientToMasterRmdir(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 118
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes


class ClientToMasterRename(Request, frozen=True, kw_only=True):
    """``flags``: 0, RENAME_NOREPLACE or RENAME_EXCHANGE (``dfs.types``)."""

    TYPE: ClassVar[int] = 119
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    parent: U63
    name: bytes
    new_parent: U63
    new_name: bytes
    flags: U63 = 0


class ReadLinkReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 120
    target: bytes


class ClientToMasterReadLink(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 121
    REPLY: ClassVar[type[Message]] = ReadLinkReply
    inode: U63


class ReadDirReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 122
    entries: list[DirEntry]  # empty: the end of the directory


class ClientToMasterReadDir(Request, frozen=True, kw_only=True):
    """Entries after ``after_cookie`` (0: from the start), at most ``limit``.

    Cookies stay valid while other entries come and go, so a listing that
    runs while the directory changes never repeats or skips a survivor.
    """

    TYPE: ClassVar[int] = 123
    REPLY: ClassVar[type[Message]] = ReadDirReply
    inode: U63
    after_cookie: U63
    limit: U63


class XattrReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 124
    value: bytes


class ClientToMasterGetXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 125
    REPLY: ClassVar[type[Message]] = XattrReply
    inode: U63
    name: bytes


class ClientToMasterSetXattr(Request, frozen=True, kw_only=True):
    """``flags``: 0, XATTR_CREATE or XATTR_REPLACE (``dfs.types``)."""

    TYPE: ClassVar[int] = 126
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    inode: U63
    name: bytes
    value: bytes
    flags: U63 = 0


class XattrNamesReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 127
    names: list[bytes]


class ClientToMasterListXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 128
    REPLY: ClassVar[type[Message]] = XattrNamesReply
    inode: U63


class ClientToMasterRemoveXattr(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 129
    REPLY: ClassVar[type[Message]] = EmptyReply
    session_id: U63
    op_id: U63
    inode: U63
    name: bytes


class CountReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 132
    count: U63


class ClientToMasterSetGoal(Request, frozen=True, kw_only=True):
    """Set the replication goal of a file, or of a directory (and below, if recursive)."""

    TYPE: ClassVar[int] = 133
    REPLY: ClassVar[type[Message]] = CountReply
    session_id: U63
    op_id: U63
    inode: U63
    goal: U63
    recursive: bool = False


class MasterToClientInvalidate(Request, frozen=True, kw_only=True):
    """Another session changed these: forget them before answering (issue 18).

    Sent on the session's own connection to every mount that asked for it
    (``ClientToMasterOpenSession.invalidations``) except the one that made the
    change, after the change is durable and before the changer hears of it, so
    that whatever the changer does next, a lookup on any mount sees the change.
    """

    TYPE: ClassVar[int] = 134
    REPLY: ClassVar[type[Message]] = EmptyReply
    entries: list[tuple[U63, bytes]] = []  # (directory inode, name) now naming something else
    inodes: list[U63] = []  # whose attributes changed (mode, owner, links, times, xattrs)
    files: list[FileAttrs] = []  # whose data or size changed: their attributes now


class StatFsReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 130
    total_bytes: U63
    free_bytes: U63
    inodes_used: U63


class ClientToMasterStatFs(Request, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 131
    REPLY: ClassVar[type[Message]] = StatFsReply


class ClientToMasterSyncMetadata(Request, frozen=True, kw_only=True):
    """Every change the master committed before this request is on stable storage
    when it answers (an fsync of a file this client created, an fsyncdir).

    Namespace changes are committed at once and made durable within
    METADATA_SYNC_DELAY_S_MAX (``dfs.master.committer``); this waits for it.
    """

    TYPE: ClassVar[int] = 135
    REPLY: ClassVar[type[Message]] = EmptyReply
