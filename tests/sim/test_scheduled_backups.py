"""Scheduled metadata backups ([master] backup_*), in process (issue 15).

Promise: the master takes a backup into its backup directory at once when there is
none and then every interval, keeps only the newest ``keep``, each one whole
metadata of its cluster; `vmstore status` shows them, and warns once the newest is
older than the interval.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import trio
import trio.testing

from vmstore.cli.status import backup_overdue, status_text
from vmstore.dfs.master.backups import BackupSchedule
from vmstore.dfs.metadata.inspection import inspect_metadata
from vmstore.dfs.testing.cluster import MASTER, open_cluster

INTERVAL_S = 600.0
KEEP = 2


async def test_backups_are_taken_pruned_and_an_old_one_is_warned_of(
        tmp_path: Path, sim_seed: int, sim_clock: trio.testing.MockClock,
        sim_logs) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "backups"
    directory.mkdir()
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        await cluster.kill(MASTER)
        await cluster.start_master(backups=BackupSchedule(directory, INTERVAL_S, KEEP))
        async with cluster.client("admin") as client:
            await client.create_file("/before.img")
            with trio.fail_after(10):
                while not list(directory.iterdir()):  # the first one at once
                    await trio.sleep(0.5)
            await trio.sleep(INTERVAL_S * 3.5)
            backups = sorted(directory.iterdir())
            assert len(backups) == KEEP, backups
            for backup in backups:
                summary = inspect_metadata(backup)
                assert summary.schema_differences == []
                assert summary.table_rows["inodes"] == 2  # the root and /before.img
            status = await client.status()
            assert status.backups is not None
            assert (status.backups.count, status.backups.newest) == (KEEP, backups[-1].name)
            assert not backup_overdue(status)
            assert "WARNING" not in status_text(status)
            old_s = time.time() - 2 * INTERVAL_S  # backups stopped long ago (by the wall clock)
            os.utime(backups[-1], (old_s, old_s))
            status = await client.status()
            assert backup_overdue(status)
            assert "WARNING: no metadata backup newer than the interval" in status_text(status)
