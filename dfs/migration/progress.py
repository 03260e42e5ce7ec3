"""Live progress of long work (a migration, an import): one rewritten line on a
terminal, a plain line every few seconds otherwise (logs, pipes)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

MIB = 1024 * 1024
PLAIN_INTERVAL_S = 2.0


def describe(stats: dict[str, Any]) -> str:
    """A job's state in one line, from libvirt's job statistics."""
    processed = stats.get("memory_processed", 0) / MIB
    remaining = stats.get("memory_remaining", 0) / MIB
    total = stats.get("memory_total", 0) / MIB
    page = stats.get("memory_page_size", 4096)
    dirty = stats.get("memory_dirty_rate", 0) * page / MIB
    rate = stats.get("memory_bps", 0) / MIB
    parts = [f"{stats.get('time_elapsed', 0) / 1000:6.1f} s",
             f"memory {processed:,.0f} MiB sent, {remaining:,.0f} of {total:,.0f} MiB left",
             f"{rate:,.0f} MiB/s", f"dirtying {dirty:,.1f} MiB/s"]
    if "memory_iteration" in stats:
        parts.append(f"pass {stats['memory_iteration']}")
    if "downtime" in stats:
        parts.append(f"expected downtime {stats['downtime']} ms")
    if stats.get("disk_total"):
        parts.append(f"disk copy {stats.get('disk_processed', 0) / MIB:,.0f}"
                     f"/{stats['disk_total'] / MIB:,.0f} MiB")
    return ", ".join(parts)


class ProgressDisplay:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self._last_plain_s = 0.0
        self._shown = False

    def update(self, stats: dict[str, Any]) -> None:
        if stats.get("memory_total"):  # else: not started yet
            self.show(describe(stats))

    def show(self, line: str) -> None:
        """The current state: rewritten in place on a terminal, every 2 s otherwise."""
        if self.terminal:
            self.stream.write("\r\x1b[K" + line)
            self._shown = True
        elif time.monotonic() - self._last_plain_s >= PLAIN_INTERVAL_S:
            self.stream.write(line + "\n")
            self._last_plain_s = time.monotonic()
        self.stream.flush()

    def say(self, message: str) -> None:
        self.finish()
        self.stream.write(message + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self._shown = False
