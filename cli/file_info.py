"""`vmstore fileinfo` and `vmstore goal`: chunks, replicas and goals of files on a mount."""

from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Any

from vmstore.cli.cluster_client import with_client
from vmstore.cli.config import add_master_argument
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import CHUNK_SIZE_BYTES, FILE_INFO_LOCATIONS_PER_CALL_MAX
from vmstore.dfs.errors import ConfigError


def inode_of(path: str) -> int:
    """A file on a vmstore mount is named by its st_ino, which is the master's inode id."""
    try:
        return os.stat(path).st_ino
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None


async def file_info(client: Client, path: str) -> dict[str, Any]:
    attrs = await client.getattr(inode_of(path))
    chunks: list[dict[str, Any]] = []
    chunk_count = -(-attrs.size_bytes // CHUNK_SIZE_BYTES)
    per_call = FILE_INFO_LOCATIONS_PER_CALL_MAX
    for first in range(0, chunk_count, per_call):
        for location in await client.chunk_locations(attrs.inode, first, per_call):
            chunks.append({
                "index": location.index, "id": location.chunk_id, "version": location.version,
                "replicas": [{"chunkserver": r.server_id, "address": f"{r.host}:{r.port}",
                              "host": r.host_label} for r in location.replicas],
            })
    return {"path": os.path.abspath(path), "inode": attrs.inode, "size": attrs.size_bytes,
            "goal": attrs.goal, "chunks": chunks}


def file_info_text(info: dict[str, Any]) -> str:
    lines = [f"{info['path']}: inode {info['inode']}, {info['size']} bytes, goal {info['goal']},"
             f" {len(info['chunks'])} chunks stored (holes are not)"]
    for chunk in info["chunks"]:
        replicas = ", ".join(f"{r['chunkserver']}@{r['host']}" for r in chunk["replicas"])
        marker = "" if len(chunk["replicas"]) >= info["goal"] else "  UNDER GOAL"
        lines.append(f"  chunk {chunk['index']:>6}  id {chunk['id']:<8} version"
                     f" {chunk['version']:<4} replicas: {replicas or 'NONE'}{marker}")
    return "\n".join(lines)


def run_fileinfo(args: argparse.Namespace) -> int:
    infos = [with_client(args.master, functools.partial(file_info, path=path), role="admin")
             for path in args.paths]
    if args.json:
        print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
    else:
        print("\n".join(file_info_text(info) for info in infos))
    return 0


async def goal(client: Client, path: str, new_goal: int | None, recursive: bool) -> str:
    inode = inode_of(path)
    if new_goal is None:
        return f"{path}: goal {(await client.getattr(inode)).goal}"
    changed = await client.set_goal(inode, new_goal, recursive)
    return f"{path}: goal {new_goal} ({changed} inodes changed)"


def run_goal(args: argparse.Namespace) -> int:
    print(with_client(args.master, lambda client: goal(client, args.path, args.goal,
                                                          args.recursive)))
    return 0


def register(subparsers: Any) -> None:
    info = subparsers.add_parser(
        "fileinfo", help="chunks, versions and replicas of files on a mount",
        epilog="example: vmstore fileinfo /var/lib/vmstore/images/web.img --json")
    info.add_argument("paths", nargs="+", metavar="PATH")
    info.add_argument("--json", action="store_true")
    add_master_argument(info)
    info.set_defaults(handler=run_fileinfo)
    goal_parser = subparsers.add_parser(
        "goal", help="show or set the replication goal of a file or directory",
        description="Without N, show the goal. With N, set it; new files in a directory"
        " inherit its goal; --recursive also changes everything below.",
        epilog="example: vmstore goal /var/lib/vmstore/images 3 --recursive")
    goal_parser.add_argument("path")
    goal_parser.add_argument("goal", nargs="?", type=int, metavar="N")
    goal_parser.add_argument("--recursive", action="store_true")
    add_master_argument(goal_parser)
    goal_parser.set_defaults(handler=run_goal)
