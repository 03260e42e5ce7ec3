"""An in-memory network for in-process clusters: seeded delays, retransmits, partitions,
silent hosts and crashes, as a TCP peer sees them.

Promise: every byte sent on a connection arrives once, in order, or the
connection ends; when and whether it arrives is decided by the network's
faults and its seed alone (together with the order in which trio runs the
tasks). The model, one rule per TCP behaviour a distributed system meets:

* **Latency.** Each send arrives after ``latency_s`` plus a uniform draw up
  to ``jitter_s``, never before an earlier send on the same connection:
  bytes are never reordered within a connection. Across connections, order
  is whatever the delays make it, which is how messages overtake each other
  on a real network.
* **Loss.** With probability ``loss``, a send is lost and retransmitted
  ``retransmit_s`` later; everything behind it on that connection waits for
  it (head-of-line blocking). TCP never loses bytes, it delays them.
* **A window.** At most ``WINDOW_BYTES`` sent and not yet read per direction:
  a sender to a peer that stops reading blocks, as on a full socket buffer.
* **A partition** (``partition``) or a **silent host** (``isolate``): nothing
  is delivered and nothing is reset. Bytes wait, as in a retransmitting
  kernel; a connect waits (its SYN is lost) until the caller's deadline.
  This is the failure a frozen host, a cut cable or a power loss gives, and
  the one that a clean crash never tests.
* **A crash** (``crash``): every connection of the host ends; the far ends
  read end-of-file (once they can reach the host), as after a ``kill -9``,
  whose sockets the kernel closes. Its listeners go: connects are refused
  (ECONNREFUSED), at once.

Hosts are names (``"master"``, ``"cs1"``), one per simulated process;
``host(name)`` is that process's ``Network`` (``dfs.protocol.network``).

Caveats: no bandwidth limit (a send costs its latency whatever its size);
a connect completes in no time when the far end is reachable; the far end's
accept order is the order of connects.
"""

from __future__ import annotations

import errno
import random
from collections import deque
from dataclasses import dataclass

import trio

from vmstore.dfs.protocol.network import Network

WINDOW_BYTES = 4 * 1024 * 1024
_FIRST_PORT = 10000


@dataclass(frozen=True)
class NetworkFaults:
    """What the network does to every send, drawn from the network's seed."""

    latency_s: float = 0.0001
    jitter_s: float = 0.0004
    loss: float = 0.0  # chance a send is retransmitted
    retransmit_s: float = 0.2


class _Pipe:
    """One direction of a connection: sends queued with the time they are due."""

    def __init__(self, network: SimNetwork, source: str, destination: str) -> None:
        self.network = network
        self.source = source
        self.destination = destination
        self.segments: deque[tuple[float, bytes]] = deque()
        self.unread_bytes = 0
        self.last_due_s = 0.0
        self.eof = False  # the sender closed: end-of-file once the queue is read
        self.broken = False  # the receiver closed: sends fail
        self.lot = trio.lowlevel.ParkingLot()

    def put(self, data: bytes) -> None:
        faults = self.network.faults
        draw = self.network.random
        due_s = trio.current_time() + faults.latency_s + draw.uniform(0, faults.jitter_s)
        if faults.loss and draw.random() < faults.loss:
            due_s += faults.retransmit_s
        self.last_due_s = max(due_s, self.last_due_s)
        self.segments.append((self.last_due_s, data))
        self.unread_bytes += len(data)
        self.lot.unpark_all()

    def deliverable(self) -> bool:
        return self.network.can_reach(self.source, self.destination)


class SimStream(trio.abc.Stream):
    """One end of a simulated connection."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe, peer: tuple[str, int]) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self.peer = peer
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        pipe = self._outgoing
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            if pipe.broken:
                raise trio.BrokenResourceError(f"connection to {self.peer} reset")
            if pipe.unread_bytes < WINDOW_BYTES:
                break
            await pipe.lot.park()
        if data:
            pipe.put(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        pipe = self._outgoing
        while pipe.unread_bytes >= WINDOW_BYTES and not pipe.broken and not self._closed:
            await pipe.lot.park()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        pipe = self._incoming
        while True:
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            if not pipe.deliverable():
                await pipe.lot.park()  # held back: woken when the network changes
                continue
            if not pipe.segments:
                if pipe.eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                await pipe.lot.park()
                continue
            due_s, data = pipe.segments[0]
            if due_s > trio.current_time():
                with trio.move_on_at(due_s):
                    await pipe.lot.park()
                continue
            if max_bytes is not None and len(data) > max_bytes:
                pipe.segments[0] = (due_s, data[max_bytes:])
                data = data[:max_bytes]
            else:
                pipe.segments.popleft()
            pipe.unread_bytes -= len(data)
            pipe.lot.unpark_all()  # a sender may wait for the window
            await trio.lowlevel.checkpoint()
            return data

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close this end: the peer reads end-of-file; its sends to us fail."""
        if self._closed:
            return
        self._closed = True
        self._outgoing.eof = True
        self._incoming.broken = True
        self._outgoing.lot.unpark_all()
        self._incoming.lot.unpark_all()


