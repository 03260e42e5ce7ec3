"""The disk watch (dfs.chunkserver.disk_watch) on real threads and a real directory.

A probe stuck in the disk (a thread that never returns) marks the disk failing
once its deadline passes, and no second probe thread starts behind it; a store
call that does not return does too; a healthy disk is never marked; I/O errors
mark it only past the threshold, and ENOSPC never.
"""

from __future__ import annotations

import errno
import logging
import threading
from pathlib import Path

import trio

from vmstore.dfs.chunkserver.disk_watch import DiskWatch, probe_disk
from vmstore.dfs.constants import DISK_ERRORS_FAILING_MAX

SHORT_S = 0.05


async def test_a_healthy_disk_stays_healthy(tmp_path: Path) -> None:
    watch = DiskWatch(lambda: probe_disk(tmp_path), interval_s=0.01, probe_deadline_s=5.0)
    with trio.move_on_after(0.3):
        await watch.run()
    assert watch.probes > 3
    assert not watch.failing_reason


async def test_a_hung_probe_marks_the_disk_failing(tmp_path: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "disk failing", level=logging.ERROR, count=1)
    stuck = threading.Event()
    threads: list[int] = []

    def hung_probe() -> None:
        threads.append(threading.get_ident())
        stuck.wait(10.0)

    watch = DiskWatch(hung_probe, interval_s=SHORT_S, probe_deadline_s=SHORT_S)
    try:
        with trio.fail_after(5.0):
            await watch.run()  # returns once the disk is marked
        assert "did not finish" in watch.failing_reason
        assert watch.failed.is_set()
        assert len(threads) == 1
        watch._probe_running = False  # as if the stuck thread came back
        # Marked for good: a later good probe does not clear it.
        assert watch.failing_reason
    finally:
        stuck.set()


async def test_a_store_call_that_does_not_return_marks_the_disk(
        tmp_path: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "store call has not returned", level=logging.ERROR)
    watch = DiskWatch(lambda: probe_disk(tmp_path), interval_s=SHORT_S, call_hang_s=SHORT_S)
    watch.call_started()  # and never ended
    with trio.fail_after(5.0):
        await watch.run()
    assert "store call" in watch.failing_reason


async def test_io_errors_mark_it_past_the_threshold_but_a_full_disk_never(
        tmp_path: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "I/O errors within", level=logging.ERROR)
    watch = DiskWatch(lambda: probe_disk(tmp_path))
    for _ in range(DISK_ERRORS_FAILING_MAX * 2):
        watch.call_failed(OSError(errno.ENOSPC, "full"))
    assert not watch.failing_reason
    for _ in range(DISK_ERRORS_FAILING_MAX - 1):
        watch.call_failed(OSError(errno.EIO, "bad sector"))
    assert not watch.failing_reason
    watch.call_failed(OSError(errno.EIO, "bad sector"))
    assert "I/O errors" in watch.failing_reason


async def test_a_probe_error_marks_it(tmp_path: Path, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "probe failed", level=logging.ERROR)
    watch = DiskWatch(lambda: probe_disk(tmp_path / "gone"))  # ENOENT: its directory is gone
    with trio.fail_after(5.0):
        await watch.run()
    assert "probe failed" in watch.failing_reason
