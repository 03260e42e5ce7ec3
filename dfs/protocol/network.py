"""The seam between the protocol and the wire: how a process reaches peers and is reached.

Promise: every connection vmstore makes (``connect``) or accepts (``listen``)
goes through the network of the calling task, ``current()``. In a daemon
that is always ``TCP``, the kernel's sockets. ``dfs.testing.simnet``
installs an in-memory network instead, for a whole in-process cluster or
for one simulated host inside it (``using``), so the same services that the
daemons run can be driven through delays, partitions and silent peers that
are drawn from one seed.

The choice is a context variable, not a parameter threaded through every
constructor: trio copies the context into each task a task spawns, so a
simulated host's services, and every connection they open later (pools,
reconnects), stay on the network they were started on.

Caveat: only TCP connections go through here. The short-circuit read path
(``protocol.local_socket``) is an abstract Unix socket of the real network
namespace, so in-process clusters turn short-circuit reads off.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import trio


class Network(abc.ABC):
    """Where connections come from; ``TCP`` in every daemon."""

    @abc.abstractmethod
    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """A stream to host:port; OSError when refused. The caller sets the deadline."""

    @abc.abstractmethod
    async def listen(self, host: str, port: int
                     ) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], int]:
        """Listeners on host:port (0: any free port), and the port they are bound to."""

    @abc.abstractmethod
    def peer_address(self, stream: trio.abc.Stream) -> tuple[str, int]:
        """The (host, port) a stream accepted by ``listen`` comes from; OSError if gone."""


class TcpNetwork(Network):
    """The kernel's TCP sockets."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    async def listen(self, host: str, port: int
                     ) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], int]:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_port: int = listeners[0].socket.getsockname()[1]
        return list(listeners), bound_port

    def peer_address(self, stream: trio.abc.Stream) -> tuple[str, int]:
        assert isinstance(stream, trio.SocketStream)
        address = stream.socket.getpeername()
        return str(address[0]), int(address[1])


TCP = TcpNetwork()
_current: ContextVar[Network] = ContextVar("vmstore_network", default=TCP)


def current() -> Network:
    """The network of the calling task (and of the tasks it spawns)."""
    return _current.get()


@contextmanager
def using(network: Network) -> Iterator[Network]:
    """Run the block, and every task it spawns, on ``network``."""
    token = _current.set(network)
    try:
        yield network
    finally:
        _current.reset(token)
