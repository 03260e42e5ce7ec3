"""Group commit: many metadata changes, one fsync.

Promise: ``GroupCommitter.run(change)`` returns only after ``change`` ran in
a transaction that is on stable storage (for a lazy change: committed, see
below), or raises the change's own error with nothing of it applied.
Changes queue while a batch is being written; the next batch takes up to
GROUP_COMMIT_BATCH_MAX of them, so a hundred clients creating files cost a
few fsyncs, not a hundred.

A change is a synchronous function run on the store's writing connection, in
the committer's worker thread (a batch of lazy changes: on the trio thread,
``_commit_lazy_batch``): it must not touch trio or the network. It runs to
completion, so the state it checks cannot move under it.

With metadata HA, a ``BatchJournal`` ships each batch's rows to the journal
in etcd inside the batch's transaction, before COMMIT: a batch etcd did not
take is rolled back here too, and its callers get the journal's error
(``NotLeader``), never a reply.

Lazy changes (``run(change, durable=False)``, the embedded master with
``syncs_commits``: its store does not fsync each commit). A lazy change
returns once committed: in the WAL, so a master killed (-9) or restarted
keeps it, but on stable storage only within METADATA_SYNC_DELAY_S_MAX, or
sooner, at the next durable change or ``sync()``. Every sync covers every
commit before it, and SQLite recovers a prefix of the commits after an OS
crash, so what a crash of the host can take back is a suffix of lazy
changes only, never one a durable change came after. A change that must
not be lost that way (one whose effects leave the master: chunks freed for
deletion) calls ``insist_durable()`` while it runs. Without
``syncs_commits`` every change is durable at commit (by the store's FULL
fsync, or by the HA journal) and ``durable`` is moot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import trio
from prometheus_client import Counter, Gauge

from vmstore.dfs.constants import GROUP_COMMIT_BATCH_MAX, METADATA_SYNC_DELAY_S_MAX
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
NOT_DURABLE = Gauge("vmstore_master_metadata_commits_not_durable", "Commits not yet on stable"
                    " storage (lazy namespace changes; durable within"
                    " METADATA_SYNC_DELAY_S_MAX)", registry=REGISTRY)
SYNCS = Counter("vmstore_master_metadata_syncs_total", "fsyncs that made lazily committed"
                " metadata changes durable (embedded master)", registry=REGISTRY)


class _Job(Generic[T]):
    __slots__ = ("change", "durable", "done", "result", "error")

    def __init__(self, change: Callable[[], T], durable: bool) -> None:
        self.change = change
        self.durable = durable
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
    def __init__(self, store: MetadataStore, journal: BatchJournal | None = None, *,
                 syncs_commits: bool = False) -> None:
        """``syncs_commits``: ``store`` does not fsync its commits (opened with
        ``fsync_commits`` off) and there is no journal: this committer makes them
        durable itself (the module docstring)."""
        assert not (syncs_commits and journal is not None), "the journal makes commits durable"
        self.store = store
        self.journal = journal
        if journal is not None:
            journal.attach(store)
        self.syncs_commits = syncs_commits
        self._send, self._receive = trio.open_memory_channel[_Job[Any]](GROUP_COMMIT_BATCH_MAX * 4)
        self.batches = 0  # committed; with syncs_commits, durable up to durable_batches
        self.changes = 0
        self.durable_batches = 0
        self._batch_durable = False  # the worker's, for the batch it runs: sync after COMMIT
        self._lazy_committed = trio.Event()  # set while some commit is not yet durable
        self._sync_lock = trio.Lock()

    def insist_durable(self) -> None:
        """From inside a running change: its batch is durable before any reply."""
        self._batch_durable = True

    async def sync(self) -> None:
        """Every change committed before this call is on stable storage when it returns."""
        target = self.batches
        if not self.syncs_commits or self.durable_batches >= target:
            return  # fast path: nothing lazy is waiting
        async with self._sync_lock:
            if self.durable_batches >= target:
                return  # a sync that ran while this waited covered it
            reached = self.batches
            # Shielded: the fsync runs on in its thread anyway, and the count must
            # move only with what it made durable.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.store.sync)
            SYNCS.inc()
            self._durable_through(reached)

    def _durable_through(self, batches: int) -> None:
        self.durable_batches = max(self.durable_batches, batches)
        NOT_DURABLE.set(self.batches - self.durable_batches)
        if self.durable_batches >= self.batches and self._lazy_committed.is_set():
            # A new event only once the syncing task is past its wait on the old one.
            self._lazy_committed = trio.Event()

    async def _sync_lazy_commits(self) -> None:
        """Lazy commits become durable within METADATA_SYNC_DELAY_S_MAX."""
        while True:
            await self._lazy_committed.wait()
            await trio.sleep(METADATA_SYNC_DELAY_S_MAX)
            await self.sync()

    async def run(self, change: Callable[[], T], *, durable: bool = True) -> T:
        """Commit ``change``; lazily (see the module docstring) unless ``durable``."""
        job: _Job[T] = _Job(change, durable)
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
            async with trio.open_nursery() as nursery:
                if self.syncs_commits:
                    nursery.start_soon(self._sync_lazy_commits)
                await self._serve(nursery)
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

    async def _serve(self, nursery: trio.Nursery) -> None:
        async for first in self._receive:
            batch = [first]
            while len(batch) < GROUP_COMMIT_BATCH_MAX:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.CancelScope(shield=True):
                if self.syncs_commits and not any(job.durable for job in batch):
                    committed = self._commit_lazy_batch(batch)
                else:
                    committed = await trio.to_thread.run_sync(self._transact, batch)
            if committed and self.syncs_commits and self._batch_durable:
                # The fsync runs beside the next batches, which need not wait for
                # it; this batch's callers do (and one fsync may cover many).
                nursery.start_soon(self._answer_when_durable, batch)
                continue
            if committed and self.syncs_commits and self.durable_batches < self.batches:
                NOT_DURABLE.set(self.batches - self.durable_batches)
                self._lazy_committed.set()
            for job in batch:
                job.done.set()
            if self.journal is not None:
                await self.journal.after_batch()

    async def _answer_when_durable(self, batch: list[_Job[Any]]) -> None:
        """Answer ``batch`` once a sync covers it, or with the sync's error."""
        with trio.CancelScope(shield=True):  # its callers wait shielded for an answer
            try:
                await self.sync()
            except OSError as error:
                # Committed, not durable: no caller of a durable change may hear yes.
                log.error("metadata sync after a commit of %d changes failed: %s",
                          len(batch), error, extra=about("metadata_commit_failed",
                                                         changes=len(batch),
                                                         error=str(error)))
                for job in batch:
                    job.error = DfsError(f"metadata sync failed: {error}")
        for job in batch:
            job.done.set()

    def _commit_lazy_batch(self, batch: list[_Job[Any]]) -> bool:
        """A batch of lazy changes, on the trio thread: True if it committed.

        Fast path: no fsync and no journal, only SQLite's work in the page cache
        (a fraction of a millisecond for the small namespace changes that are
        lazy), which costs less here than the hop to a worker thread and back:
        two GIL handoffs, each up to the 5 ms switch interval while the trio
        thread is busy (measured: a lazy Create took 8 ms at the master on a
        loaded machine through the worker). A change that insisted on
        durability is synced after the commit, as a durable batch is.
        Caveat: SQLite's automatic WAL checkpoint (every 1000 pages) runs
        inside a commit, so about one such commit in a thousand blocks the trio
        thread for its two fsyncs.
        """
        assert self.journal is None, "a journal append blocks: worker thread only"
        return self._transact(batch)

    def _transact(self, batch: list[_Job[Any]]) -> bool:
        """The batch in one transaction; True if it committed (each job's own error,
        if any, is on the job)."""
        self._batch_durable = any(job.durable for job in batch)
        rows_changed_before = self.store.connection.total_changes
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
            return False
        except Exception as error:
            # The commit itself failed (disk full, I/O error): nothing of the
            # batch is durable, so nobody may be told it is.
            log.error("metadata commit of %d changes failed: %s", len(batch), error,
                      extra=about("metadata_commit_failed", changes=len(batch),
                                  error=str(error)))
            for job in batch:
                job.error = DfsError(f"metadata commit failed: {error}")
            return False
        self.batches += 1
        self.changes += len(batch)
        COMMITS.inc()
        COMMITTED_CHANGES.inc(len(batch))
        if (self.store.connection.total_changes == rows_changed_before
                and self.durable_batches == self.batches - 1):
            # Nothing written (a last close of a file that kept its name): as durable
            # as everything before it, with no fsync to wait for.
            self.durable_batches = self.batches
            self._batch_durable = False
        return True
