"""`vmstore status`: cluster health at a glance, or complete as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec
import trio

from vmstore.cli.cluster_client import with_client
from vmstore.cli.config import add_master_argument
from vmstore.cli.status_ha import ha_degraded, ha_text
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES,
    STATUS_LOST_SETTLE_S,
    STATUS_WATCH_INTERVAL_S,
)
from vmstore.dfs.progress import ProgressDisplay
from vmstore.dfs.protocol.messages import StatusReply
from vmstore.dfs.protocol.messages.status import BackupStatus, ChunkserverStatus


def as_builtins(value: Any) -> Any:
    """Structs as dicts (the wire encodes them as arrays), recursively."""
    if isinstance(value, msgspec.Struct):
        return {name: as_builtins(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [as_builtins(item) for item in value]
    return value


def status_json(status: StatusReply) -> dict[str, Any]:
    document: dict[str, Any] = as_builtins(status)
    document["master"] = {"address": document.pop("master_address")}
    return document


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def status_text(status: StatusReply) -> str:
    chunks = status.chunks
    health = "healthy" if chunks.lost == chunks.endangered == chunks.undergoal == 0 else (
        "DATA LOST" if chunks.lost else "DEGRADED")
    if status.damaged:
        health += f"; {len(status.damaged)} chunk(s) with BAD BLOCKS in their last copy"
    if backup_overdue(status):
        health += "; metadata BACKUP OVERDUE (see below)"
    if ha_degraded(status.ha):
        health += "; metadata HA DEGRADED (see below)"
    if status.refused:
        health += f"; {len(status.refused)} chunkserver(s) REFUSED (another cluster, or older"
        health += " metadata: see below)"
    if status.refused_versions:
        health += (f"; {len(status.refused_versions)} replica(s) with a REFUSED NEWER"
                   " VERSION (see below)")
    if failing := failing_disks(status):
        health += f"; {len(failing)} chunkserver(s) with a FAILING DISK (see below)"
    lines = [
        f"master {status.master_address}: {health}",
        f"chunks: {chunks.total} total, {chunks.ok} ok, {chunks.undergoal} under goal,"
        f" {chunks.endangered} endangered, {chunks.lost} lost; {status.inodes} inodes",
        *([] if status.ha is None else ha_text(status.ha)),
        "",
        f"{'ID':>4} {'STATE':<6} {'ADDRESS':<22} {'HOST':<12} {'USED':>11} {'TOTAL':>11}"
        f" {'FREE':>11} {'RESERVED':>11} {'CHUNKS':>7}",
    ]
    for server in status.chunkservers:
        state = server_state(server)
        lines.append(f"{server.id:>4} {state:<6} {server.address:<22} {server.host:<12}"
                     f" {_size(server.bytes_used):>11} {_size(server.bytes_total):>11}"
                     f" {_size(server.bytes_free):>11} {_size(server.bytes_reserved):>11}"
                     f" {server.chunk_count:>7}")
    lines.append("")
    for server in failing:
        lines.append(f"chunkserver {server.id} ({server.address}): DISK FAILING:"
                     f" {server.disk_failing}; its replicas are being copied away (replace"
                     " or check the disk, then restart the chunkserver)")
    if failing:
        lines.append("")
    for refused in status.refused:
        lines.append(f"refused chunkserver {refused.server_uuid} at {refused.address}:"
                     f" {refused.reason}")
    if status.refused:
        lines.append("")
    for forged in status.refused_versions:
        lines.append(f"chunk {forged.chunk_id}: chunkserver {forged.server_id} claimed version"
                     f" {forged.claimed_version}, above the master's {forged.master_version},"
                     " and never held it: not adopted, quarantined there (a forgery, or an"
                     " abandoned copy)")
    if status.refused_versions:
        lines.append("")
    for damaged in status.damaged:
        lines.append(f"chunk {damaged.chunk_id} is partly damaged: its last copy (chunkserver"
                     f" {damaged.server_id}) has bad {block_ranges_text(damaged.bad_blocks)};"
                     " the rest reads")
    if status.damaged:
        lines.append("")
    if status.backups is not None:
        lines.extend([backups_text(status.backups), ""])
    if status.healing is not None:
        lines.append(healing_text(status))
    lines.append(f"write leases held: {status.write_leases}")
    lines.append(f"clients: {len(status.clients)}")
    for client in status.clients:
        lines.append(f"  session {client.session_id} {client.hostname} ({client.host_label})"
                     f" from {client.address} {client.mount_point}")
    return "\n".join(lines)


def healing_text(status: StatusReply) -> str:
    healing = status.healing
    assert healing is not None
    pending = healing.under_goal + healing.copying
    rate = healing.copied_bytes_per_s
    left = f", about {_duration(pending * CHUNK_SIZE_BYTES / rate)} left" if (
        pending and rate) else ""
    return (f"healing: {healing.under_goal} chunks waiting for a copy, {healing.copying}"
            f" copying at {rate / 2**20:,.0f} MiB/s{left}; {healing.chunks_copied} copied,"
            f" {healing.replicas_removed} surplus removed since the master started")


def backup_overdue(status: StatusReply) -> bool:
    """Scheduled backups are configured and the newest is older than their interval
    (or there is none, or the last one failed)."""
    backups = status.backups
    return backups is not None and (backups.newest_age_s < 0 or bool(backups.error)
                                    or backups.newest_age_s > backups.interval_s)


def backups_text(backups: BackupStatus) -> str:
    newest = (f"newest {backups.newest}, {_duration(backups.newest_age_s)} old"
              if backups.newest else "none yet")
    line = (f"metadata backups in {backups.directory}: {backups.count} (keeping"
            f" {backups.keep}, one every {_duration(backups.interval_s)}); {newest}")
    if backups.error:
        line += f"\nWARNING: the last scheduled backup failed: {backups.error}"
    if backups.newest_age_s < 0 or backups.newest_age_s > backups.interval_s:
        line += (f"\nWARNING: no metadata backup newer than the interval"
                 f" ({_duration(backups.interval_s)}): the master's disk is the only copy of"
                 " what changed since")
    return line


def block_ranges_text(ranges: list[tuple[int, int]]) -> str:
    """[first, end) 4 KiB block ranges as an operator reads them."""
    if not ranges:
        return "blocks (which ones is not known)"
    return "blocks " + ", ".join(
        f"{first}-{end - 1} (bytes {first * BLOCK_SIZE_BYTES}-{end * BLOCK_SIZE_BYTES - 1})"
        for first, end in ranges)


def _duration(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def degraded(status: StatusReply) -> bool:
    return bool(status.chunks.endangered or status.chunks.undergoal)


def failing_disks(status: StatusReply) -> list[ChunkserverStatus]:
    """Chunkservers up whose disk is failing: alive, yet not healthy."""
    return [s for s in status.chunkservers if s.state == "up" and s.disk_failing]


def server_state(server: ChunkserverStatus) -> str:
    """up, down, drain, failing (its disk), or silent (a client found it so since its
    last heartbeat)."""
    if server.state != "up":
        return server.state
    if server.disk_failing:
        return "failing"
    if server.suspect:
        return "silent"
    return "drain" if server.draining else "up"


def wait_until_healthy(args: argparse.Namespace) -> StatusReply:
    """Poll until no chunk is under goal, showing the healing progress."""
    display = ProgressDisplay()

    async def watch(client: Client) -> StatusReply:
        lost_since: float | None = None
        while True:
            status = await client.status()
            down = sum(1 for server in status.chunkservers if server.state == "down")
            if status.chunks.lost and down:
                # Just after a master restart every chunkserver is down until it
                # registers again: lost only if that outlasts STATUS_LOST_SETTLE_S.
                lost_since = lost_since if lost_since is not None else trio.current_time()
                settled = trio.current_time() - lost_since >= STATUS_LOST_SETTLE_S
            else:
                lost_since, settled = None, True
            if settled and (not degraded(status) or status.chunks.lost):
                display.finish()
                return status
            if lost_since is not None:
                display.show(f"waiting for {down} chunkserver(s) to register")
            else:
                display.show(healing_text(status) if status.healing else "waiting for healing")
            await trio.sleep(STATUS_WATCH_INTERVAL_S)

    return with_client(args.master, watch, role="admin")


def run_status(args: argparse.Namespace) -> int:
    if args.wait_healthy:
        status = wait_until_healthy(args)
    else:
        status = with_client(args.master, lambda client: client.status(), role="admin")
    print(json.dumps(status_json(status), indent=2) if args.json else status_text(status))
    chunks = status.chunks
    return 2 if chunks.lost or status.damaged else (
        1 if degraded(status) or status.refused or status.refused_versions
        or failing_disks(status) else 0)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="cluster health: chunkservers, chunks, clients",
        description="Show cluster health. Exit code: 0 healthy, 1 degraded, 2 data lost.",
        epilog="example: vmstore status --json | jq .chunks")
    add_master_argument(parser)
    parser.add_argument("--json", action="store_true", help="complete, machine-readable output")
    parser.add_argument("--wait-healthy", action="store_true",
                        help="first wait, showing the rebuild's progress, until no chunk is"
                        " under goal (or one is lost)")
    parser.set_defaults(handler=run_status)
