"""Authenticated connections that carry many requests at once, both ways:
establishing them, and the one place the rest of vmstore imports them from.

The layer is three modules, each under the next: ``frames`` (FrameStream:
whole frames in and out of a byte stream), ``connection`` (Connection:
requests both ways on one connection, with its promise and budgets) and this
one (opening, accepting and pooling connections, and the handshakes that
authenticate both ends). Every name of the three that callers use is
importable from here.

Promise: ``open_connection`` returns a served, authenticated Connection or
raises — ``AuthenticationFailed`` for a wrong key or certificate (never
retried), ``PeerUnavailable`` for anything passing — within its connect
timeout plus AUTH_TIMEOUT_S. A listener admits at most
CONNECTIONS_PER_PEER_MAX connections from one address (handshakes included)
and CONNECTIONS_MAX in all; one over is closed at once, and the refusals are
logged once per REFUSAL_LOG_INTERVAL_S per address. A peer that fails the
handshake is closed with a logged reason; the listener serves on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from vmstore.dfs.constants import (
    AUTH_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    CONNECTIONS_MAX,
    CONNECTIONS_PER_PEER_MAX,
)
from vmstore.dfs.errors import (
    AuthenticationFailed,
    DfsError,
    PeerUnavailable,
    unwrapped_errors,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import auth, network, tls
from vmstore.dfs.protocol.codec import encode_frame
from vmstore.dfs.protocol.connection import (
    CONNECTION_ERRORS,
    PROCESS_REQUEST_BYTES,
    Connection,
    Handler,
    OutgoingCall,
    ReplyT,
)
from vmstore.dfs.protocol.frames import FrameStream
from vmstore.dfs.protocol.limits import PeerConnections
from vmstore.dfs.protocol.messages import (
    AuthAccepted,
    AuthChallenge,
    AuthHello,
    AuthProof,
)

__all__ = [
    "PROCESS_REQUEST_BYTES",
    "Connection",
    "ConnectionPool",
    "FrameStream",
    "Handler",
    "HandlerFactory",
    "Listening",
    "OutgoingCall",
    "ReplyT",
    "listen",
    "open_connection",
    "serve_connections",
    "serve_listening",
]

log = logging.getLogger(__name__)


async def _authenticate_connector(frames: FrameStream, key: auth.KeyMaterial, role: str,
                                  identity: str, peer: str) -> None:
    # First, before a byte is sent: a credential file of another role cannot prove this.
    credentials = auth.credentials_for(key, role, identity)
    nonce = auth.new_nonce()
    await frames.send(encode_frame(AuthHello(role=role, nonce=nonce, identity=identity), 0))
    _, challenge, _ = await frames.receive()
    if not isinstance(challenge, AuthChallenge):
        raise AuthenticationFailed(f"{peer} answered the hello with {type(challenge).__name__}")
    auth.check_nonce(challenge.nonce, peer)
    # The peer proves itself with our credential under its current key: any key we
    # accept will do, and we prove ourselves with that same one (see auth: key rotation).
    shared = next((candidate for candidate in credentials
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
) -> tuple[str, str]:
    """The role and identity (a chunkserver's uuid) the connector proved."""
    _, hello, _ = await frames.receive()
    if not isinstance(hello, AuthHello):
        raise AuthenticationFailed(f"{peer} began with {type(hello).__name__}, not a hello")
    if hello.role not in allowed_roles:
        raise AuthenticationFailed(f"{peer} wants role {hello.role!r}, not served here")
    problem = auth.claim_problem(hello.role, hello.identity)
    if problem:
        raise AuthenticationFailed(f"{peer}: {problem}")
    auth.check_nonce(hello.nonce, peer)
    credential = auth.credentials_for(key, hello.role, hello.identity)[0]
    nonce = auth.new_nonce()
    proof = auth.acceptor_proof(credential, hello.nonce, nonce)
    await frames.send(encode_frame(AuthChallenge(nonce=nonce, proof=proof), 0))
    _, answer, _ = await frames.receive()
    if not isinstance(answer, AuthProof) or not auth.proofs_match(
        auth.connector_proof(credential, hello.nonce, nonce), answer.proof
    ):
        who = f"chunkserver {hello.identity}" if hello.identity else hello.role
        raise AuthenticationFailed(f"{peer} ({who}) does not hold its credential")
    await frames.send(encode_frame(AuthAccepted(), 0))
    return hello.role, hello.identity


@asynccontextmanager
async def open_connection(
    host: str,
    port: int,
    key: auth.KeyMaterial,
    role: str,
    *,
    identity: str = "",
    handler: Handler | None = None,
    compress: bool = False,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    security: tls.TransportSecurity | None = None,
    wire: network.Network | None = None,
) -> AsyncIterator[Connection]:
    """Connect (in TLS if this process's mode says so), authenticate both ways, and
    serve the connection while the block runs. ``role`` and ``identity`` (a
    chunkserver's uuid) are what this side proves (``auth.credential``). ``wire``: the
    network to connect over (default: the calling task's, ``network.current()``)."""
    peer = f"{host}:{port}"
    security = security or tls.current()
    wire = wire or network.current()
    stream: trio.abc.Stream = await _connect(wire, host, port, connect_timeout_s)
    try:
        with trio.fail_after(AUTH_TIMEOUT_S):
            try:
                stream = await security.connector_stream(stream, host)
            except tls.PeerSpeaksNoTls:
                await trio.aclose_forcefully(stream)
                if security.mode == "required":
                    raise
                stream = await _connect(wire, host, port, connect_timeout_s)
                security.note_plaintext_fallback(peer)
            frames = FrameStream(stream)
            await _authenticate_connector(frames, key, role, identity, peer)
    except AuthenticationFailed:
        await trio.aclose_forcefully(stream)
        raise  # a wrong key or certificate is not a passing fault: never retried
    except (trio.TooSlowError, DfsError, *CONNECTION_ERRORS) as error:
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


async def _connect(wire: network.Network, host: str, port: int, timeout_s: float
                   ) -> trio.abc.Stream:
    try:
        with trio.fail_after(timeout_s):
            return await wire.connect(host, port)
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
                role, identity = await _authenticate_acceptor(frames, key, peer,
                                                              allowed_roles)
        except (trio.TooSlowError, DfsError, *CONNECTION_ERRORS) as error:
            reason = str(error) if error else "handshake timed out"
            log.warning("refused connection from %s: %s", peer, reason,
                        extra=about("connection_refused", peer=peer, error=reason))
            await trio.aclose_forcefully(stream)
            return
        connection = Connection(frames, peer, role, None, compress, identity)
        connection.handler = handler_factory(connection)
        await connection.serve()


class ConnectionPool:
    """Long-lived connections to many peers, made on first use and remade after a break."""

    def __init__(self, nursery: trio.Nursery, key: auth.KeyMaterial, role: str,
                 compress: bool, identity: str = "") -> None:
        self._nursery = nursery
        self._key = key
        self._role = role
        self._identity = identity  # a chunkserver's uuid
        self._compress = compress
        # The network the pool was made on: connections made later, from any
        # task, go over it (in-process clusters run several hosts in one task).
        self._wire = network.current()
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
                                   identity=self._identity, compress=self._compress,
                                   wire=self._wire) as connection:
            task_status.started(connection)
            await connection.closed.wait()

    def close_all(self) -> None:
        for connection in self._connections.values():
            connection.close()
