"""Bounds on what peers can make a process hold: request bytes and connections.

Promises:
* ``ByteBudget``: the bytes held at once never exceed its capacity; waiters
  are served in arrival order, so a large request is not starved by small
  ones, and a cancelled waiter leaves nothing held.
* ``PeerConnections``: at most ``per_peer`` connections from one address
  and ``total`` in all are admitted, counting those still in their
  handshake, so a peer that opens sockets and says nothing exhausts only
  its own share.

Every connection has a budget of its own and shares the process's: one
peer's flood of large requests stops being read at its own share while
other peers keep theirs (the in-flight request count is bounded too, in rpc).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio

from vmstore.dfs.constants import REFUSAL_LOG_INTERVAL_S


class _Acquirable(Protocol):
    def acquire_nowait(self) -> None: ...
    async def acquire(self) -> None: ...


async def acquire_uncontended_at_once(resource: _Acquirable) -> None:
    """Take a trio Lock, Semaphore or CapacityLimiter: at once (no checkpoint, so
    no scheduler round) when it is free, else by waiting for it. For hot paths
    that checkpoint soon anyway (a send, a receive)."""
    try:
        resource.acquire_nowait()
    except trio.WouldBlock:
        await resource.acquire()


class ByteBudget:
    def __init__(self, capacity_bytes: int, name: str) -> None:
        self.capacity_bytes = capacity_bytes
        self.name = name
        self.used_bytes = 0
        self._waiters: deque[tuple[int, trio.Event]] = deque()

    async def acquire(self, wanted_bytes: int) -> None:
        if wanted_bytes > self.capacity_bytes:
            raise ValueError(f"{self.name}: {wanted_bytes} bytes exceed the whole budget"
                             f" of {self.capacity_bytes}")
        if not self._waiters and self.used_bytes + wanted_bytes <= self.capacity_bytes:
            self.used_bytes += wanted_bytes
            return
        granted = trio.Event()
        entry = (wanted_bytes, granted)
        self._waiters.append(entry)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release(wanted_bytes)  # granted just as we were cancelled
            else:
                self._waiters.remove(entry)
                self._grant_waiters()  # we may have been blocking smaller ones behind us
            raise

    def release(self, released_bytes: int) -> None:
        self.used_bytes -= released_bytes
        self._grant_waiters()

    def _grant_waiters(self) -> None:
        while self._waiters and self.used_bytes + self._waiters[0][0] <= self.capacity_bytes:
            wanted_bytes, granted = self._waiters.popleft()
            self.used_bytes += wanted_bytes
            granted.set()


@dataclass
class PeerConnections:
    per_peer: int
    total: int
    _by_peer: dict[str, int] = field(default_factory=dict)
    _count: int = 0
    _refusals_unlogged: dict[str, int] = field(default_factory=dict)
    _last_logged_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def admit(self, peer_address: str) -> Iterator[str]:
        """Hold a connection slot for the block, which gets "" -- or, if no slot is
        free, the reason (naming the limit), and holds nothing."""
        held = self._by_peer.get(peer_address, 0)
        if held >= self.per_peer:
            yield (f"{peer_address} already has {held} connections (at most {self.per_peer}"
                   " per address)")
            return
        if self._count >= self.total:
            yield f"{self._count} connections open (at most {self.total})"
            return
        self._by_peer[peer_address] = held + 1
        self._count += 1
        try:
            yield ""
        finally:
            self._count -= 1
            remaining = self._by_peer[peer_address] - 1
            if remaining:
                self._by_peer[peer_address] = remaining
            else:
                del self._by_peer[peer_address]

    def refusals_to_log(self, peer_address: str, now_s: float) -> int:
        """How many refusals of this peer to report now: 0 while its last report is
        younger than REFUSAL_LOG_INTERVAL_S (a flood must not flood the log too)."""
        unlogged = self._refusals_unlogged.get(peer_address, 0) + 1
        if now_s - self._last_logged_s.get(peer_address, -REFUSAL_LOG_INTERVAL_S) < (
                REFUSAL_LOG_INTERVAL_S):
            self._refusals_unlogged[peer_address] = unlogged
            return 0
        self._last_logged_s[peer_address] = now_s
        self._refusals_unlogged.pop(peer_address, None)
        return unlogged
