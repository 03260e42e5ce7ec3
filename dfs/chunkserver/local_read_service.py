"""Short-circuit reads, the chunkserver's half: replica fds for readers on this host.

Promises:
* An fd is handed out only to a peer that runs as root or as this
  chunkserver's user (SO_PEERCRED), for a request whose READ capability
  the data service would accept for a read (``DataService.fence``), for a
  replica whose version is the one asked for. Anything else is answered
  with an ErrorReply naming what was wrong, and no fd.
* The fd is read-only, close-on-exec, opened without following symlinks,
  and is the file the store holds (``ChunkStore.open_for_local_read``).
* Garbage on the socket (a packet that is not a request frame, a frame
  that is not an open request, fds sent to us) closes that connection
  with a logged reason; the listener and every other connection go on.
  Each request is answered within LOCAL_CALL_TIMEOUT_S or its connection
  is closed. At most LOCAL_READ_CONNECTIONS_MAX connections are served at once.

What it does not promise: the reader verifies what it reads itself
(``protocol.replica_format``) and falls back to a network read on any
doubt, so nothing here follows an fd once it is handed out. A replica that
is deleted later stays readable through an old fd until the reader closes
it; readers check the file's link count and version on every read.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import trio
from prometheus_client import Counter

from vmstore.dfs.chunkserver.data_service import DataService
from vmstore.dfs.constants import (
    LOCAL_ACCEPT_RETRY_S,
    LOCAL_CALL_TIMEOUT_S,
    LOCAL_READ_CONNECTIONS_MAX,
    LOCAL_READ_LISTEN_BACKLOG_MAX,
)
from vmstore.dfs.errors import AccessDenied, DfsError, ProtocolError, ReplicaUnavailable
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import READ
from vmstore.dfs.protocol.local_socket import (
    close_all,
    local_socket_name,
    new_socket,
    peer_credentials,
    receive_frame,
    send_frame,
    trusted_uid,
)

log = logging.getLogger(__name__)
# accept() errors that mean "out of something for now": wait, then go on
# (as trio's serve_listeners does), rather than end the listener.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

LOCAL_OPENS = Counter("vmstore_chunkserver_local_opens_total",
                      "Replica fds asked for by short-circuit readers on this host, by result",
                      ["result"], registry=REGISTRY)
OPENED = LOCAL_OPENS.labels("opened")
REFUSED = LOCAL_OPENS.labels("refused")


class LocalReadService:
    """The abstract Unix socket of one chunkserver and the connections it accepted."""

    def __init__(self, data: DataService) -> None:
        self.data = data
        self.connections = 0

    async def serve(self, advertise_host: str, port: int, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen at local_socket_name(advertise_host, port); ``started`` with the name,
        or with None when the name is taken (the chunkserver then serves only TCP)."""
        name = local_socket_name(advertise_host, port)
        listener = new_socket()
        with listener:
            try:
                await listener.bind(name)
            except OSError as error:
                # Another process holds the name (an impostor, or a chunkserver
                # advertising the same address): reads still work over TCP.
                log.warning("no short-circuit reads: cannot bind %r: %s", name, error,
                            extra=about("local_socket_unavailable", error=str(error)))
                task_status.started(None)
                return
            listener.listen(LOCAL_READ_LISTEN_BACKLOG_MAX)
            task_status.started(name)
            async with trio.open_nursery() as nursery:
                while True:
                    connection = await self._accept(listener)
                    if self.connections >= LOCAL_READ_CONNECTIONS_MAX:
                        connection.close()  # the reader falls back to TCP
                        continue
                    nursery.start_soon(self._serve_one, connection)

    async def _accept(self, listener: trio.socket.SocketType) -> trio.socket.SocketType:
        while True:
            try:
                connection, _ = await listener.accept()
                return connection
            except OSError as error:
                if error.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.warning("local socket: accept failed (%s); retrying", error)
                await trio.sleep(LOCAL_ACCEPT_RETRY_S)

    async def _serve_one(self, connection: trio.socket.SocketType) -> None:
        self.connections += 1
        try:
            with connection:
                await self._serve_requests(connection)
        except (ProtocolError, OSError, trio.TooSlowError) as error:
            reason = str(error) or type(error).__name__
            log.warning("local socket: closed a connection: %s", reason,
                        extra=about("local_connection_closed", error=reason))
        finally:
            self.connections -= 1

    async def _serve_requests(self, connection: trio.socket.SocketType) -> None:
        pid, uid, _gid = peer_credentials(connection)
        if not trusted_uid(uid):
            # Its first request is answered with the reason (within the call
            # timeout, so that a silent one holds no slot), then it is closed.
            refusal = AccessDenied(f"pid {pid} runs as uid {uid}: replica fds go only"
                                   f" to root and uid {os.geteuid()}")
            with trio.move_on_after(LOCAL_CALL_TIMEOUT_S):
                request_id, _ = await _next_request(connection, pid)
                REFUSED.inc()
                await _send_error(connection, request_id, refusal)
            raise ProtocolError(refusal.message)
        while True:
            # Idle persistent connections may wait as long as they like (they
            # are bounded in number); a request, once here, is answered in time.
            request_id, request = await _next_request(connection, pid)
            if request is None:
                return
            with trio.fail_after(LOCAL_CALL_TIMEOUT_S):
                await self._answer(connection, request_id, request)

    async def _answer(self, connection: trio.socket.SocketType, request_id: int,
                      request: m.ToChunkserverOpenLocalReplica) -> None:
        try:
            self.data.fence.capabilities.check(request.capability, request.chunk_id, READ)
            fd = await self.data.disk(0, self.data.store.open_for_local_read,
                                      request.chunk_id, request.version)
        except DfsError as error:
            REFUSED.inc()
            await _send_error(connection, request_id, error)
            return
        except OSError as error:
            REFUSED.inc()
            await _send_error(connection, request_id, ReplicaUnavailable(
                f"chunk {request.chunk_id}: cannot open the replica: {error}"))
            return
        try:
            await send_frame(connection, m.LocalReplicaReply(
                chunk_id=request.chunk_id, version=request.version), request_id,
                response=True, fd=fd)
        finally:
            os.close(fd)  # the reader has its own copy now (or none, if the send failed)
        OPENED.inc()


async def _next_request(connection: trio.socket.SocketType, pid: int
                        ) -> tuple[int, m.ToChunkserverOpenLocalReplica | None]:
    """(request id, the next open request), or (0, None) when the peer closed."""
    received = await receive_frame(connection)
    if received is None:
        return 0, None
    header, request, fds = received
    if fds:
        close_all(fds)
        raise ProtocolError(f"pid {pid} sent fds to the chunkserver")
    if header.is_response or not isinstance(request, m.ToChunkserverOpenLocalReplica):
        raise ProtocolError(f"pid {pid} sent {type(request).__name__}, not"
                            " ToChunkserverOpenLocalReplica")
    return header.request_id, request


async def _send_error(connection: trio.socket.SocketType, request_id: int,
                      error: DfsError) -> None:
    await send_frame(connection, m.ErrorReply(code=error.code, message=error.message[:1000]),
                     request_id, response=True)
