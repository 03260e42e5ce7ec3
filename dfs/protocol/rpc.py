"""Authenticated connections that carry many requests at once, both ways.

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
stops being read, it does not grow our memory. A listener admits at most
CONNECTIONS_PER_PEER_MAX connections from one address (handshakes included)
and CONNECTIONS_MAX in all; one over is closed at once, and the refusals are
logged once per REFUSAL_LOG_INTERVAL_S per address.

Caveat of the budgets: while a connection waits for budget it reads nothing,
replies included; a handler that calls back over its own connection could
wait on itself if that connection's budget were full of such handlers. None
does today (chains and commands go over other connections).

Caveat: a handler that raises something other than DfsError is a bug; it
propagates and takes the process down loudly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from vmstore.dfs.constants import (
    AUTH_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    CONNECTIONS_MAX,
    CONNECTIONS_PER_PEER_MAX,
    FRAME_RECEIVE_TIMEOUT_S,
    INFLIGHT_REQUESTS_PER_CONNECTION_MAX,
    REQUEST_BYTES_PER_CONNECTION_MAX,
    REQUEST_BYTES_PER_PROCESS_MAX,
    RPC_TIMEOUT_S,
)
from vmstore.dfs.errors import (
    AuthenticationFailed,
    DfsError,
    InvalidArgument,
    InvalidField,
    PeerUnavailable,
    ProtocolError,
    error_from_code,
    unwrapped_errors,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import auth, network, tls
from vmstore.dfs.protocol.codec import (
    HEADER_BYTES,
    REQUEST_ID_MAX,
    FrameHeader,
    decode_body,
    decode_header,
    decode_payload,
    encode_frame,
)
from vmstore.dfs.protocol.limits import (
    ByteBudget,
    PeerConnections,
    acquire_uncontended_at_once,
)
from vmstore.dfs.protocol.messages import (
    AuthAccepted,
    AuthChallenge,
    AuthHello,
    AuthProof,
    ErrorReply,
    Message,
    Request,
)

log = logging.getLogger(__name__)

Handler = Callable[[Request, bytes], Awaitable[tuple[Message, bytes]]]
ReplyT = TypeVar("ReplyT", bound=Message)
_RECEIVE_CHUNK_BYTES = 256 * 1024
# Payloads from this size on are received apart from the buffer (one copy less).
_PAYLOAD_IN_PARTS_BYTES_MIN = 128 * 1024
# Payloads up to this size are joined to the header in one send (one syscall
# beats avoiding a small copy); bigger ones go as a second send.
_JOIN_PAYLOAD_BYTES_MAX = 64 * 1024
_ERROR_TEXT_MAX = 1000  # of a refusal's message (it may quote the peer's bytes)
_CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
# Bytes of requests read but not yet answered, over all connections of this
# process: the most a flood of large requests can make it hold.
PROCESS_REQUEST_BYTES = ByteBudget(REQUEST_BYTES_PER_PROCESS_MAX, "requests of this process")


class FrameStream:
    """Whole frames in and out of a byte stream; sends are serialised."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self.broken = False

    async def _fill(self, wanted_bytes: int) -> None:
        while len(self._buffer) < wanted_bytes:
            data = await self.stream.receive_some(
                max(_RECEIVE_CHUNK_BYTES, wanted_bytes - len(self._buffer))
            )
            if not data:
                raise PeerUnavailable("connection closed by the peer")
            self._buffer += data

    async def receive(self) -> tuple[FrameHeader, Message | InvalidField, bytes]:
        """The next whole frame (``receive_header`` then ``receive_body``)."""
        header = await self.receive_header()
        message, payload = await self.receive_body(header)
        return header, message, payload

    async def receive_header(self) -> FrameHeader:
        """The next frame's header; its body stays unread until ``receive_body``.

        Waits for a frame's first byte as long as it takes (an idle peer is
        fine); the rest of the header must follow within FRAME_RECEIVE_TIMEOUT_S.
        """
        if not self._buffer:
            await self._fill(1)
        if len(self._buffer) >= HEADER_BYTES:  # the common case: no deadline to set
            return decode_header(self._buffer[:HEADER_BYTES])
        with trio.move_on_after(FRAME_RECEIVE_TIMEOUT_S):
            await self._fill(HEADER_BYTES)
            return decode_header(self._buffer[:HEADER_BYTES])
        raise ProtocolError(f"frame header incomplete after {FRAME_RECEIVE_TIMEOUT_S} s"
                            f" ({len(self._buffer)} bytes received)")

    async def receive_body(self, header: FrameHeader) -> tuple[Message | InvalidField, bytes]:
        """The body and payload of the frame ``header`` began, within FRAME_RECEIVE_TIMEOUT_S.

        A request with a field out of range comes as its InvalidField.
        """
        body_end = HEADER_BYTES + header.body_bytes
        frame_end = body_end + header.payload_bytes
        if len(self._buffer) >= frame_end:
            return self._decoded(header, *self._take(header))  # here: no deadline to set
        with trio.move_on_after(FRAME_RECEIVE_TIMEOUT_S):
            if header.payload_bytes < _PAYLOAD_IN_PARTS_BYTES_MIN:
                await self._fill(frame_end)
                return self._decoded(header, *self._take(header))
            await self._fill(body_end)
            return self._decoded(header, *await self._take_in_parts(header))
        raise ProtocolError(f"frame incomplete after {FRAME_RECEIVE_TIMEOUT_S} s"
                            f" ({len(self._buffer)} bytes received)")

    def _take(self, header: FrameHeader) -> tuple[bytes, bytes]:
        """The body and payload of the frame ``header`` began, whole in the buffer."""
        body_end = HEADER_BYTES + header.body_bytes
        frame_end = body_end + header.payload_bytes
        # Copies (the frame leaves the buffer now), each made once, through a view:
        # slicing the bytearray itself would copy twice.
        with memoryview(self._buffer) as view:
            body = bytes(view[HEADER_BYTES:body_end])
            payload = bytes(view[body_end:frame_end]) if header.payload_bytes else b""
        del self._buffer[:frame_end]
        return body, payload

    async def _take_in_parts(self, header: FrameHeader) -> tuple[bytes, bytes]:
        """The body (in the buffer) and a big payload, received as parts of its own
        and joined once, rather than appended to the buffer and copied out again."""
        body_end = HEADER_BYTES + header.body_bytes
        with memoryview(self._buffer) as view:
            body = bytes(view[HEADER_BYTES:body_end])
            buffered = bytes(view[body_end:body_end + header.payload_bytes])
        del self._buffer[:body_end + len(buffered)]
        parts: list[bytes | bytearray] = [buffered] if buffered else []
        missing = header.payload_bytes - len(buffered)
        while missing:
            # No more than the payload: the next frame stays in the socket.
            data = await self.stream.receive_some(missing)
            if not data:
                raise PeerUnavailable("connection closed by the peer")
            parts.append(data)
            missing -= len(data)
        whole = parts[0] if len(parts) == 1 else b"".join(parts)
        # bytes, never a bytearray: a replica stores immutable payloads in one pwrite.
        return body, whole if isinstance(whole, bytes) else bytes(whole)

    @staticmethod
    def _decoded(header: FrameHeader, body: bytes, payload: bytes
                 ) -> tuple[Message | InvalidField, bytes]:
        # The frame is consumed before its body is judged, so the stream stays
        # in step and a bad request can be answered.
        try:
            message: Message | InvalidField = decode_body(header, body)
        except InvalidField as error:
            if header.is_response:
                raise
            message = error
        return message, decode_payload(header, payload)

    async def send(self, frame: tuple[bytes, bytes | memoryview]) -> None:
        head, payload = frame
        if payload and len(payload) <= _JOIN_PAYLOAD_BYTES_MAX:
            head, payload = head + payload, b""
        if self.broken:
            raise PeerUnavailable("connection is broken")
        await acquire_uncontended_at_once(self._send_lock)  # send_all checkpoints anyway
        # A send cut off half-way leaves half a frame on the wire: after
        # that the stream can only be closed.
        completed = False
        try:
            await self.stream.send_all(head)
            if payload:
                await self.stream.send_all(payload)
            completed = True
        finally:
            self._send_lock.release()
            if not completed:
                self.broken = True


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

    def timed_out(self) -> PeerUnavailable:
        return PeerUnavailable(f"{self.connection.peer} did not answer"
                               f" {type(self.request).__name__} within {self.timeout_s} s")

    def abandon(self) -> None:
        """Stop waiting: a reply that comes later is dropped (idempotent)."""
        self.connection.forget_call(self.request_id, self.pending)


