"""Group commit: many metadata changes, one fsync.

Promise: ``GroupCommitter.run(change)`` returns only after ``change`` ran in
a transaction that is on stable storage, or raises the change's own error
with nothing of it applied. Changes queue while a batch is being written;
the next batch takes up to GROUP_COMMIT_BATCH_MAX of them, so a hundred
clients creating files cost a few fsyncs, not a hundred.

A change is a synchronous function run in the committer's worker thread on
the store's writing connection: it must not touch trio or the network. It
runs to completion, so the state it checks cannot move under it.

With metadata HA, a ``BatchJournal`` ships each batch's rows to the journal
in etcd inside the batch's transaction, before COMMIT: a batch etcd did not
take is rolled back here too, and its callers get the journal's error
(``NotLeader``), never a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import trio
from prometheus_client import Counter

from vmstore.dfs.constants import GROUP_COMMIT_BATCH_MAX
from vmstore.dfs.errors import DfsError, MasterUnavailable, NotLeader
from vmstore.dfs.log_fields import about
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.metrics import REGISTRY

log = logging.getLogger(__name__)
T = TypeVar("T")

# What group commit buys, in numbers an operator (and deploy/bench/metadata_bench.py)
# can read: transactions committed (each one SQLite commit, one fsync unless an HA
# leader's) and the changes they carried.
COMMITS = Counter("vmstore_master_commits_total", "Metadata transactions committed (group"
                  " commits; each one SQLite commit)", registry=REGISTRY)
COMMITTED_CHANGES = Counter("vmstore_master_committed_changes_total",
                            "Metadata changes committed (the group commits' members)",
                            registry=REGISTRY)


class _Job(Generic[T]):
    __slots__ = ("change", "done", "result", "error")

    def __init__(self, change: Callable[[], T]) -> None:
        self.change = change
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class BatchJournal(Protocol):
    def attach(self, store: MetadataStore) -> None:
        """Before the first batch: watch what batches change on ``store``."""

    def record(self, store: MetadataStore) -> None:
        """In the worker thread, inside the batch's transaction: put what it changed in the
        journal, or raise (NotLeader) so that nothing of it commits."""

    async def after_batch(self) -> None:
        """On the trio thread, after a batch committed and before the next one starts."""


class GroupCommitter:
    def __init__(self, store: MetadataStore, journal: BatchJournal | None = None) -> None:
        self.store = store
        self.journal = journal
        if journal is not None:
            journal.attach(store)
        self._send, self._receive = trio.open_memory_channel[_Job[Any]](GROUP_COMMIT_BATCH_MAX * 4)
        self.batches = 0
        self.changes = 0

    async def run(self, change: Callable[[], T]) -> T:
        job: _Job[T] = _Job(change)
        try:
            await self._send.send(job)
        except trio.BrokenResourceError:
            raise MasterUnavailable("the master is stopping: the change was not made") from None
        # The job is queued: even if our caller is cancelled, the change may
        # still commit; wait for it so that callers never lose track of state.
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await self._serve()
        finally:
            self._refuse_the_rest()

    def _refuse_the_rest(self) -> None:
        """Serving ends (the master stops, or an HA leader is deposed): every change
        still queued is answered now, not committed. Its caller waits shielded for an
        answer, so one left in the queue would hold the master's teardown for ever."""
        stopped = MasterUnavailable("the master is stopping: the change was not made")
        while True:
            try:
                job = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                break
            job.error = stopped
            job.done.set()
        self._receive.close()  # later sends fail at once (run answers them the same)

    async def _serve(self) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < GROUP_COMMIT_BATCH_MAX:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._commit, batch)
            for job in batch:
                job.done.set()
            if self.journal is not None:
                await self.journal.after_batch()

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with self.store.transaction():
                for job in batch:
                    try:
                        with self.store.savepoint():
                            job.result = job.change()
                    except Exception as error:  # the change's own error goes to its caller
                        job.error = error
                if self.journal is not None:
                    self.journal.record(self.store)
        except NotLeader as error:
            log.error("metadata batch of %d changes not journaled: %s", len(batch), error,
                      extra=about("metadata_commit_failed", changes=len(batch),
                                  error=str(error)))
            for job in batch:
                job.error = error
            return
        except Exception as error:
            # The commit itself failed (disk full, I/O error): nothing of the
            # batch is durable, so nobody may be told it is.
            log.error("metadata commit of %d changes failed: %s", len(batch), error,
                      extra=about("metadata_commit_failed", changes=len(batch),
                                  error=str(error)))
            for job in batch:
                job.error = DfsError(f"metadata commit failed: {error}")
            return
        self.batches += 1
        self.changes += len(batch)
        COMMITS.inc()
        COMMITTED_CHANGES.inc(len(batch))