class _SimListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, network: SimNetwork, address: tuple[str, int]) -> None:
        self.network = network
        self.address = address
        self.send_channel, self.receive_channel = trio.open_memory_channel[SimStream](
            float("inf"))

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self.receive_channel.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("listener closed") from None

    async def aclose(self) -> None:
        self.network._forget_listener(self)
        self.send_channel.close()
        await trio.lowlevel.checkpoint()


class SimHost(Network):
    """The network as one simulated host sees it."""

    def __init__(self, network: SimNetwork, name: str) -> None:
        self.network = network
        self.name = name

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.network._connect(self.name, host, port)

    async def listen(self, host: str, port: int
                     ) -> tuple[list[trio.abc.Listener[trio.abc.Stream]], int]:
        if host != self.name:
            raise OSError(errno.EADDRNOTAVAIL, f"{self.name} cannot listen as {host}")
        listener = self.network._listen(host, port)
        return [listener], listener.address[1]

    def peer_address(self, stream: trio.abc.Stream) -> tuple[str, int]:
        assert isinstance(stream, SimStream)
        return stream.peer


class SimNetwork:
    """Every simulated host's connections, and the faults between them."""

    def __init__(self, seed: int, faults: NetworkFaults | None = None) -> None:
        self.seed = seed
        self.random = random.Random(seed)
        self.faults = faults or NetworkFaults()
        self._listeners: dict[tuple[str, int], _SimListener] = {}
        self._streams: list[SimStream] = []
        self._cut: set[frozenset[str]] = set()
        self._isolated: set[str] = set()
        self._next_port = _FIRST_PORT

    def host(self, name: str) -> SimHost:
        return SimHost(self, name)

    # --- faults -------------------------------------------------------------
    def can_reach(self, source: str, destination: str) -> bool:
        if source == destination:
            return True
        if source in self._isolated or destination in self._isolated:
            return False
        return frozenset((source, destination)) not in self._cut

    def partition(self, first: str, second: str) -> None:
        """Nothing passes between the two hosts, both ways; nothing is reset."""
        self._cut.add(frozenset((first, second)))
        self._changed()

    def isolate(self, host: str) -> None:
        """The host goes silent: nothing in or out, no reset (a frozen host, a cut cable)."""
        self._isolated.add(host)
        self._changed()

    def heal(self) -> None:
        """Every partition and silence ends; held bytes flow again."""
        self._cut.clear()
        self._isolated.clear()
        self._changed()

    def crash(self, host: str) -> None:
        """Every connection of ``host`` ends and its listeners go (a ``kill -9``)."""
        for address in [a for a in self._listeners if a[0] == host]:
            listener = self._listeners.pop(address)
            listener.send_channel.close()
        # The host's own ends close; the far ends read end-of-file and their
        # sends fail, as when the kernel closes a killed process's sockets.
        for stream in self._streams:
            if stream._outgoing.source == host:
                stream.close_now()

    def _changed(self) -> None:
        for stream in self._streams:
            stream._incoming.lot.unpark_all()
            stream._outgoing.lot.unpark_all()

    # --- connections ----------------------------------------------------------
    def _port(self) -> int:
        self._next_port += 1
        return self._next_port

    def _listen(self, host: str, port: int) -> _SimListener:
        port = port or self._port()
        if (host, port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{host}:{port} is in use")
        listener = _SimListener(self, (host, port))
        self._listeners[(host, port)] = listener
        return listener

    def _forget_listener(self, listener: _SimListener) -> None:
        if self._listeners.get(listener.address) is listener:
            del self._listeners[listener.address]

    async def _connect(self, source: str, host: str, port: int) -> SimStream:
        await trio.lowlevel.checkpoint()
        while not self.can_reach(source, host):
            # The SYN is lost and sent again; the caller's deadline ends the wait.
            await trio.sleep(self.faults.retransmit_s)
        listener = self._listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"connection to {host}:{port} refused")
        there, back = _Pipe(self, source, host), _Pipe(self, host, source)
        ours = SimStream(there, back, (host, port))
        theirs = SimStream(back, there, (source, self._port()))
        try:
            listener.send_channel.send_nowait(theirs)
        except trio.ClosedResourceError:
            raise OSError(errno.ECONNREFUSED, f"connection to {host}:{port} refused") from None
        self._streams = [stream for stream in self._streams if not stream._closed]
        self._streams += [ours, theirs]
        return ours
