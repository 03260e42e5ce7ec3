"""`vmstore put|get`: copy files in and out of the cluster without a mount."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from vmstore.cli.cluster_client import with_client
from vmstore.cli.config import add_master_argument
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import FILE_COPY_BLOCK_BYTES, FILE_COPY_INFLIGHT_MAX
from vmstore.dfs.errors import NotFound


async def put(client: Client, source: str, destination: str) -> int:
    try:
        attrs = await client.resolve(destination)
    except NotFound:
        await client.makedirs(destination.rpartition("/")[0])
        attrs = await client.create_file(destination)
    await client.opened(attrs.inode, writable=True)  # EBUSY if another host writes it
    try:
        if attrs.size_bytes:
            await client.setattr(attrs.inode, size_bytes=0)
        return await _copy_in(client, source, attrs.inode)
    finally:
        await client.closed(attrs.inode, writable=True)


async def _copy_in(client: Client, source: str, inode: int) -> int:
    copied = 0
    limiter = trio.Semaphore(FILE_COPY_INFLIGHT_MAX)
    with open(source, "rb") as source_file:
        async with trio.open_nursery() as nursery:
            while block := source_file.read(FILE_COPY_BLOCK_BYTES):
                await limiter.acquire()

                async def write(offset: int = copied, data: bytes = block) -> None:
                    try:
                        await client.write(inode, offset, data)
                    finally:
                        limiter.release()

                nursery.start_soon(write)
                copied += len(block)
    await client.fsync(inode)
    return copied


async def get(client: Client, source: str, destination: str) -> int:
    attrs = await client.resolve(source)
    with open(destination, "wb") if destination != "-" else sys.stdout.buffer as out:
        for offset in range(0, attrs.size_bytes, FILE_COPY_BLOCK_BYTES):
            out.write(await client.read(attrs.inode, offset, FILE_COPY_BLOCK_BYTES,
                                        attrs.size_bytes))
    return attrs.size_bytes


def run_put(args: argparse.Namespace) -> int:
    copied = with_client(args.master, lambda client: put(client, args.source, args.destination))
    print(f"{args.source} -> {args.destination}: {copied} bytes, durable on every replica")
    return 0


def run_get(args: argparse.Namespace) -> int:
    with_client(args.master, lambda client: get(client, args.source, args.destination))
    return 0


def register(subparsers: Any) -> None:
    put_parser = subparsers.add_parser("put", help="copy a local file into the cluster",
                                       epilog="example: vmstore put disk.img /images/disk.img")
    put_parser.add_argument("source")
    put_parser.add_argument("destination", help="path in the cluster, e.g. /images/a.img")
    add_master_argument(put_parser)
    put_parser.set_defaults(handler=run_put)
    get_parser = subparsers.add_parser("get", help="copy a file out of the cluster",
                                       epilog="example: vmstore get /images/disk.img copy.img")
    get_parser.add_argument("source", help="path in the cluster")
    get_parser.add_argument("destination", help="local path, or - for stdout")
    add_master_argument(get_parser)
    get_parser.set_defaults(handler=run_get)
