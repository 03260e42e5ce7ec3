"""An open(O_CREAT) of a new file is one master round trip (issue 18 part 3).

The master creates the file, holds it for the creator's session and, for a
writer, grants the write lease, in one commit (ClientToMasterCreate with
``open_handle`` and ``write_lease``). What the separate Hold and AcquireLease
calls promised still holds: the lease keeps another host's writer out until the
last close, and the file outlives an unlink while it is open here.
"""

from __future__ import annotations

import errno
import os

import pyfuse3
import trio

from tests.fuse.kernel import FILE_MODE, ROOT, ROOT_INODE, expect_errno
from vmstore.dfs.errors import LeaseHeld
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.testing.cluster import SimCluster
from vmstore.fuse.operations import VmstoreOperations

# Requests the master answers on its own schedule, not the test's.
_BACKGROUND = frozenset({"RenewSession"})


def master_requests() -> dict[str, float]:
    """How many requests of each kind the (in-process) master has answered."""
    counts: dict[str, float] = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "vmstore_master_request_seconds_count":
                counts[sample.labels["request"]] = sample.value
    return counts


def asked_since(before: dict[str, float]) -> dict[str, float]:
    return {request: count - before.get(request, 0.0)
            for request, count in master_requests().items()
            if count != before.get(request, 0.0) and request not in _BACKGROUND}


async def test_a_create_for_writing_is_one_round_trip_and_holds_the_lease(
        operations: VmstoreOperations, cluster: SimCluster, sim_clock: trio.abc.Clock) -> None:
    client = operations.client
    before = master_requests()
    info, entry = await operations.create(ROOT_INODE, b"new", FILE_MODE, os.O_WRONLY, ROOT)
    assert asked_since(before) == {"Create": 1}
    lease = await client.lease_info(entry.st_ino)
    assert lease.holder_session == client.master.session_id
    assert lease.epoch > 0

    async with cluster.client("client2") as other:
        try:
            await other.opened(entry.st_ino, writable=True)
        except LeaseHeld:
            pass
        else:
            raise AssertionError("another host opened for writing a file created open here")

    # A new file has no file capabilities: the kernel's question before a write is
    # answered here.
    before = master_requests()
    await expect_errno(pyfuse3.ENOATTR, operations.getxattr, entry.st_ino,
                       b"security.capability", ROOT)
    assert asked_since(before) == {}

    # Held at the master for this mount: an unlinked open file lives on.
    assert await operations.write(info.fh, 0, b"kept") == 4
    await operations.unlink(ROOT_INODE, b"new", ROOT)
    await operations.fsync(info.fh, False)
    assert (await operations.getattr(entry.st_ino, ROOT)).st_size == 4

    await operations.flush(info.fh)
    await operations.release(info.fh)
    assert (await client.lease_info(entry.st_ino)).holder_session == 0
    await trio.sleep(1)
    await expect_errno(errno.ESTALE, operations.getattr, entry.st_ino, ROOT)


async def test_a_create_for_reading_takes_no_lease(operations: VmstoreOperations,
                                                   sim_clock: trio.abc.Clock) -> None:
    client = operations.client
    info, entry = await operations.create(ROOT_INODE, b"ro", FILE_MODE, os.O_RDONLY, ROOT)
    assert (await client.lease_info(entry.st_ino)).holder_session == 0
    await operations.unlink(ROOT_INODE, b"ro", ROOT)
    assert (await operations.getattr(entry.st_ino, ROOT)).st_nlink == 0  # still held
    await operations.flush(info.fh)
    await operations.release(info.fh)
    await trio.sleep(1)
    await expect_errno(errno.ESTALE, operations.getattr, entry.st_ino, ROOT)


def not_durable_commits() -> float:
    value = REGISTRY.get_sample_value("vmstore_master_metadata_commits_not_durable")
    assert value is not None, "the master's committer exports its not-durable commits"
    return value


async def test_an_fsync_makes_the_files_create_durable_first(
        operations: VmstoreOperations, sim_clock: trio.abc.Clock) -> None:
    """The master answers a create before it is on stable storage (issue 18 part 3): an
    fsync of the new file, or of its directory, waits until it is, with one round trip
    only when this mount has changes that may not be durable yet."""
    info, entry = await operations.create(ROOT_INODE, b"made", FILE_MODE, os.O_RDWR, ROOT)
    before = master_requests()
    await operations.fsync(info.fh, False)  # nothing written: no size to tell
    assert asked_since(before) == {"SyncMetadata": 1}
    assert not_durable_commits() == 0

    before = master_requests()
    await operations.fsync(info.fh, False)
    await operations.fsyncdir(ROOT_INODE, False)
    assert asked_since(before) == {}  # known durable: no round trip

    await operations.write(info.fh, 0, b"grown")
    before = master_requests()
    await operations.fsync(info.fh, True)  # the size goes durable, and covers the rest
    asked = asked_since(before)
    assert asked["WriteEnd"] == 1
    assert "SyncMetadata" not in asked
    await operations.flush(info.fh)
    await operations.release(info.fh)

    await operations.mkdir(ROOT_INODE, b"dir", 0o755, ROOT)
    before = master_requests()
    await operations.fsyncdir(ROOT_INODE, False)
    assert asked_since(before) == {"SyncMetadata": 1}
    assert not_durable_commits() == 0


def metadata_syncs() -> float:
    value = REGISTRY.get_sample_value("vmstore_master_metadata_syncs_total")
    assert value is not None, "the master's committer counts its syncs"
    return value


async def test_closing_a_file_that_keeps_its_name_costs_the_master_no_fsync(
        operations: VmstoreOperations, sim_clock: trio.abc.Clock) -> None:
    """The last close here asks the master whether the file was an orphan to delete
    (ClientToMasterHold): for a file that still has its name, that changes nothing
    and needs no fsync, now or later."""
    info, entry = await operations.create(ROOT_INODE, b"kept", FILE_MODE, os.O_RDONLY, ROOT)
    await operations.flush(info.fh)
    await operations.release(info.fh)
    await trio.sleep(1)  # whatever was lazy before is synced by now
    syncs = metadata_syncs()
    info = await operations.open(entry.st_ino, os.O_RDONLY, ROOT)
    await operations.flush(info.fh)
    await operations.release(info.fh)
    await trio.sleep(1)
    assert metadata_syncs() == syncs
    assert not_durable_commits() == 0
