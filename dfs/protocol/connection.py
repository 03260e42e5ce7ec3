"""Requests both ways on one authenticated connection, with bounded in-flight requests.

Promise: ``Connection.call`` returns the peer's typed reply, raises the
peer's ``DfsError``, or raises ``PeerUnavailable`` within its timeout — it
never hangs and never returns a reply meant for another request. A peer
that sends anything malformed is disconnected with a logged reason; the
process goes on. Two cases are softer and harder: a whole request with a
field out of range (a negative size, an id over 64 bits) is answered
InvalidArgument naming the field, and the connection serves on; a frame
begun but not finished within FRAME_RECEIVE_TIMEOUT_S ends the connection.

Either side may send requests on one connection (the master sends commands
to a chunkserver on the connection the chunkserver opened), so every
Connection has a reader task that routes responses to waiting callers and
runs incoming requests, at most INFLIGHT_REQUESTS_PER_CONNECTION_MAX at a
time and at most REQUEST_BYTES_PER_CONNECTION_MAX bytes of them, within
REQUEST_BYTES_PER_PROCESS_MAX for the whole process: a peer that floods us
stops being read, it does not grow our memory.

Caveat of the budgets: while a connection waits for budget it reads nothing,
replies included; a handler that calls back over its own connection could
wait on itself if that connection's budget were full of such handlers. None
does today (chains and commands go over other connections).

Caveat: a handler that raises something other than DfsError is a bug; it
propagates and takes the process down loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from vmstore.dfs.constants import (
    ERROR_TEXT_CHARS_MAX,
    INFLIGHT_REQUESTS_PER_CONNECTION_MAX,
    REQUEST_BYTES_PER_CONNECTION_MAX,
    REQUEST_BYTES_PER_PROCESS_MAX,
    RPC_TIMEOUT_S,
)
from vmstore.dfs.errors import (
    DfsError,
    InvalidArgument,
    InvalidField,
    NoAnswer,
    PeerUnavailable,
    ProtocolError,
    error_from_code,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import hop_trace
from vmstore.dfs.protocol.codec import REQUEST_ID_MAX, encode_frame
from vmstore.dfs.protocol.frames import FrameStream
from vmstore.dfs.protocol.limits import ByteBudget, acquire_uncontended_at_once
from vmstore.dfs.protocol.messages import ErrorReply, Message, Request

# Logged under rpc's name, not this module's: log filters and the tests allow
# the connection layer's lines by that name, as before rpc was split.
log = logging.getLogger("vmstore.dfs.protocol.rpc")

Handler = Callable[[Request, bytes], Awaitable[tuple[Message, bytes]]]
ReplyT = TypeVar("ReplyT", bound=Message)
# What a stream raises once the connection under it is gone (rpc uses it too).
CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Bytes of requests read but not yet answered, over all connections of this
# process: the most a flood of large requests can make it hold.
PROCESS_REQUEST_BYTES = ByteBudget(REQUEST_BYTES_PER_PROCESS_MAX, "requests of this process")


class _PendingCall:
    __slots__ = ("done", "reply", "payload", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: Message | None = None
        self.payload = b""
        self.error: DfsError | None = None


class OutgoingCall:
    """A request on the wire, and the wait for its reply (``Connection.send_request``)."""

    __slots__ = ("connection", "request", "request_id", "timeout_s", "deadline_s", "pending")

    def __init__(self, connection: Connection, request: Request, request_id: int,
                 timeout_s: float) -> None:
        self.connection = connection
        self.request = request
        self.request_id = request_id
        self.timeout_s = timeout_s
        self.deadline_s = trio.current_time() + timeout_s  # for sending and answering
        self.pending = _PendingCall()

    async def reply(self, reply_type: type[ReplyT] | None = None) -> tuple[ReplyT, bytes]:
        """The peer's typed reply; its DfsError raised; PeerUnavailable at the deadline."""
        with trio.move_on_at(self.deadline_s):
            await self.pending.done.wait()
        pending = self.pending
        if not pending.done.is_set():
            raise self.timed_out()
        if pending.error is not None:
            raise pending.error
        reply = pending.reply
        if isinstance(reply, ErrorReply):
            raise error_from_code(reply.code, reply.message, reply.server_id)
        if not isinstance(reply, self.request.REPLY):
            raise ProtocolError(f"{self.connection.peer} answered"
                                f" {type(self.request).__name__} with {type(reply).__name__}")
        return reply, pending.payload  # type: ignore[return-value]

    def timed_out(self) -> NoAnswer:
        return NoAnswer(f"{self.connection.peer} did not answer"
                               f" {type(self.request).__name__} within {self.timeout_s} s")

    def abandon(self) -> None:
        """Stop waiting: a reply that comes later is dropped (idempotent)."""
        self.connection.forget_call(self.request_id, self.pending)


