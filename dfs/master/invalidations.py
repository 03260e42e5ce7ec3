"""What mounts must forget when a session changes the namespace, and telling them.

Promise (issue 18, coherence between hosts): when a mutating request's reply
reaches its client, every other mount whose session connection is up has
answered a ``MasterToClientInvalidate`` naming the directory entries, the
attributes and the file data that the change made stale there, so that any
lookup, stat or open started afterwards on any host asks again and finds the
change. A lease handover or break tells every mount, the new holder too, that
the file's size and data may have moved on, before the coordinator hears back.

``notice_for`` is pure and synchronous: it runs inside the change's own
transaction, before the change (it looks up the name that is about to be
replaced or removed). ``Invalidations.tell`` sends the notice after the commit
to all listening sessions at once, each answer within
INVALIDATION_ACK_TIMEOUT_S.

Caveats:
* A mount that does not answer in time (hung, cut off) is not waited for
  longer: the change is acknowledged, and that mount may show the old name or
  attributes until its kernel's ENTRY_TIMEOUT_S / ATTR_TIMEOUT_S run out, or
  until its next open (which always asks the master). Logged and counted
  (vmstore_master_invalidations_late_total).
* A mount whose session connection is down while a change is made never
  hears of it; the same timeouts bound what it shows meanwhile.
* Creating a name needs no entry notice: the kernel keeps no name it was told
  is missing past the moment (negative entries expire at once, see
  vmstore.fuse.operations); only the parent directory's attributes change.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from prometheus_client import Counter

from vmstore.dfs.constants import INVALIDATION_ACK_TIMEOUT_S
from vmstore.dfs.errors import DfsError
from vmstore.dfs.log_fields import about
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.rpc import Connection
from vmstore.dfs.types import InodeId, SessionId

log = logging.getLogger(__name__)

INVALIDATIONS_SENT = Counter("vmstore_master_invalidations_total",
                             "Change notices sent to mounts (MasterToClientInvalidate)",
                             registry=REGISTRY)
INVALIDATIONS_LATE = Counter("vmstore_master_invalidations_late_total",
                             "Change notices a mount did not answer in time, or could not take",
                             registry=REGISTRY)


def _inode_of(ns: Namespace, parent: int, name: bytes) -> int | None:
    try:
        return ns.lookup(InodeId(parent), name).inode
    except DfsError:  # no such name (or parent): the change itself will say so
        return None


def notice_for(ns: Namespace, request: Any) -> m.MasterToClientInvalidate | None:
    """What ``request`` will make stale on other mounts; called before it runs.

    Files whose size or data change (WriteEnd, a truncate) are named by
    ``files_after``, once their new attributes are known.
    """
    entries: list[tuple[int, bytes]] = []
    inodes: list[int] = []
    if isinstance(request, (m.ClientToMasterCreate, m.ClientToMasterMkdir,
                            m.ClientToMasterSymlink)):
        inodes.append(request.parent)
    elif isinstance(request, m.ClientToMasterLink):
        inodes += [request.inode, request.new_parent]
    elif isinstance(request, (m.ClientToMasterUnlink, m.ClientToMasterRmdir)):
        entries.append((request.parent, request.name))
        inodes.append(request.parent)
        victim = _inode_of(ns, request.parent, request.name)
        inodes += [] if victim is None else [victim]
    elif isinstance(request, m.ClientToMasterRename):
        entries += [(request.parent, request.name), (request.new_parent, request.new_name)]
        inodes += [request.parent, request.new_parent]
        for parent, name in entries:  # the moved one, and a replaced or exchanged one
            moved = _inode_of(ns, parent, name)
            inodes += [] if moved is None else [moved]
    elif isinstance(request, (m.ClientToMasterSetAttr, m.ClientToMasterSetXattr,
                              m.ClientToMasterRemoveXattr)):
        if not (isinstance(request, m.ClientToMasterSetAttr) and request.size_bytes is not None):
            inodes.append(request.inode)  # a size change names the file (files_after)
    if not entries and not inodes:
        return None
    return m.MasterToClientInvalidate(entries=list(dict.fromkeys(entries)),
                                      inodes=list(dict.fromkeys(inodes)))


def changes_data(request: Any) -> bool:
    """Whether ``request`` changes a file's size or data (its notice names the file)."""
    return isinstance(request, m.ClientToMasterWriteEnd) or (
        isinstance(request, m.ClientToMasterSetAttr) and request.size_bytes is not None)


class Invalidations:
    """The mounts that listen for change notices, by session; and telling them."""

    def __init__(self) -> None:
        # The connection each listening session opened or resumed its session on
        # (the newest): notices go there. A closed one is dropped when met.
        self._listeners: dict[SessionId, Connection] = {}

    def listen(self, session_id: SessionId, connection: Connection) -> None:
        self._listeners[session_id] = connection

    def forget(self, session_id: SessionId) -> None:
        self._listeners.pop(session_id, None)

    async def tell(self, notice: m.MasterToClientInvalidate, *,
                   besides: SessionId | None = None) -> None:
        """Send ``notice`` to every listening session but ``besides``; return when each
        answered or INVALIDATION_ACK_TIMEOUT_S passed."""
        targets = []
        for session_id, connection in list(self._listeners.items()):
            if connection.closed.is_set():
                del self._listeners[session_id]
            elif session_id != besides:
                targets.append((session_id, connection))
        if not targets:
            return  # fast path: one mount, or none
        async with trio.open_nursery() as nursery:
            for session_id, connection in targets:
                nursery.start_soon(self._tell_one, session_id, connection, notice)

    async def _tell_one(self, session_id: SessionId, connection: Connection,
                        notice: m.MasterToClientInvalidate) -> None:
        INVALIDATIONS_SENT.inc()
        try:
            await connection.call(notice, timeout_s=INVALIDATION_ACK_TIMEOUT_S,
                                  reply_type=m.EmptyReply)
        except DfsError as error:
            INVALIDATIONS_LATE.inc()
            log.info("session %d did not take a change notice (%s); its mount may show the"
                     " old state until its caches time out", session_id, error,
                     extra=about("invalidation_late", session=session_id, error=str(error)))


def with_files(notice: m.MasterToClientInvalidate | None,
               files: list[m.FileAttrs]) -> m.MasterToClientInvalidate | None:
    """``notice`` that also names ``files`` (their size or data changed)."""
    if not files:
        return notice
    if notice is None:
        return m.MasterToClientInvalidate(files=files)
    return m.MasterToClientInvalidate(entries=notice.entries, inodes=notice.inodes,
                                      files=[*notice.files, *files])
