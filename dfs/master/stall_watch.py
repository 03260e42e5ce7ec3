"""Peers' silences as the master could hear them: a stall of the master is its own.

Promise: ``StallWatch.silent_s(last_heard_s)`` is how long a peer (a client
session, a chunkserver) has been silent in time during which this master ran
and read its sockets. When two readings of trio's clock lie more than
MASTER_STALL_S_MIN apart, the master did not run in between (SIGSTOP, a frozen
VM, a host swapping, the event loop held): nothing it could have heard in that
gap was read, so every silence counts again from the reading that found the
gap, and every peer gets a full period to be heard from before anything of it
expires. The renewals and heartbeats that waited in the sockets are read in
that period.

The gap is found by whichever reading comes first after the stall (an expiry
check or a peer heard), so the order in which trio wakes the master's tasks
does not matter. The expiry loops read the clock every
SESSION_EXPIRY_CHECK_INTERVAL_S and HEARTBEAT_INTERVAL_S, well under
MASTER_STALL_S_MIN, so a running master never takes its own timers' gaps for
a stall.

Caveats: a stall shorter than MASTER_STALL_S_MIN counts as time served (a
silence of a peer grows by it). A master that stalls longer than that again
and again, more often than once per expiry period, never expires a silent
peer: it is not fit to judge anybody's silence, and the operator sees a
warning for each stall.
"""

from __future__ import annotations

import logging
import math

import trio

from vmstore.dfs.constants import (
    HEARTBEAT_INTERVAL_S,
    MASTER_STALL_S_MIN,
    SESSION_EXPIRY_CHECK_INTERVAL_S,
)
from vmstore.dfs.log_fields import about

log = logging.getLogger(__name__)
assert max(HEARTBEAT_INTERVAL_S, SESSION_EXPIRY_CHECK_INTERVAL_S) * 2 <= MASTER_STALL_S_MIN


class StallWatch:
    def __init__(self) -> None:
        self._last_reading_s = trio.current_time()
        # When the master last ran again after a stall: no silence counts from before.
        self.resumed_s = -math.inf
        self.stalls = 0

    def now_s(self) -> float:
        """trio's clock, after noting a stall that ended just now."""
        now_s = trio.current_time()
        gap_s = now_s - self._last_reading_s
        self._last_reading_s = now_s
        if gap_s > MASTER_STALL_S_MIN:
            self.resumed_s = now_s
            self.stalls += 1
            log.warning("the master did not run for %.1f s (stopped, frozen or starved);"
                        " every client session and chunkserver gets a full period to be"
                        " heard from again", gap_s,
                        extra=about("master_stalled", seconds=round(gap_s, 3)))
        return now_s

    def silent_s(self, last_heard_s: float) -> float:
        """A peer's silence last heard at ``last_heard_s``, in time this master served."""
        now_s = self.now_s()
        return now_s - max(last_heard_s, self.resumed_s)