class Connection:
    """One authenticated connection. Run ``serve`` in a nursery; then ``call``."""

    def __init__(
        self, frames: FrameStream, peer: str, role: str, handler: Handler | None, compress: bool
    ) -> None:
        self.frames = frames
        self.peer = peer  # "host:port", for messages
        self.role = role  # what the peer authenticated as
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
                await self._send(encode_frame(request, request_id, payload=payload,
                                              compress=self.compress))
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
        except _CONNECTION_ERRORS as error:
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
                nursery.start_soon(self._handle, header.request_id, message, payload,
                                   held_bytes)
        except ProtocolError as error:
            log.warning("closing connection from %s (%s): %s", self.peer, self.role, error,
                        extra=about("connection_closed_protocol_error", peer=self.peer,
                                    role=self.role, error=str(error)))
            self._close(f"protocol error: {error}")
        except (PeerUnavailable, *_CONNECTION_ERRORS) as error:
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
            ErrorReply(code=InvalidArgument.code, message=error.message[:_ERROR_TEXT_MAX]),
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


# --- establishing connections ---------------------------------------------------------
async def _authenticate_connector(frames: FrameStream, key: auth.KeyMaterial, role: str,
                                  peer: str) -> None:
    nonce = auth.new_nonce()
    await frames.send(encode_frame(AuthHello(role=role, nonce=nonce), 0))
    _, challenge, _ = await frames.receive()
    if not isinstance(challenge, AuthChallenge):
        raise AuthenticationFailed(f"{peer} answered the hello with {type(challenge).__name__}")
    auth.check_nonce(challenge.nonce, peer)
    # The peer proves itself with its current key: any key we accept will do,
    # and we prove ourselves with that same key (see auth: key rotation).
    shared = next((candidate for candidate in auth.keys_for(key).accepted
                   if auth.proofs_match(auth.acceptor_proof(candidate, nonce, challenge.nonce),
                                        challenge.proof)), None)
    if shared is None:
        raise AuthenticationFailed(f"{peer} does not hold the cluster key")
    proof = auth.connector_proof(shared, nonce, challenge.nonce)
    await frames.send(encode_frame(AuthProof(proof=proof), 0))
    _, accepted, _ = await frames.receive()
    if not isinstance(accepted, AuthAccepted):
        raise AuthenticationFailed(f"{peer} refused our proof")