class Connection:
    """One authenticated connection. Run ``serve`` in a nursery; then ``call``."""

    def __init__(
        self, frames: FrameStream, peer: str, role: str, handler: Handler | None, compress: bool,
        identity: str = "",
    ) -> None:
        self.frames = frames
        self.peer = peer  # "host:port", for messages
        self.role = role  # what the peer authenticated as
        self.identity = identity  # the uuid a chunkserver peer proved; "" for other roles
        self.handler = handler
        self.compress = compress
        self._pending: dict[int, _PendingCall] = {}
        self._next_request_id = 1
        self._inflight = trio.Semaphore(INFLIGHT_REQUESTS_PER_CONNECTION_MAX)
        self._request_bytes = ByteBudget(REQUEST_BYTES_PER_CONNECTION_MAX,
                                         f"requests from {peer}")
        self._cancel_scope: trio.CancelScope | None = None
        self.closed = trio.Event()
        self.close_reason = ""

    # --- calling ------------------------------------------------------------
    async def call(
        self,
        request: Request,
        payload: bytes | memoryview = b"",
        *,
        timeout_s: float = RPC_TIMEOUT_S,
        reply_type: type[ReplyT] | None = None,
    ) -> tuple[ReplyT, bytes]:
        """Send ``request`` and wait for its reply (typed as ``request.REPLY``)."""
        outgoing = await self.send_request(request, payload, timeout_s=timeout_s)
        try:
            return await outgoing.reply(reply_type)
        finally:
            outgoing.abandon()

    async def send_request(self, request: Request, payload: bytes | memoryview = b"", *,
                           timeout_s: float = RPC_TIMEOUT_S) -> OutgoingCall:
        """Put ``request`` on the wire; its ``reply`` is awaited later (``call`` in two
        halves: the caller works meanwhile, without a task of its own). The
        caller must ``abandon`` it in the end, whatever happens."""
        if self.closed.is_set():
            raise PeerUnavailable(f"connection to {self.peer} is closed ({self.close_reason})")
        request_id = self._next_request_id
        self._next_request_id = request_id % REQUEST_ID_MAX + 1
        outgoing = OutgoingCall(self, request, request_id, timeout_s)
        self._pending[request_id] = outgoing.pending
        try:
            with trio.move_on_at(outgoing.deadline_s):
                frame = encode_frame(request, request_id, payload=payload,
                                     compress=self.compress)
                if hop_trace.ENABLED:
                    hop_trace.mark("rpc.tx_req", type(request).__name__)
                await self._send(frame)
                return outgoing
            raise outgoing.timed_out()
        except BaseException:
            outgoing.abandon()
            raise

    def forget_call(self, request_id: int, pending: _PendingCall) -> None:
        """No caller waits for ``request_id`` any more (if ``pending`` is still its entry)."""
        if self._pending.get(request_id) is pending:
            del self._pending[request_id]

    async def _send(self, frame: tuple[bytes, bytes | memoryview]) -> None:
        try:
            await self.frames.send(frame)
        except CONNECTION_ERRORS as error:
            self._close(f"send failed: {error}")
            raise PeerUnavailable(f"connection to {self.peer} broke: {error}") from None
        except trio.Cancelled:
            if self.frames.broken:
                self._close("a send was interrupted half-way")
            raise

    # --- serving ------------------------------------------------------------
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Read frames until the connection ends; returns (never raises) on a peer fault."""
        try:
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                task_status.started()
                await self._read_loop(nursery)
        finally:
            self._close(self.close_reason or "closed")
            await trio.aclose_forcefully(self.frames.stream)

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        try:
            while True:
                header = await self.frames.receive_header()
                if header.is_response:
                    reply, payload = await self.frames.receive_body(header)
                    if isinstance(reply, InvalidField):  # receive_body raises it for replies
                        raise reply
                    if hop_trace.ENABLED:
                        hop_trace.mark("rpc.rx_reply", type(reply).__name__)
                    self._resolve(header.request_id, reply, payload)
                    continue
                held_bytes = header.body_bytes + header.payload_bytes
                await self._admit_request(held_bytes)  # may wait: then we stop reading
                try:
                    message, payload = await self.frames.receive_body(header)
                    if isinstance(message, InvalidField):
                        await self._refuse(header.request_id, message)
                        self._release_request(held_bytes)
                        continue
                    if not isinstance(message, Request):
                        raise ProtocolError(f"{type(message).__name__} sent as a request")
                except BaseException:
                    self._release_request(held_bytes)
                    raise
                if hop_trace.ENABLED:
                    hop_trace.mark("rpc.rx_req", type(message).__name__)
                nursery.start_soon(self._handle, header.request_id, message, payload,
                                   held_bytes)
        except ProtocolError as error:
            log.warning("closing connection from %s (%s): %s", self.peer, self.role, error,
                        extra=about("connection_closed_protocol_error", peer=self.peer,
                                    role=self.role, error=str(error)))
            self._close(f"protocol error: {error}")
        except (PeerUnavailable, *CONNECTION_ERRORS) as error:
            log.debug("connection to %s ended: %s", self.peer, error)
            self._close(str(error) or type(error).__name__)

    async def _admit_request(self, held_bytes: int) -> None:
        """Wait for a request slot and for its bytes in this connection's and the
        process's budgets, in that order; all or nothing."""
        await acquire_uncontended_at_once(self._inflight)
        try:
            await self._request_bytes.acquire(held_bytes)
            try:
                await PROCESS_REQUEST_BYTES.acquire(held_bytes)
            except BaseException:
                self._request_bytes.release(held_bytes)
                raise
        except BaseException:
            self._inflight.release()
            raise

    def _release_request(self, held_bytes: int) -> None:
        PROCESS_REQUEST_BYTES.release(held_bytes)
        self._request_bytes.release(held_bytes)
        self._inflight.release()

    async def _refuse(self, request_id: int, error: InvalidField) -> None:
        """Answer a request that decoded with a field out of range; the connection lives on."""
        log.warning("refused a request from %s (%s): %s", self.peer, self.role, error,
                    extra=about("request_refused", peer=self.peer, role=self.role,
                                error=str(error)))
        await self._send(encode_frame(
            ErrorReply(code=InvalidArgument.code, message=error.message[:ERROR_TEXT_CHARS_MAX]),
            request_id, response=True))

    def _resolve(self, request_id: int, message: Message, payload: bytes) -> None:
        pending = self._pending.get(request_id)
        if pending is None:
            return  # the caller timed out and left; the late reply is dropped
        pending.reply = message
        pending.payload = payload
        pending.done.set()

    async def _handle(self, request_id: int, request: Request, payload: bytes,
                      held_bytes: int) -> None:
        try:
            reply: Message
            reply_payload = b""
            if self.handler is None:
                reply = ErrorReply(code=ProtocolError.code, message="this peer takes no requests")
            else:
                try:
                    reply, reply_payload = await self.handler(request, payload)
                except DfsError as error:
                    reply = ErrorReply(code=error.code, message=error.message,
                                        server_id=error.server_id)
            try:
                frame = encode_frame(reply, request_id, response=True, payload=reply_payload,
                                     compress=self.compress)
            except ProtocolError as error:  # a reply too large for a frame: say so instead
                frame = encode_frame(ErrorReply(code=error.code, message=error.message),
                                     request_id, response=True)
            if hop_trace.ENABLED:
                hop_trace.mark("rpc.tx_reply", type(reply).__name__)
            try:
                await self._send(frame)
            except PeerUnavailable:
                pass  # the reader sees the broken connection and ends it
        finally:
            self._release_request(held_bytes)

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for pending in self._pending.values():
            # One error each: a shared one would collect every caller's traceback.
            pending.error = PeerUnavailable(f"connection to {self.peer} lost: {reason}")
            pending.done.set()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def close(self) -> None:
        self._close("closed by us")
