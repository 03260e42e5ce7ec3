"""A migration job's progress in one line, from libvirt's job statistics."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024


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
