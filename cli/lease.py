"""`vmstore lease`: who may write a file, and handing that right over or breaking it."""

from __future__ import annotations

import argparse
import json
from typing import Any

import msgspec

from vmstore.cli.cluster_client import with_client
from vmstore.cli.config import add_master_argument
from vmstore.cli.file_info import inode_of
from vmstore.dfs.client.client import Client
from vmstore.dfs.protocol.messages import LeaseInfo


async def lease(client: Client, inode: int, handover_to: str | None,
                breaking: bool) -> LeaseInfo:
    if breaking:
        return await client.lease_break(inode)
    if handover_to is not None:
        return await client.lease_handover(inode, handover_to)
    return await client.lease_info(inode)


def lease_text(path: str, info: LeaseInfo) -> str:
    if info.holder_session:
        hostname = f", hostname {info.holder_hostname}" if info.holder_hostname else ""
        address = f", from {info.holder_address}" if info.holder_address else ""
        text = (f"{path}: write lease held by host {info.holder_host}{hostname}"
                f" (session {info.holder_session}{address}, heard from"
                f" {info.silent_ms / 1000:.1f} s ago), epoch {info.epoch}")
    else:
        text = f"{path}: no write lease held; the next host to open it for writing takes it"
    if info.handover_host:
        text += (f"\n  handover waiting: host {info.handover_host} takes the lease with its"
                 " first write")
    return text


def run_lease(args: argparse.Namespace) -> int:
    inode = inode_of(args.path)
    info = with_client(args.master, lambda client: lease(
        client, inode, "" if args.cancel_handover else args.handover_to, args.breaking),
        role="admin")
    if args.json:
        print(json.dumps({"path": args.path, **msgspec.structs.asdict(info)}, indent=2))
    else:
        print(lease_text(args.path, info))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "lease", help="show, hand over or break the write lease of a file",
        description="One host at a time may write a file (a guest image): it holds the"
        " file's write lease, taken when it opens the file for writing. Without options,"
        " show who holds it. --handover-to lets HOST take it with its first write, which"
        " fences the holder from then on (live migration does this for you). --break takes"
        " it from a holder whose host you have fenced by other means (powered off).",
        epilog="examples:\n  vmstore lease /var/lib/vmstore/images/web.img\n"
        "  vmstore lease /var/lib/vmstore/images/web.img --handover-to host2\n"
        "  vmstore lease /var/lib/vmstore/images/web.img --break",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a file on a vmstore mount")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--handover-to", metavar="HOST",
                        help="host label or hostname allowed to take the lease")
    action.add_argument("--cancel-handover", action="store_true",
                        help="withdraw a handover not taken yet")
    action.add_argument("--break", dest="breaking", action="store_true",
                        help="revoke the lease now and fence its holder")
    parser.add_argument("--json", action="store_true")
    add_master_argument(parser)
    parser.set_defaults(handler=run_lease)
