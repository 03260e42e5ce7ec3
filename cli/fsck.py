"""`vmstore fsck`: check the metadata against the chunkservers' reports; list damaged files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vmstore.cli.cluster_client import with_client
from vmstore.cli.config import add_master_argument
from vmstore.cli.status import as_builtins, block_ranges_text
from vmstore.dfs.protocol import messages as m


def fsck_text(report: m.FsckReply) -> str:
    lines = [f"checked {report.chunks_checked} chunks:"
             f" {len(report.problems)} with problems,"
             f" {len(report.namespace_errors)} namespace errors"]
    for problem in report.problems:
        name = problem.path or f"<unnamed inode {problem.inode}>"
        lines.append(f"  {problem.state.upper():<10} {name}  chunk {problem.chunk_index}"
                     f" (id {problem.chunk_id}): {problem.live_replicas} of {problem.goal}"
                     " replicas live")
        if problem.state == "damaged":
            lines.append(f"             bad {block_ranges_text(problem.bad_blocks)} of the"
                         " chunk; the rest reads")
    lines.extend(f"  NAMESPACE  {error}" for error in report.namespace_errors)
    return "\n".join(lines)


def run_fsck(args: argparse.Namespace) -> int:
    async def check(client: Any) -> m.FsckReply:
        reply: m.FsckReply = await client.master.call(m.ClientToMasterFsck(),
                                                      reply_type=m.FsckReply)
        return reply

    report = with_client(args.master, check, role="admin")
    print(json.dumps(as_builtins(report), indent=2) if args.json else fsck_text(report))
    if report.namespace_errors or any(p.state in ("lost", "damaged") for p in report.problems):
        return 2
    return 1 if report.problems else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fsck", help="list files with lost, damaged, endangered or under-goal chunks",
        description="Check chunk replicas against goals and the namespace's invariants."
        " Exit code: 0 clean, 1 some chunks under goal, 2 data lost or metadata broken.",
        epilog="example: vmstore fsck --json | jq '.problems[].path'")
    parser.add_argument("--json", action="store_true")
    add_master_argument(parser)
    parser.set_defaults(handler=run_fsck)
