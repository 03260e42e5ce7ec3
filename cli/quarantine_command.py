"""`vmstore quarantine list|restore|purge`: the replicas a chunkserver was told to delete.

Runs on the chunkserver's host, on its data directory (``--data-dir``, as
given to ``vmstore chunkserver``); it talks to no daemon. A restored
replica goes back in its chunk's place; the master takes it at the
chunkserver's next registration (restart the chunkserver) if it counts its
version current, and otherwise it is quarantined again.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from vmstore.dfs.chunkserver.quarantine import Quarantine
from vmstore.dfs.errors import InvalidArgument, NotFound


def _quarantine(args: argparse.Namespace) -> Quarantine:
    data_dir: Path = args.data_dir
    if not (data_dir / "chunks").is_dir():
        raise NotFound(f"{data_dir} is no chunkserver data directory (it has no chunks/)")
    return Quarantine(data_dir)


def run_list(args: argparse.Namespace) -> int:
    entries = _quarantine(args).entries()
    if args.json:
        print(json.dumps([{"name": e.name, "chunk_id": e.chunk_id, "version": e.version,
                           "quarantined_at_ns": e.quarantined_at_ns,
                           "size_bytes": e.size_bytes} for e in entries], indent=2))
        return 0
    print(f"{len(entries)} quarantined replicas, {sum(e.size_bytes for e in entries)} bytes")
    for entry in entries:
        since = datetime.datetime.fromtimestamp(entry.quarantined_at_ns / 1e9).isoformat(
            timespec="seconds")
        print(f"  {entry.name}  chunk {entry.chunk_id} version {entry.version}, since {since},"
              f" {entry.size_bytes} bytes")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    quarantine = _quarantine(args)
    for name in args.names:
        place = quarantine.restore(name)
        print(f"restored {name} to {place}; the master sees it at the chunkserver's next"
              " registration")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    quarantine = _quarantine(args)
    names = [e.name for e in quarantine.entries()] if args.all else args.names
    if not names:
        raise InvalidArgument("purge what? NAME... (from vmstore quarantine list), or --all")
    freed = sum(quarantine.purge(name) for name in names)
    print(f"purged {len(names)} quarantined replicas, {freed} bytes freed")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "quarantine", help="list, restore or purge replicas a chunkserver was told to delete",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="what is in quarantine, oldest first")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=run_list)
    restore = actions.add_parser("restore", help="put replicas back in place")
    restore.add_argument("names", nargs="+", metavar="NAME")
    restore.set_defaults(handler=run_restore)
    purge = actions.add_parser("purge", help="delete replicas for good")
    purge.add_argument("names", nargs="*", metavar="NAME")
    purge.add_argument("--all", action="store_true", help="everything in quarantine")
    purge.set_defaults(handler=run_purge)
    for sub in (listing, restore, purge):
        sub.add_argument("--data-dir", type=Path, required=True,
                         help="the chunkserver's data directory")
