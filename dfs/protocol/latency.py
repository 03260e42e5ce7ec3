"""Recent latency per peer, and the deadlines drawn from it.

Promises:
* ``LatencyTracker`` holds at most ``samples_max`` recent answer times for
  each of at most LATENCY_PEERS_MAX peers (the least recently heard peer is
  forgotten first): its memory is bounded whatever the traffic.
* ``deadline_s(peer)`` is ``multiple`` times the peer's recent p99, clamped to
  [``floor_s``, ``ceiling_s``]; with fewer than LATENCY_SAMPLES_MIN samples
  it is ``ceiling_s`` (nothing known yet: no decision on a guess). With
  stall deadlines off (``stall_deadlines_enabled``) it is ``off_s``, the old
  fixed timeout.
* Only answers are samples. A peer that hangs adds nothing, so its deadline
  does not grow with its silence; a peer that is merely busy answers slowly,
  and its deadline grows with its load.

The p99 is recomputed every LATENCY_P99_EVERY_SAMPLES samples, not per call: a sort
of LATENCY_SAMPLES_MAX floats per read would cost more than the read.

The ``VMSTORE_STALL_DEADLINES=off`` environment switch exists for measuring
the old behaviour (``deploy/bench/stall_bench.py``); it is read once, when a
tracker is made.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import trio

from vmstore.dfs.constants import (
    LATENCY_P99_EVERY_SAMPLES,
    LATENCY_PEERS_MAX,
    LATENCY_SAMPLES_MAX,
    LATENCY_SAMPLES_MIN,
)

STALL_DEADLINES_ENV = "VMSTORE_STALL_DEADLINES"


def stall_deadlines_enabled() -> bool:
    """False when the environment turns hedging and silence deadlines off (benchmarks)."""
    return os.environ.get(STALL_DEADLINES_ENV, "on").strip().lower() not in ("off", "0", "no")


@dataclass
class _Samples:
    ring: list[float] = field(default_factory=list)
    next_slot: int = 0
    since_p99: int = 0
    p99_s: float = math.inf
    slow_until_s: float = 0.0  # trio clock: tried after the others until then


class LatencyTracker:
    """Answer times per peer, and a deadline for each (see the module docstring)."""

    def __init__(self, *, floor_s: float, ceiling_s: float, multiple: float, off_s: float,
                 samples_max: int = LATENCY_SAMPLES_MAX) -> None:
        assert 0 < floor_s <= ceiling_s
        assert multiple >= 1
        assert samples_max >= LATENCY_SAMPLES_MIN
        self.floor_s = floor_s
        self.ceiling_s = ceiling_s
        self.multiple = multiple
        self.off_s = off_s
        self.enabled = stall_deadlines_enabled()
        self._samples_max = samples_max
        self._peers: OrderedDict[Hashable, _Samples] = OrderedDict()

    def _samples_of(self, peer: Hashable) -> _Samples:
        """The peer's entry, made if new, as the most recently heard."""
        samples = self._peers.get(peer)
        if samples is None:
            samples = self._peers[peer] = _Samples()
            while len(self._peers) > LATENCY_PEERS_MAX:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return samples

    def record(self, peer: Hashable, seconds: float) -> None:
        """``peer`` answered after ``seconds``; it is no longer held slow."""
        samples = self._samples_of(peer)
        if len(samples.ring) < self._samples_max:
            samples.ring.append(seconds)
        else:
            samples.ring[samples.next_slot] = seconds
            samples.next_slot = (samples.next_slot + 1) % self._samples_max
        samples.since_p99 += 1
        samples.slow_until_s = 0.0
        if len(samples.ring) >= LATENCY_SAMPLES_MIN and (
                samples.since_p99 >= LATENCY_P99_EVERY_SAMPLES or samples.p99_s == math.inf):
            samples.since_p99 = 0
            ordered = sorted(samples.ring)
            samples.p99_s = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]

    def p99_s(self, peer: Hashable) -> float:
        """The peer's recent p99 (inf: too few samples)."""
        samples = self._peers.get(peer)
        return math.inf if samples is None else samples.p99_s

    def deadline_s(self, peer: Hashable) -> float:
        """How long to wait for ``peer`` before acting as if it were silent."""
        if not self.enabled:
            return self.off_s
        p99_s = self.p99_s(peer)
        if p99_s == math.inf:
            return self.ceiling_s
        return min(self.ceiling_s, max(self.floor_s, self.multiple * p99_s))

    def hold_slow(self, peer: Hashable, for_s: float) -> None:
        """``peer`` kept a caller waiting past its deadline: prefer others for a while."""
        self._samples_of(peer).slow_until_s = trio.current_time() + for_s

    def is_slow(self, peer: Hashable) -> bool:
        samples = self._peers.get(peer)
        return samples is not None and trio.current_time() < samples.slow_until_s
