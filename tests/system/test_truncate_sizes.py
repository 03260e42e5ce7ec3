"""A truncate is final: no size from before it comes back (issue 18).

The sequence that undid one: write 100,000 bytes and fsync, write 10,000 at
50,000, truncate to 40,000, write 100 at 1,000, close. The write at 50,000
left "60,000 to publish" behind; the truncate's own fsync found 60,000 below
the 100,000 already published and skipped it, so close published 60,000
and the master (which grows a file to the largest size a writer reports)
took it: 40,000 right after close, 60,000 once the kernel asked again, the
last 20,000 bytes zeros. ext4 keeps 40,000.

Checked through a real mount (stat and content right after close, and
again after the attribute cache has expired and the size would have come
back) and through the library, which had the same bug.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, Mount

pytestmark = pytest.mark.system

# Longer than the mount's attribute timeout (1 s): by then a stale size on the
# master would show in stat.
REPUBLISHED_WAIT_S = 3.0
POLL_INTERVAL_S = 0.05


def _issue_18_sequence(fd: int) -> bytes:
    """The reported operations on an open fd; returns the file's expected bytes."""
    first = os.urandom(100_000)
    assert os.write(fd, first) == len(first)
    os.fsync(fd)
    middle = os.urandom(10_000)
    assert os.pwrite(fd, middle, 50_000) == len(middle)
    os.ftruncate(fd, 40_000)
    small = os.urandom(100)
    assert os.pwrite(fd, small, 1_000) == len(small)
    expected = bytearray(first[:40_000])
    expected[1_000:1_100] = small
    return bytes(expected)


def _assert_stays(path: Path, expected: bytes, wait_s: float) -> None:
    """``path`` has exactly ``expected``, now and at every poll for ``wait_s``.

    Polled rather than slept: a size that comes back shows (and fails) at
    once; one that never does costs the whole wait, which is the point.
    """
    deadline = time.monotonic() + wait_s
    while True:
        size = os.stat(path).st_size
        assert size == len(expected), f"size {size}, expected {len(expected)}"
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    assert path.read_bytes() == expected


def test_truncate_after_a_write_is_not_undone_by_close(mount: Mount) -> None:
    path = mount.path / "truncated.img"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        expected = _issue_18_sequence(fd)
    finally:
        os.close(fd)
    assert os.stat(path).st_size == 40_000  # right after close
    _assert_stays(path, expected, REPUBLISHED_WAIT_S)
    # A fresh open asks the master (close-to-open): it must say 40,000 too.
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_size == 40_000
        assert os.pread(fd, 50_000, 0) == expected
    finally:
        os.close(fd)


async def test_library_truncate_after_a_write_is_not_undone_by_publish(
        cluster: Cluster) -> None:
    async with cluster.client() as client:
        inode = (await client.create_file("/truncated.img")).inode
        await client.opened(inode, writable=True)
        first = os.urandom(100_000)
        await client.write(inode, 0, first, wait=False)
        await client.fsync(inode)
        await client.write(inode, 50_000, os.urandom(10_000), wait=False)
        attrs = await client.setattr(inode, size_bytes=40_000)
        assert attrs.size_bytes == 40_000
        small = os.urandom(100)
        await client.write(inode, 1_000, small, wait=False)
        await client.publish_size(inode)  # what a mount's close does
        await client.closed(inode, writable=True)
        attrs = await client.getattr(inode)
        assert attrs.size_bytes == 40_000
        expected = bytearray(first[:40_000])
        expected[1_000:1_100] = small
        assert await client.read(inode, 0, 100_000, attrs.size_bytes) == expected
