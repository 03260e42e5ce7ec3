"""Metadata calls to the master that survive its restarts.

Promise: a call returns the master's answer or raises its DfsError; while
the master is unreachable, calls wait and retry with bounded backoff for up
to MASTER_RECONNECT_TIMEOUT_S, then raise MasterUnavailable. Mutating calls
carry (session, op id) and keep them across retries, so the master answers a
repeated request from its reply cache instead of running it twice.

Fencing across masters (issue 15): the session reply names the master's generation
(its epoch). A master older than the newest this client has met was succeeded (a
deposed HA leader, an old copy of the metadata): it is refused as NotLeader and the
next master is tried, so none of its replies or capabilities is taken. Checked once
per connection: a connection is to one master start, whose generation never changes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, get_args

import msgspec
import trio

from vmstore.dfs.client.file_state import FileStates
from vmstore.dfs.constants import (
    HA_MASTER_CALL_TIMEOUT_S,
    HA_RECONNECT_BACKOFF_S_MAX,
    LEASE_EXPIRY_S,
    MASTER_RECONNECT_TIMEOUT_S,
    OWED_FILES_MAX,
    RECONNECT_BACKOFF_S_MAX,
    RECONNECT_BACKOFF_S_MIN,
    RPC_TIMEOUT_S,
    SILENT_MASTER_AVOID_S,
)
from vmstore.dfs.errors import (
    DfsError,
    MasterUnavailable,
    NoAnswer,
    NotLeader,
    PeerUnavailable,
    ProtocolError,
    ReplicaUnavailable,
    SessionLost,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol import network
from vmstore.dfs.protocol.auth import KeyMaterial
from vmstore.dfs.protocol.lazy_changes import answered_before_durable
from vmstore.dfs.protocol.rpc import Connection, open_connection

log = logging.getLogger(__name__)
ReplyT = TypeVar("ReplyT", bound=m.Message)
T = TypeVar("T")
# Worth waiting out: the master is restarting, or waits for chunkservers.
TRANSIENT_ERRORS = (PeerUnavailable, ReplicaUnavailable)
# The requests that change the master's state: each carries (session_id, op_id),
# which ``MasterClient.mutate`` stamps once and keeps across retries.
Mutation: TypeAlias = (
    m.ClientToMasterSetAttr | m.ClientToMasterCreate | m.ClientToMasterMkdir
    | m.ClientToMasterSymlink | m.ClientToMasterLink | m.ClientToMasterUnlink
    | m.ClientToMasterRmdir | m.ClientToMasterRename | m.ClientToMasterSetXattr
    | m.ClientToMasterRemoveXattr | m.ClientToMasterSetGoal | m.ClientToMasterChunkForWrite
    | m.ClientToMasterReportBadChain | m.ClientToMasterWriteEnd)
assert set(get_args(Mutation)) == {
    cls for cls in m.ALL_MESSAGES if "op_id" in cls.__struct_fields__}, \
    "Mutation must name every request that carries an op id"


@dataclass(frozen=True)
class ClientIdentity:
    host_label: str
    hostname: str = socket.gethostname()
    mount_point: str = ""
    role: str = "client"


class MasterClient:
    def __init__(self, nursery: trio.Nursery, host: str, port: int, key: KeyMaterial,
                 identity: ClientIdentity, files: FileStates,
                 reconnect_timeout_s: float = MASTER_RECONNECT_TIMEOUT_S,
                 other_masters: Sequence[tuple[str, int]] = ()) -> None:
        self._nursery = nursery
        self.host = host
        self.port = port
        # An HA group's masters (dfs.master.ha): the one tried now first; a master
        # that cannot be reached, or says it does not lead, sends us to the next.
        self.masters = [(host, port), *other_masters]
        self._silent_until: dict[tuple[str, int], float] = {}  # trio clock
        # Going round an HA group costs little (a standby refuses at once), and the
        # new leader listens a few seconds after the old one died: a long backoff
        # only adds to the failover (measured: 2 s more, 5.2 s in all).
        self._backoff_max_s = (RECONNECT_BACKOFF_S_MAX if len(self.masters) == 1
                               else HA_RECONNECT_BACKOFF_S_MAX)
        self._key = key
        self._wire = network.current()  # every reconnect goes over the same network
        self.identity = identity
        self.reconnect_timeout_s = reconnect_timeout_s
        self.session_id = 0
        # The newest master generation met (fencing across masters): a master older
        # than this was succeeded, and nothing it says or signs is taken.
        self.newest_generation = 0
        self._next_op_id = 1
        self._connection: Connection | None = None
        # Per file: its open handles here among the rest. The open files are
        # declared again to a restarted master, so that it keeps unlinked open
        # files alive.
        self.files = files
        self.lease_expiry_s = LEASE_EXPIRY_S  # the master's, learned with the session
        # Called when the master no longer knew our session (it expired):
        # whatever the old session held is gone.
        self.on_session_replaced: list[Callable[[], None]] = []
        # Told what other sessions changed (MasterToClientInvalidate), in order, before
        # the master hears back; asked for only if ``wants_invalidations`` (a mount).
        self.on_invalidate: list[Callable[[m.MasterToClientInvalidate], Awaitable[None]]] = []
        self.wants_invalidations = False
        self._connect_lock = trio.Lock()
        # Changes the master answered before they were durable (protocol.lazy_changes),
        # and how many of the first of them are known durable since: an fsync here
        # waits for them (``sync_metadata``). Any other change's reply makes every
        # lazy one answered before it was sent durable too.
        self.changes_answered = 0
        self.changes_durable = 0
        # Per file, how many lazy changes an fsync of it must see durable: through its
        # own last one (its create, link, attributes, xattrs, a close's size). A
        # name's change (rename, unlink, mkdir...) is for an fsync of its directory,
        # as on a local disk: an unrelated create must not make a guest's flush wait
        # for the master. Bounded: an inode dropped from here owes through the floor.
        self._owed_by_inode: dict[int, int] = {}
        self._owed_floor = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def next_op_id(self) -> int:
        op_id = self._next_op_id
        self._next_op_id += 1
        return op_id

    def _timeout_s(self, timeout_s: float) -> float:
        """An HA group's leader is replaced within seconds when it hangs: waiting the
        single master's RPC_TIMEOUT_S for it would stall every client that long."""
        return timeout_s if len(self.masters) == 1 else min(timeout_s, HA_MASTER_CALL_TIMEOUT_S)

    async def call(self, request: m.Request, *, reply_type: type[ReplyT],
                   timeout_s: float = RPC_TIMEOUT_S) -> ReplyT:
        """Send ``request``; retry transient failures until the reconnect deadline."""
        async def attempt() -> ReplyT:
            connection = await self._connected()
            reply, _ = await connection.call(request, timeout_s=self._timeout_s(timeout_s),
                                             reply_type=reply_type)
            return reply

        return await self._retrying(attempt, type(request).__name__)

    async def mutate(self, request: Mutation, *,
                     reply_type: type[ReplyT]) -> ReplyT:
        """A mutating call: stamped once with session and op id, then retried as is.

        ``request`` comes with ``session_id=0, op_id=0``; this fills both in.
        """
        assert request.session_id == 0, "mutate stamps the session id"
        assert request.op_id == 0, "mutate stamps the op id"
        # A change answered only once durable (a chunk, a truncate, an fsync's
        # WriteEnd) is on stable storage with every change committed before it: with
        # every lazy one answered before it was sent.
        lazy = answered_before_durable(request)
        covered = 0 if lazy else self.changes_answered
        what = type(request).__name__
        await self._retrying(self._connected, what)  # the session id first
        stamped = self.session_id
        sent = msgspec.structs.replace(request, session_id=stamped, op_id=self.next_op_id())

        async def attempt() -> ReplyT:
            connection = await self._connected()
            if self.session_id != stamped:
                raise SessionLost(f"{what}: session {stamped} ended before"
                                  f" the master answered (now session {self.session_id});"
                                  " it may or may not have been applied")
            reply, _ = await connection.call(sent, reply_type=reply_type,
                                             timeout_s=self._timeout_s(RPC_TIMEOUT_S))
            return reply

        reply = await self._retrying(attempt, what)
        self.changes_durable = max(self.changes_durable, covered)
        if lazy:
            self.changes_answered += 1
            self._owe(_file_of(request, reply), self.changes_answered)
        return reply

    def owed_through(self, inode: int) -> int:
        """How many of this client's lazy changes an fsync of ``inode`` must see durable."""
        return max(self._owed_by_inode.get(inode, 0), self._owed_floor)

    def _owe(self, inode: int | None, through: int) -> None:
        if inode is None:
            return
        if len(self._owed_by_inode) >= OWED_FILES_MAX:
            # Forget the ones already durable; if none is, the oldest, conservatively.
            for known, owed in list(self._owed_by_inode.items()):
                if owed <= self.changes_durable:
                    del self._owed_by_inode[known]
            if len(self._owed_by_inode) >= OWED_FILES_MAX:
                oldest = next(iter(self._owed_by_inode))
                self._owed_floor = max(self._owed_floor, self._owed_by_inode.pop(oldest))
        self._owed_by_inode.pop(inode, None)  # re-inserted: newest last
        self._owed_by_inode[inode] = through

    async def sync_metadata(self, through: int | None = None) -> None:
        """The first ``through`` lazy changes this client was answered (default: all so
        far) are on the master's stable storage when this returns (at once if known so: no
        round trip)."""
        answered = self.changes_answered if through is None else through
        if self.changes_durable >= answered:
            return
        sent_after = self.changes_answered  # the master's sync covers all of them
        await self.call(m.ClientToMasterSyncMetadata(), reply_type=m.EmptyReply)
        self.changes_durable = max(self.changes_durable, sent_after)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()``, again after transient failures until the reconnect deadline."""
        backoff_s = RECONNECT_BACKOFF_S_MIN
        deadline = trio.current_time() + self.reconnect_timeout_s
        while True:
            try:
                return await attempt()
            except TRANSIENT_ERRORS as error:
                self._next_master(error)
                if trio.current_time() + backoff_s > deadline:
                    raise MasterUnavailable(
                        f"master {self.address} unavailable for {self.reconnect_timeout_s} s:"
                        f" {error}") from None
                log.debug("master call %s failed (%s); retrying", what, error)
            await trio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self._backoff_max_s)

    def _next_master(self, error: DfsError) -> None:
        """After a failure, try the next master of an HA group (the only one stays).

        A master that said NotLeader, or stayed silent past a call's deadline (a
        hung leader keeps its sockets open: SIGSTOP, a frozen host), is left for
        the next one: a standby refuses the connection at once, and whoever was
        elected meanwhile answers.
        """
        if len(self.masters) == 1:
            return
        connection = self._connection
        now = trio.current_time()
        if isinstance(error, NoAnswer):
            # Not again soon: going round to a hung master costs another deadline,
            # which could outlast our session at the new leader.
            self._silent_until[(self.host, self.port)] = now + SILENT_MASTER_AVOID_S
        if isinstance(error, (NotLeader, NoAnswer)) and connection is not None:
            connection.close()
        elif connection is not None and not connection.closed.is_set():
            return  # the call failed, not the master: keep it
        start = self.masters.index((self.host, self.port))
        following = [self.masters[(start + step) % len(self.masters)]
                     for step in range(1, len(self.masters) + 1)]
        self.host, self.port = next(
            (master for master in following if self._silent_until.get(master, 0.0) <= now),
            following[0])

    async def _connected(self) -> Connection:
        connection = self._connection
        if connection is not None and not connection.closed.is_set():
            return connection  # fast path
        async with self._connect_lock:
            connection = self._connection
            if connection is None or connection.closed.is_set():
                connection = await self._nursery.start(self._hold)
                self._connection = connection
            return connection

    async def _hold(self, *, task_status: Any) -> None:
        async with open_connection(self.host, self.port, self._key, self.identity.role,
                                   handler=self._from_master, wire=self._wire) as connection:
            reply, _ = await connection.call(m.ClientToMasterOpenSession(
                host_label=self.identity.host_label, hostname=self.identity.hostname,
                mount_point=self.identity.mount_point, pid=os.getpid(),
                resume_session_id=self.session_id, open_inodes=self.files.open_inodes(),
                invalidations=self.wants_invalidations),
                reply_type=m.MasterToClientSession, timeout_s=self._timeout_s(RPC_TIMEOUT_S))
            if reply.generation < self.newest_generation:
                # Every reply and capability on this connection would be its: refused
                # once here, before the session is taken; the next master is tried.
                raise NotLeader(f"master {self.address} is generation {reply.generation},"
                                f" older than generation {self.newest_generation} this client"
                                " has met: it was succeeded")
            self.newest_generation = reply.generation
            replaced = self.session_id and reply.session_id != self.session_id
            if replaced:
                log.warning("master did not know session %d (it expired); now session %d",
                            self.session_id, reply.session_id,
                            extra=about("session_replaced", session=reply.session_id,
                                        expired_session=self.session_id))
            self.session_id = reply.session_id
            self.lease_expiry_s = reply.lease_expiry_ms / 1000
            if replaced:
                for callback in self.on_session_replaced:
                    callback()
            task_status.started(connection)
            await connection.closed.wait()

    async def _from_master(self, request: m.Request, payload: bytes) -> tuple[m.Message, bytes]:
        """A request the master sends on the session connection."""
        if not isinstance(request, m.MasterToClientInvalidate):
            raise ProtocolError(f"{type(request).__name__} is not a master request to a client")
        for callback in self.on_invalidate:
            await callback(request)
        return m.EmptyReply(), b""

    async def close_session(self, timeout_s: float) -> None:
        """End the session at the master now (leases, open files), if it can be reached."""
        connection = self._connection
        if not self.session_id or connection is None or connection.closed.is_set():
            return
        try:
            await connection.call(m.ClientToMasterCloseSession(session_id=self.session_id),
                                  timeout_s=timeout_s)
        except DfsError as error:
            log.info("could not close session %d (%s); it will expire", self.session_id, error)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def _file_of(request: m.Message, reply: m.Message) -> int | None:
    """The file whose fsync a lazy change is for: the file it made or changed; None for
    a change of a name (an fsync of the directory covers it)."""
    if isinstance(request, (m.ClientToMasterSetAttr, m.ClientToMasterWriteEnd,
                            m.ClientToMasterSetXattr, m.ClientToMasterRemoveXattr,
                            m.ClientToMasterLink)):
        return int(request.inode)
    if isinstance(request, m.ClientToMasterCreate) and isinstance(reply, m.AttrsReply):
        return int(reply.attrs.inode)
    return None
