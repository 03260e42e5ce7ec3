"""Moving running guests between hosts that share one vmstore cluster.

Promises of ``migrate``:
* Nothing starts before ``preflight.check`` passed; vmstore disks are never
  copied (only memory crosses the wire), other disks only when asked.
* The destination host may take each image's write lease with its first
  write (a lease handover); from that write on, the source is fenced. If the
  move fails or is aborted (Ctrl-C), the handover is withdrawn and the guest
  goes on running on the source.
* A guest that does not converge within ``stall_after_s`` gets the chosen
  policy: ``pause`` (suspend it and finish offline; libvirt resumes it on
  the destination), ``postcopy``, ``auto-converge`` (throttling from the
  start) or ``abort``.
* A silent peer is not a guest that dirties too fast (issue 16): a copy whose
  bytes stop moving (a cut link, a hung host) is aborted after
  MIGRATION_PEER_SILENT_PAUSED_S while the guest is paused, or
  MIGRATION_PEER_SILENT_RUNNING_S while it runs (never after post-copy has
  started: the destination then holds the guest), and no stall policy is
  applied to it. ``migrate`` then ends within MIGRATION_ABORT_WAIT_S once the
  guest runs on the source again, even while libvirt still waits for the peer.
* After a failure, ``aftermath`` cleans the destination and the report says
  where the guest runs and whether it is fenced there (its write leases).
* libvirt's own error lines never reach the terminal: its errors come back
  as exceptions, and are reported in ours.
* The report says how long it took, how long the guest was paused, how
  many bytes of memory moved and how many bytes of disk did not.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import libvirt

from vmstore.dfs.constants import (
    AUTO_CONVERGE_INCREMENT_PERCENT,
    AUTO_CONVERGE_INITIAL_PERCENT,
    MIGRATION_ABORT_WAIT_S,
    MIGRATION_PEER_SILENT_PAUSED_S,
    MIGRATION_PEER_SILENT_RUNNING_S,
    MIGRATION_POLL_INTERVAL_S,
)
from vmstore.dfs.errors import MigrationFailed
from vmstore.dfs.migration.aftermath import clean_destination, defined_on, where_it_runs
from vmstore.dfs.migration.cluster_view import ClusterView, GuestRecord, GuestRecords
from vmstore.dfs.migration.domain import parse_domain
from vmstore.dfs.migration.hosts import ClusterAccess, Fleet, MigrationHost
from vmstore.dfs.migration.preflight import Plan, check
from vmstore.dfs.migration.progress import describe
from vmstore.dfs.progress import ProgressDisplay

STALL_POLICIES = ("pause", "postcopy", "auto-converge", "abort")
log = logging.getLogger(__name__)


def _libvirt_error(_context: object, error: Any) -> None:
    """libvirt's error callback: to our log, not as a stray line on stderr."""
    log.debug("libvirt: %s", error[2] if isinstance(error, (list, tuple)) else error)


