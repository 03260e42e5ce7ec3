"""Timestamps of the data path's hops, for ``deploy/bench/fsync_breakdown.py``.

Promise: off unless the environment names a directory in
``VMSTORE_HOP_TRACE`` when the process starts; off, a traced place costs one
test of ``ENABLED``. On, ``mark(event, detail)`` records
(CLOCK_MONOTONIC ns, event, detail) in memory; the records go to
``DIR/<pid>.trace`` (a first line naming the process's command line, then one
``ns event detail`` line per record) at most every FLUSH_INTERVAL_NS and at
exit. CLOCK_MONOTONIC is one clock for every process of a host, so the
records of a mount and its chunkservers can be laid on one time line.

Records are kept in a bounded list (RECORDS_MAX: past it they are dropped,
and counted in the file's last line), so a forgotten tracer never grows a
daemon's memory without end.

Caveats: a process killed with SIGKILL loses its unwritten records (at most
FLUSH_INTERVAL_NS of them); the file is written from the event loop's
thread, a few microseconds every half second while tracing is on. This is a
benchmark's instrument, not a log: nothing reads it at run time.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Final

TRACE_ENV: Final = "VMSTORE_HOP_TRACE"
FLUSH_INTERVAL_NS: Final = 500_000_000
RECORDS_MAX: Final = 1_000_000

_directory = os.environ.get(TRACE_ENV, "")
ENABLED: bool = bool(_directory)

_records: list[tuple[int, str, object]] = []
_dropped = 0
_flushed_ns = 0
_header_written = False


def mark(event: str, detail: object = "") -> None:
    """Record ``event`` now (callers test ``ENABLED`` first: off, nothing is called)."""
    global _flushed_ns, _dropped
    now_ns = time.monotonic_ns()
    if len(_records) < RECORDS_MAX:
        _records.append((now_ns, event, detail))
    else:
        _dropped += 1
    if now_ns - _flushed_ns >= FLUSH_INTERVAL_NS:
        _flushed_ns = now_ns
        flush()


def flush() -> None:
    """Append the records held to this process's trace file."""
    global _header_written
    if not _directory:
        return
    lines = []
    if not _header_written:
        lines.append("# " + " ".join(sys.argv) + "\n")
        _header_written = True
    lines.extend(f"{ns} {event} {detail}\n" for ns, event, detail in _records)
    _records.clear()
    if _dropped:
        lines.append(f"# dropped {_dropped}\n")
    with open(os.path.join(_directory, f"{os.getpid()}.trace"), "a", encoding="utf-8") as file:
        file.writelines(lines)


if ENABLED:
    os.makedirs(_directory, exist_ok=True)
    atexit.register(flush)
