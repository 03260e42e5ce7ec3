"""Watching this chunkserver's disk: is it failing?

Promise: a disk that hangs or returns I/O errors is marked failing within about
DISK_PROBE_INTERVAL_S + DISK_PROBE_DEADLINE_S, and stays marked for the life of
the process (``failing_reason``, ``failed``); the master link tells the master at
once, which places nothing new here and copies the replicas away. Signs, each
enough alone:

* the probe (``probe_disk``: write, fdatasync and read back PROBE_BYTES beside the
  replicas) raises an OSError, or does not finish within DISK_PROBE_DEADLINE_S;
* a store call (``DataService.disk``) has not returned after DISK_CALL_HANG_S;
* DISK_ERRORS_FAILING_MAX store calls failed with an I/O error (EIO, EROFS: a
  file system remounted read-only after errors) within DISK_ERROR_WINDOW_S. One
  bad sector is not a failing disk: its replica is rebuilt from the others.

Every store call's time goes to ``vmstore_chunkserver_disk_seconds``, errors to
``vmstore_chunkserver_disk_errors_total``, the state to
``vmstore_chunkserver_disk_failing``.

Caveats: a call hung inside a worker thread cannot be interrupted; the probe
only reports it, and no second probe starts while it is stuck (one thread at
most). A call hung inline on the event loop (``DataService.disk`` runs small
ones there) freezes the whole process: then heartbeats stop too, and the master
marks the chunkserver down (CHUNKSERVER_DOWN_AFTER_S), which is not healthy
either. A marked disk is not unmarked: restart the chunkserver once the disk is
replaced or checked (a false mark costs a drain, a missed one a guest's data).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import trio
from prometheus_client import Counter, Gauge, Histogram

from vmstore.dfs.constants import (
    DISK_CALL_HANG_S,
    DISK_ERROR_WINDOW_S,
    DISK_ERRORS_FAILING_MAX,
    DISK_PROBE_DEADLINE_S,
    DISK_PROBE_INTERVAL_S,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import LATENCY_BUCKETS_S, REGISTRY

log = logging.getLogger(__name__)
PROBE_FILE = "disk-probe"
PROBE_BYTES = 4096
# Errors that say the device or its file system is failing (ENOSPC, a full disk,
# is the space ledger's business, not a sign of a sick disk).
FAILING_ERRNOS = frozenset({errno.EIO, errno.EROFS, errno.ENXIO, errno.ENODEV})

DISK_SECONDS = Histogram(
    "vmstore_chunkserver_disk_seconds", "Time of a store call, or of a disk probe",
    ["kind"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
DISK_ERRORS = Counter("vmstore_chunkserver_disk_errors_total",
                      "Store calls and probes that failed with an OSError", ["kind"],
                      registry=REGISTRY)
DISK_FAILING = Gauge("vmstore_chunkserver_disk_failing",
                     "1 once this chunkserver's disk is marked failing", registry=REGISTRY)
CALL_SECONDS = DISK_SECONDS.labels("call")
PROBE_SECONDS = DISK_SECONDS.labels("probe")


def probe_disk(directory: Path) -> None:
    """Write, fdatasync and read back a small file in ``directory``; OSError if the disk
    refuses, ``AssertionError`` never (a mismatch is raised as EIO)."""
    pattern = os.urandom(PROBE_BYTES)
    fd = os.open(directory / PROBE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, pattern, 0)
        os.fdatasync(fd)
        if os.pread(fd, PROBE_BYTES, 0) != pattern:
            raise OSError(errno.EIO, f"{directory / PROBE_FILE}: read back other bytes")
    finally:
        os.close(fd)


class DiskWatch:
    """See the module docstring. ``DataService`` reports its store calls here."""

    def __init__(self, probe: Callable[[], None], *,
                 interval_s: float = DISK_PROBE_INTERVAL_S,
                 probe_deadline_s: float = DISK_PROBE_DEADLINE_S,
                 call_hang_s: float = DISK_CALL_HANG_S) -> None:
        self._probe = probe
        self._interval_s = interval_s
        self._probe_deadline_s = probe_deadline_s
        self._call_hang_s = call_hang_s
        self.failing_reason = ""  # "": healthy
        self.failed = trio.Event()  # set once, with failing_reason
        self._call_started_s: float | None = None  # time.perf_counter of the call running
        self._errors_at_s: deque[float] = deque(maxlen=DISK_ERRORS_FAILING_MAX)
        self._probe_running = False  # a probe thread is still inside the disk
        self.probes = 0

    # --- what store calls report (hot path: no logging, no formatting) -----------
    def call_started(self) -> float:
        self._call_started_s = started_s = time.perf_counter()
        return started_s

    def call_ended(self, started_s: float) -> None:
        self._call_started_s = None
        CALL_SECONDS.observe(time.perf_counter() - started_s)

    def call_failed(self, error: OSError) -> None:
        DISK_ERRORS.labels("call").inc()
        if error.errno not in FAILING_ERRNOS:
            return
        now_s = time.perf_counter()
        self._errors_at_s.append(now_s)
        if (len(self._errors_at_s) == DISK_ERRORS_FAILING_MAX
                and now_s - self._errors_at_s[0] <= DISK_ERROR_WINDOW_S):
            self.mark_failing(f"{DISK_ERRORS_FAILING_MAX} I/O errors within"
                              f" {DISK_ERROR_WINDOW_S:.0f} s, the last: {error}")

    # --- the watch --------------------------------------------------------------
    async def run(self) -> None:
        """Probe and look for hung calls until cancelled (or the disk is marked)."""
        while not self.failed.is_set():
            await self._probe_once()
            self._check_hung_call()
            if not self.failed.is_set():
                await trio.sleep(self._interval_s)

    def _check_hung_call(self) -> None:
        started_s = self._call_started_s
        if started_s is not None and time.perf_counter() - started_s > self._call_hang_s:
            self.mark_failing(f"a store call has not returned for"
                              f" {time.perf_counter() - started_s:.1f} s")

    async def _probe_once(self) -> None:
        if self._probe_running:
            self.mark_failing("a disk probe has not returned since the last one")
            return
        self._probe_running = True
        self.probes += 1
        started_s = time.perf_counter()

        def probe() -> None:
            try:
                self._probe()
            finally:
                self._probe_running = False

        try:
            with trio.move_on_after(self._probe_deadline_s):
                # Abandoned on the deadline: a thread stuck in the disk cannot be
                # stopped; _probe_running says whether it is still there.
                await trio.to_thread.run_sync(probe, abandon_on_cancel=True)
                PROBE_SECONDS.observe(time.perf_counter() - started_s)
                return
        except OSError as error:
            DISK_ERRORS.labels("probe").inc()
            self.mark_failing(f"the disk probe failed: {error}")
            return
        self.mark_failing(f"the disk probe (write, fdatasync, read of {PROBE_BYTES} bytes)"
                          f" did not finish within {self._probe_deadline_s:.1f} s")

    def mark_failing(self, reason: str) -> None:
        if self.failed.is_set():
            return
        self.failing_reason = reason
        self.failed.set()
        DISK_FAILING.set(1)
        log.error("disk failing: %s; the master will copy this chunkserver's replicas"
                  " away; restart it once the disk is replaced or checked", reason,
                  extra=about("disk_failing", error=reason))