async def _authenticate_acceptor(
    frames: FrameStream, key: auth.KeyMaterial, peer: str, allowed_roles: frozenset[str]
) -> str:
    _, hello, _ = await frames.receive()
    if not isinstance(hello, AuthHello):
        raise AuthenticationFailed(f"{peer} began with {type(hello).__name__}, not a hello")
    if hello.role not in allowed_roles:
        raise AuthenticationFailed(f"{peer} wants role {hello.role!r}, not served here")
    auth.check_nonce(hello.nonce, peer)
    key = auth.keys_for(key).current
    nonce = auth.new_nonce()
    proof = auth.acceptor_proof(key, hello.nonce, nonce)
    await frames.send(encode_frame(AuthChallenge(nonce=nonce, proof=proof), 0))
    _, answer, _ = await frames.receive()
    if not isinstance(answer, AuthProof) or not auth.proofs_match(
        auth.connector_proof(key, hello.nonce, nonce), answer.proof
    ):
        raise AuthenticationFailed(f"{peer} ({hello.role}) does not hold the cluster key")
    await frames.send(encode_frame(AuthAccepted(), 0))
    return hello.role


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    key: auth.KeyMaterial,
    role: str,
    *,
    handler: Handler | None = None,
    compress: bool = False,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    security: tls.TransportSecurity | None = None,
) -> AsyncIterator[Connection]:
    """Connect (in TLS if this process's mode says so), authenticate both ways, and
    serve the connection while the block runs."""
    peer = f"{host}:{port}"
    security = security or tls.current()
    stream: trio.abc.Stream = await _connect(host, port, connect_timeout_s)
    try:
        with trio.fail_after(AUTH_TIMEOUT_S):
            try:
                stream = await security.connector_stream(stream, host)
            except tls.PeerSpeaksNoTls:
                await trio.aclose_forcefully(stream)
                if security.mode == "required":
                    raise
                stream = await _connect(host, port, connect_timeout_s)
                security.note_plaintext_fallback(peer)
            frames = FrameStream(stream)
            await _authenticate_connector(frames, key, role, peer)
    except AuthenticationFailed:
        await trio.aclose_forcefully(stream)
        raise  # a wrong key or certificate is not a passing fault: never retried
    except (trio.TooSlowError, DfsError, *_CONNECTION_ERRORS) as error:
        await trio.aclose_forcefully(stream)
        reason = str(error) or type(error).__name__
        raise PeerUnavailable(f"handshake with {peer} failed: {reason}") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    connection = Connection(frames, peer, "acceptor", handler, compress)
    with unwrapped_errors():
        async with trio.open_nursery() as nursery:
            await nursery.start(connection.serve)
            try:
                yield connection
            finally:
                connection.close()