class _MoveFailed(Exception):
    """The move failed; ``reason`` says how (the guest's state is found out after)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobStatistics:
    """The latest ``jobStats()`` of a domain's job, polled by a thread of its own;
    ``progress_at``: when its bytes last moved (None until the copy has started)."""

    def __init__(self, domain: Any) -> None:
        self.domain = domain
        self.latest: dict[str, Any] = {}
        self.progress_at: float | None = None
        self._moved_bytes = -1
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="job statistics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _poll(self) -> None:
        while not self._stopped.is_set():
            try:
                self.latest = self.domain.jobStats()
            except libvirt.libvirtError:
                pass  # no job yet, or it has ended; keep the last figures
            if self.latest.get("memory_total"):
                moved = (int(self.latest.get("memory_processed", 0))
                         + int(self.latest.get("disk_processed", 0)))
                if moved != self._moved_bytes:
                    self._moved_bytes = moved
                    self.progress_at = time.monotonic()
            self._stopped.wait(MIGRATION_POLL_INTERVAL_S)


@dataclass(frozen=True)
class MigrationOptions:
    max_downtime_ms: int | None = None
    bandwidth_mib_per_s: int | None = None
    on_stall: str = "pause"
    stall_after_s: float = 30.0
    offline: bool = False
    copy_storage: bool = False
    trust_ownership: bool = False


@dataclass
class MigrationReport:
    guest: str
    source: str
    destination: str
    outcome: str  # "moved" | "aborted"
    total_s: float = 0.0
    downtime_ms: int = 0
    memory_bytes: int = 0  # memory sent over the wire
    disk_bytes_copied: int = 0
    disk_bytes_not_moved: int = 0  # allocated bytes of the vmstore images
    stall_policy_applied: str = ""
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        if self.outcome != "moved":
            return (f"{self.guest}: migration to {self.destination} {self.outcome}; it keeps"
                    f" running on {self.source}")
        lines = [f"{self.guest}: moved from {self.source} to {self.destination} in"
                 f" {self.total_s:.1f} s, paused {self.downtime_ms} ms",
                 f"  memory sent: {self.memory_bytes / 2**20:,.1f} MiB;"
                 f" disk not moved: {self.disk_bytes_not_moved / 2**20:,.1f} MiB on vmstore"]
        if self.disk_bytes_copied:
            lines.append(f"  disk copied: {self.disk_bytes_copied / 2**20:,.1f} MiB")
        if self.stall_policy_applied:
            lines.append(f"  it did not converge: applied {self.stall_policy_applied}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def connect(host: MigrationHost) -> tuple[MigrationHost, Any]:
    """A connection to the host's libvirtd, and the host with its vmstore label known.

    An unconfigured host's label is its hostname, as a mount's label is by
    default.
    """
    libvirt.registerErrorHandler(_libvirt_error, None)
    try:
        connection = libvirt.open(host.libvirt_uri)
    except libvirt.libvirtError as error:
        raise MigrationFailed(f"cannot reach libvirt on host {host.name}"
                              f" ({host.libvirt_uri}): {error.get_error_message()}") from None
    if not host.label:
        host = dataclasses.replace(host, label=connection.getHostname())
    return host, connection


def find_guest(fleet: Fleet, name: str,
               source: MigrationHost | None) -> tuple[MigrationHost, Any]:
    """The host running guest ``name`` (only ``source`` if given) and its connection."""
    hosts = [source] if source else list(fleet.hosts)
    unreachable = []
    for host in hosts:
        try:
            host, connection = connect(host)
        except MigrationFailed as error:
            if source:
                raise
            unreachable.append(error.message)
            continue
        try:
            if connection.lookupByName(name).isActive():
                return host, connection
        except libvirt.libvirtError:
            pass
        connection.close()
    where = ", ".join(h.name for h in hosts) or "no configured host"
    extra = f" ({'; '.join(unreachable)})" if unreachable else ""
    raise MigrationFailed(f"guest {name} is not running on {where}{extra}")


class Migration:
    """One guest's move; ``run`` does it and returns the report."""

    def __init__(self, access: ClusterAccess, guest_name: str, source: MigrationHost,
                 source_connection: Any, destination: MigrationHost,
                 options: MigrationOptions, display: ProgressDisplay) -> None:
        self.access = access
        self.cluster = ClusterView(access)
        self.guest_name = guest_name
        self.source = source
        self.source_connection = source_connection
        self.destination = destination
        self.options = options
        self.display = display
        self.report = MigrationReport(guest_name, source.name, destination.name, "aborted")
        self._error: BaseException | None = None
        self._unsafe_retried = False
        self._stall_policy_error = ""
        self._worker_done = threading.Event()
        self._silent_peer_s = 0.0  # > 0: aborted because the copy stopped moving
        self._abandoned = False  # libvirt still waits for a silent peer; we do not
        self._abort_answered = threading.Event()  # the source's libvirt answered an abort
        self._abort_taken = threading.Event()  # ... and took it

    def run(self) -> MigrationReport:
        if self.options.on_stall not in STALL_POLICIES:
            raise MigrationFailed(f"unknown --on-stall policy {self.options.on_stall!r}")
        self.destination, destination_connection = connect(self.destination)
        self.report.destination = self.destination.name
        try:
            domain = self.source_connection.lookupByName(self.guest_name)
            guest = parse_domain(domain.XMLDesc(0))
            plan = check(guest, self.source, self.destination, destination_connection,
                         self.cluster, copy_storage=self.options.copy_storage,
                         trust_ownership=self.options.trust_ownership)
            self.report.notes.extend(plan.notes)
            defined_before = defined_on(destination_connection, self.guest_name)
            self.cluster.hand_over(plan.images, self.destination.label)
            try:
                self._move(domain, plan)
            except _MoveFailed as failure:
                self.cluster.hand_over(plan.images, "")  # the source keeps writing
                raise MigrationFailed(self._after_failure(
                    failure.reason, destination_connection, plan, defined_before)) from None
            except BaseException:
                self.cluster.hand_over(plan.images, "")  # the source keeps writing
                raise
            moved = self._finish(destination_connection, plan)
            GuestRecords(self.access).save([GuestRecord(
                self.guest_name, self.destination.label, True,
                moved.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))])
            return self.report
        finally:
            destination_connection.close()

    # --- the move -----------------------------------------------------------------------
    def _flags(self, plan: Plan) -> int:
        flags = (libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
        if not self.options.offline:
            flags |= libvirt.VIR_MIGRATE_LIVE
            if self.options.on_stall == "auto-converge":
                flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
            if self.options.on_stall == "postcopy":
                flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if plan.copied_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        return int(flags)

    def _params(self, plan: Plan) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.options.bandwidth_mib_per_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.options.bandwidth_mib_per_s
        if self.options.on_stall == "auto-converge" and not self.options.offline:
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = (
                AUTO_CONVERGE_INITIAL_PERCENT)
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = (
                AUTO_CONVERGE_INCREMENT_PERCENT)
        if plan.copied_disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = plan.copied_disks
        return params

    def _move(self, domain: Any, plan: Plan) -> None:
        if self.options.max_downtime_ms is not None:
            domain.migrateSetMaxDowntime(self.options.max_downtime_ms, 0)
        suspended_here = False
        if self.options.offline and domain.info()[0] == libvirt.VIR_DOMAIN_RUNNING:
            domain.suspend()
            suspended_here = True
        started = time.monotonic()
        worker = threading.Thread(target=self._migrate_thread,
                                  args=(domain, self._flags(plan), self._params(plan)),
                                  name=f"migrate {self.guest_name}", daemon=True)
        worker.start()
        try:
            self._watch(domain, started)
        except KeyboardInterrupt:
            self.display.say(f"aborting the migration of {self.guest_name}...")
            self._stop_move(domain)
            if self._error is not None or self._abandoned:
                raise _MoveFailed(f"{self.guest_name}: aborted") from None
            self.report.notes.append("interrupted, but the move had already completed")
        finally:
            self.display.finish()
        self.report.total_s = time.monotonic() - started
        if self._error is None and not self._abandoned:
            if self._silent_peer_s:
                self.report.notes.append("aborted for a silent peer, but the move had"
                                         " already completed")
            return
        source_silent = self._abandoned and not self._abort_answered.is_set()
        if (suspended_here or self.report.stall_policy_applied == "pause") and not source_silent:
            self._resume_if_paused(domain)
        if self._silent_peer_s:
            unanswered = (f"; {self.source.name}'s libvirt did not answer the abort within"
                          f" {MIGRATION_ABORT_WAIT_S:g} s" if source_silent else "")
            raise _MoveFailed(f"moving {self.guest_name} to {self.destination.name} failed:"
                              f" the copy stopped moving for {self._silent_peer_s:.1f} s (a"
                              " silent peer: a cut link or a hung host), so it was aborted"
                              + unanswered)
        assert self._error is not None
        message = (self._error.get_error_message()
                   if isinstance(self._error, libvirt.libvirtError) else str(self._error))
        raise _MoveFailed(f"moving {self.guest_name} to {self.destination.name}"
                          f" failed: {message}")

    def _migrate_thread(self, domain: Any, flags: int, params: dict[str, Any]) -> None:
        try:
            try:
                domain.migrateToURI3(self.destination.migration_uri, params, flags)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_MIGRATE_UNSAFE:
                    raise
                # libvirt knows only some FUSE filesystems as shared (glusterfs,
                # quobyte); the preflight proved this storage is.
                self._unsafe_retried = True
                domain.migrateToURI3(self.destination.migration_uri, params,
                                     flags | libvirt.VIR_MIGRATE_UNSAFE)
        except BaseException as error:  # handed to the watching thread
            self._error = error
        finally:
            self._worker_done.set()

    def _watch(self, domain: Any, started: float) -> None:
        """Show progress and apply the stall policy on time until the move ends.

        Job statistics come from a thread of their own: libvirt may keep a
        query waiting for the domain's job lock for up to 30 s, and the stall
        policy must not wait with it.
        """
        statistics = JobStatistics(domain)
        statistics.start()
        deadline = started + self.options.stall_after_s
        policy_due = not self.options.offline
        try:
            while not self._worker_done.wait(MIGRATION_POLL_INTERVAL_S):
                latest = statistics.latest
                if latest.get("memory_total"):  # else: the copy has not started yet
                    self.display.show(describe(latest))
                silent_s = self._peer_silent_s(domain, statistics)
                if silent_s:
                    self._silent_peer_s = silent_s
                    self.display.say(f"{self.destination.name} has taken nothing for"
                                     f" {silent_s:.1f} s: a silent peer; aborting the move")
                    self._stop_move(domain)
                    return
                if policy_due and time.monotonic() >= deadline:
                    policy_due = self._apply_stall_policy(domain)
        finally:
            statistics.stop()

    def _apply_stall_policy(self, domain: Any) -> bool:
        """Apply the policy; True while it must be tried again on the next poll.

        A policy asked for before QEMU's own copy has started is lost (an
        abort then cancels nothing; post-copy is refused), so each is retried
        until it took; an abort is repeated until the move has ended.
        """
        policy = self.options.on_stall
        if not self.report.stall_policy_applied:
            self.report.stall_policy_applied = policy
            self.display.say(f"{self.guest_name} has not converged in"
                             f" {self.options.stall_after_s:g} s: {policy}")
        try:
            if policy == "pause":
                domain.suspend()
            elif policy == "postcopy":
                domain.migrateStartPostCopy(0)
            elif policy == "abort":
                domain.abortJob()
                return True
        except libvirt.libvirtError as error:
            self._stall_policy_error = error.get_error_message()
            return True
        self._stall_policy_error = ""
        return False

    def _peer_silent_s(self, domain: Any, statistics: JobStatistics) -> float:
        """How long the copy has not moved, once that says its peer is silent; else 0."""
        if statistics.progress_at is None:
            return 0.0  # not started: libvirt's own handshake has its own timeouts
        if self.report.stall_policy_applied == "postcopy" and not self._stall_policy_error:
            return 0.0  # the destination runs the guest now: an abort would lose it
        quiet_s = time.monotonic() - statistics.progress_at
        if quiet_s < MIGRATION_PEER_SILENT_PAUSED_S:
            return 0.0
        try:
            paused = domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        except libvirt.libvirtError:
            return 0.0  # the source domain is gone: the move completed
        limit_s = MIGRATION_PEER_SILENT_PAUSED_S if paused else MIGRATION_PEER_SILENT_RUNNING_S
        return quiet_s if quiet_s >= limit_s else 0.0

    def _stop_move(self, domain: Any) -> None:
        """Abort until the worker ends; or stop waiting (``_abandoned``) when, after
        MIGRATION_ABORT_WAIT_S, an abort took and the guest runs on the source again
        (libvirt may go on waiting for a silent peer's answer far longer), or the
        source's libvirt has answered no abort at all (the source itself is silent:
        its QEMU waits on a cut mount). The aborts go from a thread of their own, since
        a silent source's never return.
        """
        aborter = threading.Thread(target=self._abort_until_done, args=(domain,),
                                   name=f"abort {self.guest_name}", daemon=True)
        aborter.start()
        since = time.monotonic()
        while not self._worker_done.wait(MIGRATION_POLL_INTERVAL_S):
            if time.monotonic() - since < MIGRATION_ABORT_WAIT_S:
                continue
            if not self._abort_answered.is_set() or (self._abort_taken.is_set()
                                                     and self._runs_on_source(domain)):
                self._abandoned = True
                return

    def _abort_until_done(self, domain: Any) -> None:
        """An abort before QEMU's own copy has started cancels nothing: repeat it."""
        while not self._worker_done.is_set() and not self._abandoned:
            if self._abort(domain):
                self._abort_taken.set()
            self._abort_answered.set()
            self._worker_done.wait(MIGRATION_POLL_INTERVAL_S)

    def _runs_on_source(self, domain: Any) -> bool:
        try:
            state, reason = domain.state()
        except libvirt.libvirtError:
            return False
        if (state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_USER
                and self.report.stall_policy_applied == "pause"):
            return self._resume_if_paused(domain)  # our pause, not libvirt's
        return bool(state == libvirt.VIR_DOMAIN_RUNNING)

    def _resume_if_paused(self, domain: Any) -> bool:
        """Resume the source guest if it is paused; whether it runs."""
        try:
            if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                domain.resume()
            return True
        except libvirt.libvirtError as error:
            self.report.notes.append(f"resuming {self.guest_name} on {self.source.name}"
                                     f" failed: {error.get_error_message()}")
            return False

    @staticmethod
    def _abort(domain: Any) -> bool:
        """Ask libvirt to abort the job; whether it took the request."""
        try:
            domain.abortJob()
        except libvirt.libvirtError:
            return False  # no job (yet, or any more): the caller asks again or sees the outcome
        return True

    def _after_failure(self, reason: str, destination_connection: Any, plan: Plan,
                       defined_before: bool) -> str:
        """The failure message: ``reason``, where the guest runs, what was cleaned."""
        notes = clean_destination(destination_connection, self.guest_name, defined_before)
        where = where_it_runs(self.cluster, plan.images, self.guest_name, self.source,
                              self.display)
        return "\n  ".join([f"{reason}; {where}", *notes])

    # --- afterwards ---------------------------------------------------------------------
    def _finish(self, destination_connection: Any, plan: Plan) -> Any:
        moved = destination_connection.lookupByName(self.guest_name)
        try:
            stats = moved.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        except libvirt.libvirtError:
            stats = {}
        if self.options.offline or self.report.stall_policy_applied == "pause":
            state = moved.info()[0]
            if state == libvirt.VIR_DOMAIN_PAUSED:
                moved.resume()
        self.report.outcome = "moved"
        if self._stall_policy_error:
            self.report.notes.append(f"applying {self.options.on_stall} failed:"
                                     f" {self._stall_policy_error}")
        self.report.downtime_ms = int(stats.get("downtime", 0))
        if self.options.offline:
            self.report.downtime_ms = int(self.report.total_s * 1000)
        self.report.memory_bytes = int(stats.get("memory_processed", 0))
        self.report.disk_bytes_copied = int(stats.get("disk_processed", 0))
        self.report.disk_bytes_not_moved = sum(image.allocated_bytes for image in plan.images)
        if self._unsafe_retried:
            self.report.notes.append(
                "libvirt does not know vmstore as shared storage; the move used"
                " VIR_MIGRATE_UNSAFE after vmstore's own checks (libvirt >= 11.3:"
                " add fuse.vmstore to shared_filesystems in qemu.conf)")
        return moved


def migrate(access: ClusterAccess, fleet: Fleet, guest_name: str, destination: str,
            source: str | None = None, options: MigrationOptions = MigrationOptions(),
            display: ProgressDisplay | None = None) -> MigrationReport:
    """Move guest ``guest_name`` to ``destination`` (a configured host or a libvirt URI)."""
    target = fleet.host(destination)
    found, source_connection = find_guest(fleet, guest_name,
                                          fleet.host(source) if source else None)
    try:
        return Migration(access, guest_name, found, source_connection, target,
                         options, display or ProgressDisplay()).run()
    finally:
        source_connection.close()
