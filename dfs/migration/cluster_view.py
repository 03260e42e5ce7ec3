"""The vmstore side of a migration: mounts, image files and their write leases.

Synchronous calls for the coordinator (which also drives blocking libvirt
calls); each opens a short operator session (role ``admin``: it holds no
files and takes no leases) and closes it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.constants import MIGRATION_MASTER_TIMEOUT_S
from vmstore.dfs.errors import NotFound
from vmstore.dfs.migration.hosts import ClusterAccess
from vmstore.dfs.protocol import messages as m

T = TypeVar("T")


def run_with_client(access: ClusterAccess, role: str,
                    work: Callable[[Client], Awaitable[T]]) -> T:
    """``work`` with a short session of ``role``, from synchronous code."""
    async def main() -> T:
        async with open_client(access.master_host, access.master_port, access.key,
                               ClientIdentity(host_label=access.host_label, role=role),
                               reconnect_timeout_s=MIGRATION_MASTER_TIMEOUT_S,
                               other_masters=access.other_masters) as client:
            return await work(client)

    return trio.run(main)


@dataclass(frozen=True)
class ImageFile:
    path: str  # as the guest's XML names it, under the mount point
    inode: int
    size_bytes: int
    allocated_bytes: int


class ClusterView:
    def __init__(self, access: ClusterAccess) -> None:
        self.access = access
        self.mount = access.mount

    def _run(self, work: Callable[[Client], Awaitable[T]]) -> T:
        return run_with_client(self.access, "admin", work)

    def relative(self, path: str) -> str | None:
        """The path inside the cluster, or None when ``path`` is not on the mount."""
        prefix = self.mount.rstrip("/") + "/"
        return path[len(prefix) - 1:] if path.startswith(prefix) else None

    def mounted_hosts(self) -> dict[str, set[str]]:
        """{host label: mount points} of every live client session."""
        async def work(client: Client) -> list[m.ClientStatus]:
            return (await client.status()).clients

        mounted: dict[str, set[str]] = {}
        for session in self._run(work):
            mounted.setdefault(session.host_label, set()).add(session.mount_point.rstrip("/"))
        return mounted

    def images(self, paths: list[str]) -> dict[str, ImageFile | None]:
        """Each path's file on the cluster, or None if the cluster has no such file."""
        async def work(client: Client) -> dict[str, ImageFile | None]:
            found: dict[str, ImageFile | None] = {}
            for path in paths:
                relative = self.relative(path)
                try:
                    attrs = None if relative is None else await client.resolve(relative)
                except NotFound:
                    attrs = None
                found[path] = None if attrs is None else ImageFile(
                    path, attrs.inode, attrs.size_bytes, attrs.allocated_bytes)
            return found

        return self._run(work)

    def hand_over(self, images: list[ImageFile], to_label: str) -> None:
        """Let ``to_label``'s first write take each image's lease ("" cancels)."""
        async def work(client: Client) -> None:
            for image in images:
                await client.lease_handover(image.inode, to_label)

        self._run(work)

    def break_leases(self, images: list[ImageFile]) -> None:
        async def work(client: Client) -> None:
            for image in images:
                await client.lease_break(image.inode)

        self._run(work)

    def leases(self, images: list[ImageFile]) -> dict[str, m.LeaseInfo]:
        async def work(client: Client) -> dict[str, m.LeaseInfo]:
            return {image.path: await client.lease_info(image.inode) for image in images}

        return self._run(work)


RECORDS_DIRECTORY = "/.vmstore/guests"


@dataclass(frozen=True)
class GuestRecord:
    """The last known definition of a guest and where it ran, kept on the cluster itself."""

    name: str
    host: str  # the vmstore host label of the host it runs on
    running: bool
    xml: str  # the persistent (inactive) definition


class GuestRecords:
    """``/.vmstore/guests/NAME.json`` on the cluster: what ``failover`` restarts.

    Written by ``vmstore guests record`` (run it from a timer) and after
    every move; read when a host is dead and its libvirtd cannot be asked.
    """

    def __init__(self, access: ClusterAccess) -> None:
        self.access = access

    def _run(self, work: Callable[[Client], Awaitable[T]]) -> T:
        # role "client": writing a record takes (and drops) its write lease
        return run_with_client(self.access, "client", work)

    def save(self, records: list[GuestRecord], forget: frozenset[str] = frozenset()) -> None:
        """Write ``records``; drop the records of guests named in ``forget``."""
        async def work(client: Client) -> None:
            directory = await client.makedirs(RECORDS_DIRECTORY)
            for record in records:
                await _write_whole(client, f"{RECORDS_DIRECTORY}/{record.name}.json",
                                   json.dumps(dataclasses.asdict(record)).encode())
            for name in forget - {record.name for record in records}:
                try:
                    await client.unlink(directory.inode, f"{name}.json".encode())
                except NotFound:
                    pass

        self._run(work)

    def load(self) -> list[GuestRecord]:
        async def work(client: Client) -> list[GuestRecord]:
            try:
                directory = await client.resolve(RECORDS_DIRECTORY)
            except NotFound:
                return []
            records = []
            cookie = 0
            while entries := await client.readdir(directory.inode, cookie):
                cookie = entries[-1].cookie
                for entry in entries:
                    if entry.name.endswith(b".json"):
                        size = entry.attrs.size_bytes
                        data = await client.read(entry.attrs.inode, 0, size, size)
                        records.append(GuestRecord(**json.loads(data)))
            return records

        return self._run(work)


async def _write_whole(client: Client, path: str, data: bytes) -> None:
    try:
        attrs = await client.resolve(path)
    except NotFound:
        attrs = await client.create_file(path, 0o600)
    await client.opened(attrs.inode, writable=True)
    try:
        await client.setattr(attrs.inode, size_bytes=0)
        await client.write(attrs.inode, 0, data)
        await client.fsync(attrs.inode)
    finally:
        await client.closed(attrs.inode, writable=True)
