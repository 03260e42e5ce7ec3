"""Backups the master takes of its own metadata, on a schedule ([master] backup_*).

Promise: while the master runs, a backup (``dfs.metadata.backup``: SQLite's online
backup API, one snapshot, checked, fsynced, renamed into place) lands in the
directory every ``interval_s``, named ``metadata-<UTC time to the microsecond>Z.db``
so that names sort as times; after each one only the newest ``keep`` of those files
stay. The copy runs in a worker thread, never on the event loop, over a read-only
connection of its own: the master serves on. A restarted master counts the interval
from the newest backup already there. A failed backup is logged as an error, shown
by ``vmstore status`` and tried again after BACKUP_RETRY_S (or the interval, if
shorter).

``status()`` says how old the newest backup is, for `vmstore status`, which warns
when it is older than the interval.

Caveat: files in the directory named like backups are pruned as backups; give the
schedule a directory of its own.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from vmstore.dfs.constants import BACKUP_RETRY_S
from vmstore.dfs.errors import DfsError
from vmstore.dfs.log_fields import about
from vmstore.dfs.metadata.backup import backup_metadata
from vmstore.dfs.protocol.messages.status import BackupStatus

log = logging.getLogger(__name__)
_NAME = re.compile(r"metadata-\d{8}T\d{6}\.\d{6}Z\.db")


@dataclass(frozen=True)
class BackupSchedule:
    directory: Path
    interval_s: float
    keep: int

    def __post_init__(self) -> None:
        assert self.interval_s >= 1, "checked by the master's settings"
        assert self.keep >= 1, "checked by the master's settings"


class ScheduledBackups:
    def __init__(self, database: Path, schedule: BackupSchedule) -> None:
        self.database = database
        self.schedule = schedule
        self.last_error = ""

    def backups(self) -> list[Path]:
        """The schedule's backups, oldest first."""
        try:
            return sorted(path for path in self.schedule.directory.iterdir()
                          if _NAME.fullmatch(path.name))
        except OSError:
            return []

    def _newest_age_s(self) -> float | None:
        backups = self.backups()
        if not backups:
            return None
        try:
            return max(0.0, time.time() - backups[-1].stat().st_mtime)
        except OSError:
            return None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        schedule = self.schedule
        age_s = self._newest_age_s()
        wait_s = 0.0 if age_s is None else max(0.0, schedule.interval_s - age_s)
        while True:
            await trio.sleep(wait_s)
            wait_s = schedule.interval_s
            try:
                await trio.to_thread.run_sync(self.take_one)
                self.last_error = ""
            except (DfsError, OSError) as error:
                self.last_error = f"{type(error).__name__}: {error}"
                log.error("scheduled metadata backup into %s failed: %s; trying again",
                          schedule.directory, self.last_error,
                          extra=about("backup_failed", error=self.last_error))
                wait_s = min(schedule.interval_s, BACKUP_RETRY_S)

    def take_one(self) -> Path:
        """One backup now (a worker thread), then the oldest pruned; the new file."""
        now_ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 10**9))
        micro = now_ns // 1000 % 10**6
        destination = self.schedule.directory / f"metadata-{stamp}.{micro:06d}Z.db"
        summary = backup_metadata(self.database, destination)
        log.info("scheduled metadata backup: %s (generation %s, %d inodes)", destination,
                 summary.generation, summary.table_rows.get("inodes", 0),
                 extra=about("backup_taken", path=str(destination)))
        for old in self.backups()[:-self.schedule.keep]:
            old.unlink(missing_ok=True)
            log.info("pruned metadata backup %s (keeping %d)", old, self.schedule.keep)
        return destination

    def status(self) -> BackupStatus:
        backups = self.backups()
        age_s = self._newest_age_s()
        return BackupStatus(
            directory=str(self.schedule.directory), interval_s=self.schedule.interval_s,
            keep=self.schedule.keep, count=len(backups),
            newest=backups[-1].name if backups else "",
            newest_age_s=-1.0 if age_s is None else age_s, error=self.last_error)
