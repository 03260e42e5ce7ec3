"""Exports against live daemons: a mount sees, and changes, only what its rule allows.

The cluster's files are made first with no rules; then ``[[exports]]`` go into
the config the master reads and the master restarts with them. Every
process of the test runs on 127.0.0.1, so one rule at a time decides.
Attacks go through a real FUSE mount and through the raw protocol (a client
that ignores its rule and sends what it likes), and afterwards every
replica holds what it held.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, Mount, require_fuse, vmstore_command
from tests.system.replicas import every_replica
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.errors import AccessDenied, InvalidArgument, ReadOnly, WriteRefused
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.types import ROOT_INODE

pytestmark = pytest.mark.system

GUEST = b"guest disk " * 1000
SECRET = b"another tenant " * 1000
CHUNKSERVERS_UP_TIMEOUT_S = 30.0


async def make_files(cluster: Cluster) -> dict[str, int]:
    """/guests/vm1.img, /guests/sub/, /outside/secret.img, with data; their inodes."""
    async with cluster.client() as client:
        await client.makedirs("/guests/sub")
        await client.makedirs("/outside")
        inodes = {}
        for path, data in (("/guests/vm1.img", GUEST), ("/outside/secret.img", SECRET)):
            attrs = await client.create_file(path)
            await client.write(attrs.inode, 0, data)
            await client.fsync(attrs.inode)
            inodes[path] = attrs.inode
        for path in ("/guests", "/outside"):
            inodes[path] = (await client.resolve(path)).inode
        return inodes


@asynccontextmanager
async def admin(cluster: Cluster) -> AsyncIterator[Client]:
    async with open_client(cluster.master_host, cluster.master_port, cluster.key,
                           ClientIdentity(host_label="ops", role="admin"),
                           reconnect_timeout_s=30.0) as client:
        yield client


async def restart_master_with(cluster: Cluster, exports: str) -> None:
    """The master restarted with ``exports`` in its config; returns when chunkservers are up."""
    base = cluster.config_path.read_text().split("\n[[exports]]")[0]
    cluster.config_path.write_text(base + "\n" + exports)
    await trio.to_thread.run_sync(cluster.kill, "master", signal.SIGTERM)
    await trio.to_thread.run_sync(cluster.restart, "master")
    async with admin(cluster) as client:  # admin connections are not subject to exports
        with trio.fail_after(CHUNKSERVERS_UP_TIMEOUT_S):
            while not all(s.state == "up" for s in (await client.status()).chunkservers):
                await trio.sleep(0.1)


async def test_a_subdirectory_export_cannot_be_escaped(cluster: Cluster) -> None:
    require_fuse()
    inodes = await make_files(cluster)
    await restart_master_with(cluster, '[[exports]]\nclients = ["127.0.0.1"]\n'
                              'directory = "/guests"\n')
    mount = Mount(cluster, cluster.directory / "mnt")
    try:
        root = mount.path
        assert sorted(os.listdir(root)) == ["sub", "vm1.img"], "the mount's root is /guests"
        assert os.stat(root).st_ino == ROOT_INODE
        assert os.stat(root / "sub" / "..").st_ino == ROOT_INODE
        assert (root / "vm1.img").read_bytes() == GUEST
        (root / "sub" / "new.img").write_bytes(b"written inside")
        assert (root / "sub" / "new.img").read_bytes() == b"written inside"
    finally:
        mount.force_unmount()
    async with cluster.client() as client:  # the raw protocol, from the same address
        assert {e.name for e in await client.readdir(ROOT_INODE)} == {b"sub", b"vm1.img"}
        assert (await client.getattr(inodes["/guests"])).inode == ROOT_INODE
        with pytest.raises(InvalidArgument, match="reserved"):
            await client.lookup(ROOT_INODE, b"..")
        secret, outside = inodes["/outside/secret.img"], inodes["/outside"]
        attempts = [
            client.getattr(secret), client.getattr(outside),
            client.lookup(outside, b"secret.img"), client.readdir(outside),
            client.chunk_locations(secret, 0, 1), client.opened(secret),
            client.setattr(secret, size_bytes=0), client.unlink(outside, b"secret.img"),
            client.rename(ROOT_INODE, b"vm1.img", outside, b"moved.img"),
            client.rename(outside, b"secret.img", ROOT_INODE, b"stolen.img"),
            client.link(secret, ROOT_INODE, b"stolen.img"),
            client.master.mutate(m.ClientToMasterChunkForWrite(
                session_id=0, op_id=0, inode=secret, index=0), reply_type=m.WriteLocationReply),
        ]
        for attempt in attempts:
            with pytest.raises(AccessDenied, match="outside /guests"):
                await attempt
        with pytest.raises(AccessDenied, match="sees only /guests"):
            await client.master.call(m.ClientToMasterFsck(), reply_type=m.FsckReply)
    async with admin(cluster) as client:
        assert (await client.getattr(secret)).size_bytes == len(SECRET)
        assert {e.name for e in await client.readdir(outside)} == {b"secret.img"}
        assert {e.name for e in await client.readdir(inodes["/guests"])} == {b"sub",
                                                                             b"vm1.img"}


async def test_a_read_only_export_cannot_write_by_any_path(cluster: Cluster) -> None:
    require_fuse()
    inodes = await make_files(cluster)
    guest = inodes["/guests/vm1.img"]
    async with cluster.client() as client:
        before = await every_replica(client, guest, 0, 0, len(GUEST))
    await restart_master_with(cluster, '[[exports]]\nclients = ["*"]\nread_only = true\n')
    mount = Mount(cluster, cluster.directory / "mnt")
    try:
        image = mount.path / "guests" / "vm1.img"
        assert image.read_bytes() == GUEST
        attempts = [
            lambda: os.open(image, os.O_WRONLY),
            lambda: (mount.path / "guests" / "new.img").write_bytes(b"x"),
            lambda: os.mkdir(mount.path / "made"),
            lambda: os.unlink(image),
            lambda: os.rename(image, mount.path / "renamed.img"),
            lambda: os.truncate(image, 0),
            lambda: os.chmod(image, 0o777),
            lambda: os.setxattr(image, "user.x", b"1"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as caught:
                attempt()
            assert caught.value.errno in (errno.EROFS, errno.EACCES), caught.value
    finally:
        mount.force_unmount()
    async with cluster.client() as client:  # a client that ignores the rule
        (location,) = await client.chunk_locations(guest, 0, 1)
        assert location.read_capability is not None, "reading is allowed"
        for request in [
            m.ClientToMasterChunkForWrite(session_id=0, op_id=0, inode=guest, index=0),
            m.ClientToMasterReportBadChain(session_id=0, op_id=0, inode=guest, index=0,
                                           chunk_id=location.chunk_id,
                                           version=location.version, failed_server_ids=[]),
            m.ClientToMasterSetAttr(session_id=0, op_id=0, inode=guest, size_bytes=0),
            m.ClientToMasterWriteEnd(session_id=0, op_id=0, inode=guest, size_bytes=10**9,
                                     mtime_ns=0),
            m.ClientToMasterCreate(session_id=0, op_id=0, parent=ROOT_INODE, name=b"x",
                                   mode=0o100644, uid=0, gid=0),
            m.ClientToMasterLeaseBreak(inode=guest),
        ]:
            with pytest.raises(ReadOnly, match="exported read-only to 127.0.0.1"):
                if isinstance(request, m.ClientToMasterLeaseBreak):
                    await client.master.call(request, reply_type=m.LeaseInfoReply)
                else:
                    await client.master.mutate(request, reply_type=m.Message)
        with pytest.raises(ReadOnly):
            await client.opened(guest, writable=True)
        head = location.replicas[0]
        connection = await client.io.chunkservers.get(head.host, head.port)
        for grant in (None, location.read_capability):
            with pytest.raises(WriteRefused):
                await connection.call(m.ToChunkserverWriteChunk(
                    chunk_id=location.chunk_id, version=location.version,
                    extents=[m.WriteExtent(offset_bytes=0, length_bytes=5, zero_ranges=[])],
                    chain_rest=location.replicas[1:], token=grant), b"EVIL!")
        assert await every_replica(client, guest, 0, 0, len(GUEST)) == before
        assert (await client.getattr(guest)).size_bytes == len(GUEST)


async def test_an_address_no_rule_matches_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    await restart_master_with(cluster, '[[exports]]\nclients = ["10.99.0.0/24"]\n')
    with pytest.raises(AccessDenied, match="not exported to 127.0.0.1"):
        async with cluster.client(reconnect_timeout_s=5.0):
            pass
    if os.path.exists("/dev/fuse"):
        mountpoint = tmp_path / "refused"
        mountpoint.mkdir()
        result = vmstore_command("mount", str(mountpoint), "--log-file",
                                 str(tmp_path / "mount.log"), config=cluster.config_path)
        assert result.returncode != 0
        assert "not exported to 127.0.0.1" in result.stderr
    status = vmstore_command("status", config=cluster.config_path)
    assert status.returncode == 0, status.stderr  # admin commands still work
