"""`vmstore recover scan|build`: the last resort when every copy of the metadata is gone
(no master data directory, no backup, no HA standby): new metadata rebuilt from the
replicas on the chunkservers, whose headers name the file (inode) and chunk index
they belong to.

1. On every chunkserver host, with its chunkservers stopped (or at least nothing
   writing):  vmstore recover scan --data-dir D [--data-dir D2 ...] > HOST.json
   (it reads every replica once, verifying its checksums; it changes nothing).
2. On the master's host, with no master running:
   vmstore recover build --from-chunkservers HOST1.json HOST2.json ... --data-dir DIR
3. Start the master on DIR, then the chunkservers. Every file is /recovered/<inode>;
   chunks no file could be found for are /recovered/lost+found/chunk-<id>.

What comes back: each file's bytes, at the newest version of each chunk found on any
chunkserver (a replica whose every block checks out preferred). What does not: names,
directories, owners, modes, times, xattrs, and the sizes, which only the metadata held.
A file's size becomes the end of its last non-zero byte, at least one byte into its
last chunk, rounded up to a multiple of --round-to (default 1 MiB): a guest image whose
size is a multiple of a MiB and whose last MiB holds any non-zero byte comes back at its
size exactly; one whose tail is zeros comes back shorter, so set it back with
`truncate -s SIZE` (qemu-img info, or the guest's XML, knows the size). --round-to 1
gives the exact end of the data (for files other than images). Replicas written before
owner records existed and never registered since are in lost+found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vmstore.cli.config import master_data_dir
from vmstore.dfs.chunkserver.recovery_scan import scan
from vmstore.dfs.constants import RECOVER_LISTED_MAX
from vmstore.dfs.errors import ConfigError, NotFound
from vmstore.dfs.metadata.recovery_build import (
    RecoveryPlan,
    plan_recovery,
    write_recovered_metadata,
)
from vmstore.dfs.protocol.recovery_report import decode_report, encode_report

DEFAULT_ROUND_TO_BYTES = 1024 * 1024


def run_scan(args: argparse.Namespace) -> int:
    report = encode_report(scan([Path(d) for d in args.data_dir]))
    if args.output:
        Path(args.output).write_bytes(report)
    else:
        sys.stdout.buffer.write(report)
    return 0


def run_build(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or master_data_dir()
    if data_dir is None:
        raise ConfigError("build where? pass --data-dir (the master's data directory)")
    reports = []
    for source in args.from_chunkservers:
        try:
            reports.append(decode_report(Path(source).read_bytes(), source))
        except OSError as error:
            raise NotFound(f"{source}: {error.strerror or error}") from None
    plan = plan_recovery(reports, args.round_to)
    database = write_recovered_metadata(plan, Path(data_dir))
    print(json.dumps(summary(plan, database), indent=2) if args.json
          else summary_text(plan, database))
    return 0


def summary(plan: RecoveryPlan, database: Path) -> dict[str, Any]:
    return {
        "database": str(database), "cluster_id": plan.cluster_id,
        "generation": plan.generation, "chunkservers": len(plan.servers),
        "files": [{"path": f"/recovered/{f.inode}", "inode": f.inode, "size": f.size_bytes,
                   "chunks": len(f.chunks)} for f in plan.files],
        "lost_found": [{"path": f"/recovered/lost+found/chunk-{f.chunks[0].chunk_id:016x}",
                        "chunk_id": f.chunks[0].chunk_id, "size": f.size_bytes}
                       for f in plan.lost],
        "unverified_chunks": plan.unverified_chunks, "unreadable": plan.unreadable,
    }


def summary_text(plan: RecoveryPlan, database: Path) -> str:
    lines = [f"wrote {database}: {len(plan.files)} files in /recovered,"
             f" {len(plan.lost)} chunks in /recovered/lost+found, from"
             f" {len(plan.servers)} chunkservers (cluster {plan.cluster_id or '(new)'},"
             f" generation {plan.generation})"]
    if plan.unverified_chunks:
        lines.append(f"WARNING: {len(plan.unverified_chunks)} chunks have no replica whose"
                     " every block checks out (their bad blocks read as errors): "
                     + ", ".join(map(str, plan.unverified_chunks[:RECOVER_LISTED_MAX])))
    if plan.unreadable:
        lines.append(f"WARNING: {len(plan.unreadable)} replica files could not be read:")
        lines.extend(f"  {line}" for line in plan.unreadable[:RECOVER_LISTED_MAX])
    lines.append("start the master on it, then the chunkservers; sizes are rounded up to"
                 " the end of each file's data (see vmstore recover --help)")
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "recover", help="rebuild lost metadata from the chunkservers' replicas (last resort)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    scanning = actions.add_parser(
        "scan", help="report this host's replicas (JSON), changing nothing",
        description="Read every replica in the data directories, verify its checksums, and"
                    " report it with the file and chunk index its header names.")
    scanning.add_argument("--data-dir", type=Path, action="append", required=True,
                          help="a chunkserver's data directory (repeat for several)")
    scanning.add_argument("--output", "-o", help="write the report here (default: stdout)")
    scanning.set_defaults(handler=run_scan)
    building = actions.add_parser(
        "build", help="write new metadata from every host's scan report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    building.add_argument("--from-chunkservers", nargs="+", required=True, metavar="REPORT",
                          help="the scan reports of every chunkserver host")
    building.add_argument("--data-dir", type=Path,
                          help="the master's data directory, empty (default: [master]"
                               " data_dir)")
    building.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO_BYTES,
                          metavar="BYTES", help="round each file's size up to a multiple of"
                          " this (default 1 MiB; 1: the exact end of its data)")
    building.add_argument("--json", action="store_true")
    building.set_defaults(handler=run_build)