async def _connect(host: str, port: int, timeout_s: float) -> trio.abc.Stream:
    try:
        with trio.fail_after(timeout_s):
            return await network.current().connect(host, port)
    except (OSError, trio.TooSlowError) as error:
        raise PeerUnavailable(f"cannot connect to {host}:{port}: {error or 'timed out'}"
                              ) from None


HandlerFactory = Callable[[Connection], Handler]


class Listening:
    """Listeners bound to their port and not yet served: whoever serves them may
    need the port first (the master reports its own address)."""

    def __init__(self, listeners: list[trio.abc.Listener[trio.abc.Stream]], port: int,
                 wire: network.Network) -> None:
        self.listeners = listeners
        self.port = port
        self.wire = wire


async def listen(host: str, port: int) -> Listening:
    """Bind host:port (0: any free port) on the current network; ``serve_listening`` next."""
    wire = network.current()
    listeners, bound_port = await wire.listen(host, port)
    return Listening(listeners, bound_port, wire)


async def serve_connections(
    host: str,
    port: int,
    key: auth.KeyMaterial,
    allowed_roles: frozenset[str],
    handler_factory: HandlerFactory,
    *,
    compress: bool = False,
    security: tls.TransportSecurity | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port; reports the bound port through ``task_status``."""
    listening = await listen(host, port)
    task_status.started(listening.port)
    await serve_listening(listening, key, allowed_roles, handler_factory, compress=compress,
                          security=security)


async def serve_listening(
    listening: Listening,
    key: auth.KeyMaterial,
    allowed_roles: frozenset[str],
    handler_factory: HandlerFactory,
    *,
    compress: bool = False,
    security: tls.TransportSecurity | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve connections on listeners from ``listen``."""
    task_status.started()
    admission = PeerConnections(CONNECTIONS_PER_PEER_MAX, CONNECTIONS_MAX)
    serve_one = functools.partial(_serve_one, key, allowed_roles, handler_factory, compress,
                                  admission, security or tls.current(), listening.wire)
    await trio.serve_listeners(serve_one, listening.listeners)


async def _serve_one(
    key: auth.KeyMaterial,
    allowed_roles: frozenset[str],
    handler_factory: HandlerFactory,
    compress: bool,
    admission: PeerConnections,
    security: tls.TransportSecurity,
    wire: network.Network,
    stream: trio.abc.Stream,
) -> None:
    try:
        address = wire.peer_address(stream)
        peer = f"{address[0]}:{address[1]}"
    except OSError:
        await trio.aclose_forcefully(stream)
        return
    with admission.admit(address[0]) as refusal:
        if refusal:
            refused = admission.refusals_to_log(address[0], trio.current_time())
            if refused:
                log.warning("refused %d connection(s) from %s: %s", refused, address[0],
                            refusal, extra=about("connection_limit", peer=address[0],
                                                 refused=refused, error=refusal))
            await trio.aclose_forcefully(stream)
            return
        try:
            with trio.fail_after(AUTH_TIMEOUT_S):
                frames = FrameStream(await security.acceptor_stream(stream, peer))
                role = await _authenticate_acceptor(frames, key, peer, allowed_roles)
        except (trio.TooSlowError, DfsError, *_CONNECTION_ERRORS) as error:
            reason = str(error) if error else "handshake timed out"
            log.warning("refused connection from %s: %s", peer, reason,
                        extra=about("connection_refused", peer=peer, error=reason))
            await trio.aclose_forcefully(stream)
            return
        connection = Connection(frames, peer, role, None, compress)
        connection.handler = handler_factory(connection)
        await connection.serve()


class ConnectionPool:
    """Long-lived connections to many peers, made on first use and remade after a break."""

    def __init__(self, nursery: trio.Nursery, key: auth.KeyMaterial, role: str,
                 compress: bool) -> None:
        self._nursery = nursery
        self._key = key
        self._role = role
        self._compress = compress
        self._connections: dict[tuple[str, int], Connection] = {}
        self._locks: dict[tuple[str, int], trio.Lock] = {}

    async def get(self, host: str, port: int) -> Connection:
        address = (host, port)
        connection = self._connections.get(address)
        if connection is not None and not connection.closed.is_set():
            return connection  # fast path: already connected
        lock = self._locks.setdefault(address, trio.Lock())
        async with lock:
            connection = self._connections.get(address)
            if connection is None or connection.closed.is_set():
                connection = await self._nursery.start(self._hold, host, port)
                self._connections[address] = connection
            return connection

    async def _hold(self, host: str, port: int, *, task_status: Any) -> None:
        async with open_connection(host, port, self._key, self._role,
                                   compress=self._compress) as connection:
            task_status.started(connection)
            await connection.closed.wait()

    def close_all(self) -> None:
        for connection in self._connections.values():
            connection.close()


