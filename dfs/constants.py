"""Sizes and limits of the whole cluster, units last in every name.

A limit lives here so that a reader sees every bound in one place; code that
needs a bound imports it rather than writing a number. Names end in their
unit, then in _MAX or _MIN for a bound (DATA_REQUEST_BYTES_MAX).

What is not here, on purpose: the wire and on-disk formats' own constants
(magic numbers, protocol and schema versions, flag bits, field widths and
offsets, header and MAC sizes), which stay beside the format they describe
(dfs.protocol.codec, replica_format, capability, auth, local_socket,
dfs.metadata.schema); errno-like codes (dfs.types, dfs.errors); and the test
kit's own knobs (dfs.testing).
"""

from __future__ import annotations

# --- data layout ---------------------------------------------------------
CHUNK_SIZE_BYTES = 64 * 1024 * 1024
# Checksum granularity. 4 KiB matches QEMU's cache=none I/O, so an aligned
# guest write never needs a read-modify-write to keep its checksum right.
BLOCK_SIZE_BYTES = 4096
BLOCKS_PER_CHUNK = CHUNK_SIZE_BYTES // BLOCK_SIZE_BYTES
DEFAULT_GOAL = 2
GOAL_MAX = 9
NAME_BYTES_MAX = 255
SYMLINK_BYTES_MAX = 4096
XATTR_NAME_BYTES_MAX = 255
XATTR_VALUE_BYTES_MAX = 64 * 1024
# Largest file: 2**47 bytes (128 TiB) keeps chunk indexes in 21 bits.
FILE_SIZE_BYTES_MAX = 2**47

# --- wire ----------------------------------------------------------------
# A frame carries at most one request's data: 1 MiB of payload (the largest
# FUSE write) plus the control body, with room to spare.
FRAME_BODY_BYTES_MAX = 8 * 1024 * 1024  # a registration lists every replica a chunkserver holds
FRAME_PAYLOAD_BYTES_MAX = 4 * 1024 * 1024
# Payloads smaller than this are never compressed: lz4's header and the
# extra call cost more than they save.
COMPRESS_BYTES_MIN = 8 * 1024
# One data request moves at most this much; longer reads and writes are split.
DATA_REQUEST_BYTES_MAX = 1024 * 1024
# A batched write (many small writes to one chunk in one request) carries at
# most this many extents, and at most DATA_REQUEST_BYTES_MAX of them.
WRITE_BATCH_EXTENTS_MAX = 256
INFLIGHT_REQUESTS_PER_CONNECTION_MAX = 256
# Bytes of requests a process holds read but unanswered: per connection, and
# in all. Each is larger than the largest frame, so any one request fits.
REQUEST_BYTES_PER_CONNECTION_MAX = 64 * 1024 * 1024
REQUEST_BYTES_PER_PROCESS_MAX = 512 * 1024 * 1024
# Connections a daemon admits (handshakes included): from one address, and in all.
CONNECTIONS_PER_PEER_MAX = 256
CONNECTIONS_MAX = 4096
AUTH_TIMEOUT_S = 10.0
# Once a frame's first byte arrives, the whole frame must follow within this
# (12 MiB at most: 1.2 MB/s): a peer that announces a frame and goes silent
# loses its connection instead of holding it, and its buffer, forever.
FRAME_RECEIVE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
RPC_TIMEOUT_S = 30.0
# Data RPCs may wait behind a disk; a dead peer is found by the heartbeat
# long before this fires.
DATA_RPC_TIMEOUT_S = 30.0
# A frame reader asks its stream for at least this much at a time (fewer
# syscalls for small frames); payloads from PAYLOAD_IN_PARTS_BYTES_MIN on are
# received apart from the buffer (one copy less); payloads up to
# JOINED_PAYLOAD_BYTES_MAX go out joined to their header in one send (one
# syscall beats avoiding a small copy), bigger ones as a second send.
FRAME_RECEIVE_BYTES = 256 * 1024
PAYLOAD_IN_PARTS_BYTES_MIN = 128 * 1024
JOINED_PAYLOAD_BYTES_MAX = 64 * 1024
# A refusal's message sent back to a peer is cut to this (it may quote the peer's bytes).
ERROR_TEXT_CHARS_MAX = 1000
# A refused connection is logged at most once per address this often (a flood
# must not flood the log too).
REFUSAL_LOG_INTERVAL_S = 10.0
# Keys a key file may hold during a rotation (the old ones are to be retired),
# and how often a running process looks for a changed key file.
KEYS_PER_FILE_MAX = 4
KEY_FILE_CHECK_INTERVAL_S = 2.0
# A read capability's life; clients refresh at half of it, with the next
# chunk-location request (one master round trip per 16 chunks per 30 s of use).
READ_CAPABILITY_LIFE_S = 60.0
# Verified capabilities a chunkserver remembers (then it forgets them all:
# each costs one MAC computation again).
VERIFIED_CAPABILITIES_MAX = 65536
# Every call on a chunkserver's local socket (a short-circuit open, its reply)
# must finish within this; the chunkserver's listener waits this long after an
# accept() that ran out of descriptors or memory, rather than end.
LOCAL_CALL_TIMEOUT_S = 5.0
LOCAL_ACCEPT_RETRY_S = 0.1

# --- silent peers (a hung host, process or disk: no reset, no answer) ---
# A read not answered within max(HEDGE_FLOOR_S, HEDGE_P99_MULTIPLE x the
# replica's recent p99) also goes to another replica; the first answer wins.
# A replica with too few samples to judge waits HEDGE_CEILING_S, and no
# estimate ever waits longer: a guest sees at most about that much of a hung
# replica. The same deadline bounds a short-circuit open on this host.
HEDGE_FLOOR_S = 0.03
HEDGE_P99_MULTIPLE = 4.0
HEDGE_CEILING_S = 0.5
# Recent answers kept per peer (a ring: its p99 is its second-largest sample),
# for at most this many peers (the least recently heard go first).
LATENCY_SAMPLES_MAX = 128
LATENCY_SAMPLES_MIN = 8
LATENCY_PEERS_MAX = 4096
# A latency estimate's p99 is recomputed every this many samples, not per call
# (a sort of LATENCY_SAMPLES_MAX per answer would cost more than it tells).
LATENCY_P99_EVERY_SAMPLES = 8
# A peer that made a read hedge is tried after the others for this long.
SLOW_PEER_BACKOFF_S = 5.0
# A write chain member silent this long per member it waits for (it and those
# after it) is dropped as a dead one would be. The unit is the writer's
# WRITE_SILENCE_P99_MULTIPLE x the chain's recent p99 write time, clamped to
# [WRITE_SILENCE_FLOOR_S, WRITE_SILENCE_CEILING_S] (the ceiling while too few
# writes are known): a chain busy behind a loaded disk answers slowly, its
# unit grows, and it is not dropped. A chain of one waits DATA_RPC_TIMEOUT_S:
# nobody is dropped below one replica. The floor stays above TCP's minimum
# retransmit time (200 ms): one lost packet must not drop a healthy member.
WRITE_SILENCE_FLOOR_S = 0.3
WRITE_SILENCE_P99_MULTIPLE = 4.0
WRITE_SILENCE_CEILING_S = 2.0
# A local chunkserver that did not answer a short-circuit open in time is not
# asked again for this long: reads go over the network meanwhile.
LOCAL_STALL_RECHECK_S = 2.0
# A client asks the master again for a write token or a read capability from half
# its life on, in the background, and goes on using the one it has meanwhile, up
# to this share of its life (by its own clock); only past that does an I/O wait
# for the master. So a master slow or cut off for a few seconds stalls no guest.
CAPABILITY_USE_FRACTION = 0.9
# Background refreshes of tokens and locations a client runs at once (each one
# master call); past this, a refresh waits for the next I/O that needs it.
CAPABILITY_REFRESHES_MAX = 64

# --- disk watch (dfs.chunkserver.disk_watch) -----------------------------------
# Each chunkserver writes, fdatasyncs and reads back a small probe file this often;
# a probe not done within DISK_PROBE_DEADLINE_S, a store call not returned within
# DISK_CALL_HANG_S, a probe that fails, or DISK_ERRORS_FAILING_MAX I/O errors of
# store calls within DISK_ERROR_WINDOW_S mark its disk failing (for the process's
# life): the master places nothing new there and copies its replicas away. The
# deadlines are far above a healthy fdatasync (~0.3 ms) and a busy disk's (tens of
# ms): a false mark costs a whole drain. A guest does not wait for them: a silent
# chain member is dropped within about a second (WRITE_SILENCE_*).
DISK_PROBE_INTERVAL_S = 2.0
DISK_PROBE_DEADLINE_S = 5.0
DISK_CALL_HANG_S = 5.0
DISK_ERRORS_FAILING_MAX = 3
DISK_ERROR_WINDOW_S = 60.0

# --- master --------------------------------------------------------------
HEARTBEAT_INTERVAL_S = 1.0
# A chunkserver silent for this long is marked down and leaves write chains.
CHUNKSERVER_DOWN_AFTER_S = 5.0
# A registration under a chunkserver's uuid while that chunkserver's registered
# link answers a ping within this time is refused (one live registration per
# identity). Short: a real chunkserver whose old link died unseen waits at most
# this long (plus its reconnect backoff) to register again.
REGISTERED_LINK_PING_TIMEOUT_S = 2.0
GROUP_COMMIT_BATCH_MAX = 256
# The embedded master commits namespace changes (create, unlink, rename, chmod, xattrs,
# a size published at close) without an fsync each; they are on stable storage this
# long after at most, or at the next fsync of a file, fsyncdir or durable change
# (dfs.master.committer). A master killed (-9) loses none of them; a host crash, at most
# this much.
METADATA_SYNC_DELAY_S_MAX = 0.1
# A readdir reply carries at most this many entries, however many were asked.
READDIR_REPLY_ENTRIES_MAX = 1024
# Chunk deletions sent to chunkservers per pass of the master's deleter.
CHUNK_DELETIONS_PER_PASS_MAX = 256
# Keeps a fence of a huge file inside one frame.
FENCE_CHUNKS_PER_MESSAGE_MAX = 65536
# Refused chunkserver registrations the master keeps for `vmstore status` (the
# oldest go first): enough for every chunkserver of a big cluster.
REFUSED_CHUNKSERVERS_KEPT_MAX = 1024
# Replicas whose newer version the master refused (a server that never held the
# chunk claimed it), kept for `vmstore status` (the oldest go first).
REFUSED_VERSIONS_KEPT_MAX = 1024
# A chunkserver down this long has its replicas rebuilt elsewhere; shorter
# absences (a reboot) only cost a version bump when written meanwhile.
REPLICATION_DELAY_S = 30.0
REPLICATION_INTERVAL_S = 1.0
REPLICATION_INFLIGHT_MAX = 4  # chunks being copied at once, cluster-wide
REPLICATION_TIMEOUT_S = 600.0  # one whole chunk copy, throttled
REPLICATION_PIECE_BYTES = 1024 * 1024
# The rebuild rate `vmstore status` shows is an average over this long.
REPLICATION_RATE_WINDOW_S = 60.0
# Default copy bandwidth per target chunkserver, so guests keep their I/O.
REPLICATION_BANDWIDTH_BYTES_PER_S = 200 * 1024 * 1024
# Background checksum verification per chunkserver: a 1 TB disk in ~1 day.
SCRUB_RATE_BYTES_PER_S = 12 * 1024 * 1024
# After a failed copy gives its chunk's fencing bump back, a writer that the bump
# refused meanwhile may still report those holders as failed (its write and report
# RPCs): for this long, such a report about them moves no version (once each).
VERSION_REVERT_PARDON_S = RPC_TIMEOUT_S + DATA_RPC_TIMEOUT_S
# Rest between scrub passes at the default rate; a faster rate rests less.
SCRUB_PASS_PAUSE_S = 60.0
REPLY_CACHE_PER_SESSION_MAX = 1024
# Scheduled metadata backups (dfs.master.backups), when [master] backup_dir is set:
# one this often, the newest this many kept; a failed one is tried again this soon.
BACKUP_INTERVAL_S = 3600.0
BACKUPS_KEPT = 48
BACKUP_RETRY_S = 60.0
# `vmstore metadata restore` moves every id counter (inodes, chunks, sessions...)
# forward by this much: ids handed out after the backup are never handed out again.
RESTORE_ID_SKIP = 2**32
CHUNK_ALLOCATION_RETRIES_MAX = 5
# Write leases. A client session silent this long loses its leases; a write
# token lives this long minus CLOCK_SKEW_S_MAX, the most the clocks of the
# master and a chunkserver may disagree (NTP keeps them within milliseconds).
LEASE_EXPIRY_S = 20.0
LEASE_EXPIRY_S_MIN = 4.0
CLOCK_SKEW_S_MAX = 2.0
SESSION_EXPIRY_CHECK_INTERVAL_S = 0.5
# Two readings of the master's clock this far apart: the master did not run in
# between (SIGSTOP, a frozen VM, swapping), so the silences of its peers in that
# gap are its own, and every session and chunkserver gets a full period again
# (dfs.master.stall_watch).
MASTER_STALL_S_MIN = 2.0
# Clients renew this many times per expiry period, so a few lost renewals
# (a busy master, a dropped packet) do not cost the lease.
LEASE_RENEWALS_PER_EXPIRY = 4
# The master's Prometheus gauges (chunkservers, clients, leases, rebuild) are
# refreshed this often: a scrape every 15 s or so sees them at most this old.
MASTER_GAUGES_INTERVAL_S = 2.0
# fsck follows a directory's parents at most this deep: a loop in a damaged
# namespace ends there, and no real tree is deeper (PATH_MAX is 4096 bytes).
PATH_DEPTH_MAX = 4096
# `vmstore metadata inspect` waits this long for a lock the master holds (a
# checkpoint, WAL recovery) before it gives up.
READ_LOCK_TIMEOUT_S = 30.0

# --- metadata HA (dfs.master.ha: etcd elects the leader and keeps the journal) ---
# One etcd call, whole (connect, send, answer): etcd answers a healthy write in
# milliseconds; past this the member is taken as silent and the next one tried.
ETCD_CALL_TIMEOUT_S = 2.0
# The leader's etcd lease: a leader that cannot renew it for this long is
# deposed and a standby is elected. Failover takes about this long plus one
# election; shorter risks losing leadership to one slow fsync on etcd.
LEADER_LEASE_TTL_S = 3
# The leader renews its lease this often, and stops acting as leader once its
# last renewal is LEADER_LEASE_TTL_S - LEADER_SAFETY_MARGIN_S old, so that it
# has stopped before etcd lets the lease go and a standby can win.
LEADER_RENEW_INTERVAL_S = 0.5
LEADER_SAFETY_MARGIN_S = 0.5
# A client of an HA group waits this long for the leader's answer before it
# takes the leader for hung and tries the others (a retried change is answered
# from the replicated reply cache, never done twice). Above a healthy leader's
# slowest batch (an etcd append waits out one etcd election, ~1 s), and a few
# times the time a hung leader takes to be replaced.
HA_MASTER_CALL_TIMEOUT_S = 10.0
# ...and then leaves it alone this long while others are left to try: a hung
# leader is replaced within seconds, and going back to it costs a deadline more.
SILENT_MASTER_AVOID_S = 30.0
# A chunkserver of an HA group takes its master for gone (cut off, hung) when a
# heartbeat is not answered this fast, and tries the next: a heartbeat touches
# no disk, so a live leader answers it in milliseconds.
HA_HEARTBEAT_TIMEOUT_S = 3.0
# An HA group's clients retry a master call at most this far apart.
HA_RECONNECT_BACKOFF_S_MAX = 0.25
# A read of the journal (a standby's before it watches, a takeover's catch-up)
# takes at most this many entries at once.
JOURNAL_READ_ENTRIES_MAX = 256
# A watch stream (a standby's on the journal and on the leader key) that brings
# nothing for this long is opened again, on the next endpoint if this one fails,
# from where it was: an etcd member that died silently or was cut off costs a
# standby at most this long. etcd 3.4's gateway sends no heartbeat on a watch,
# so an idle stream is reopened this often too (one request).
ETCD_WATCH_SILENCE_S = 3.0
# One message of a watch stream (its events, base64 in JSON) at most: above the
# largest journal entry (JOURNAL_ENTRY_BYTES_MAX) with room for a few.
ETCD_WATCH_MESSAGE_BYTES_MAX = 64 * 1024 * 1024
# A change waits this long for etcd to take its journal entry (quorum lost:
# changes wait, unacknowledged, and resume); past it the leader gives up its
# leadership rather than hold every client longer.
JOURNAL_APPEND_TIMEOUT_S = 60.0
# etcd refuses requests over its --max-request-bytes (1.5 MiB by default;
# vmstore's etcd runs with 16 MiB): a batch's journal entry must fit.
JOURNAL_ENTRY_BYTES_MAX = 15 * 1024 * 1024
# The leader writes a snapshot of the metadata, and trims the journal before
# it, after this many entries: a new or wiped standby starts from the snapshot.
JOURNAL_ENTRIES_PER_SNAPSHOT = 2000
# A snapshot is stored in etcd in parts of at most this size.
SNAPSHOT_PART_BYTES_MAX = 1024 * 1024
# A standby publishes its journal position in etcd at most this often, on a
# lease of its own that lapses after STANDBY_REPORT_TTL_S without renewal (a
# dead standby drops out of `vmstore status`); the leader probes the standbys'
# reports and each etcd member this often, each probe within ETCD_PROBE_TIMEOUT_S.
STANDBY_REPORT_INTERVAL_S = 1.0
STANDBY_REPORT_TTL_S = 5
HA_STATUS_INTERVAL_S = 1.0
ETCD_PROBE_TIMEOUT_S = 1.0


# --- chunkserver ---------------------------------------------------------
# Store calls on buffers up to this size run on the event loop: a pwrite to
# the page cache costs less than a thread hop.
INLINE_DISK_BYTES_MAX = 256 * 1024
# An inline fdatasync that takes longer than this sends syncs to the worker
# thread for SLOW_SYNC_BACKOFF_S.
INLINE_SYNC_SLOW_S = 0.005
SLOW_SYNC_BACKOFF_S = 30.0
# Short-circuit readers served at once on the chunkserver's Unix socket, and
# the socket's listen() backlog.
LOCAL_READ_CONNECTIONS_MAX = 256
LOCAL_READ_LISTEN_BACKLOG_MAX = 64
# Replica files a chunk store keeps open (the least recently used close first):
# well under a daemon's usual RLIMIT_NOFILE of 1024, with room for its sockets.
REPLICA_FILES_OPEN_MAX = 256
# Writes of this much or more start their writeback at once (sync_file_range,
# SYNC_FILE_RANGE_WRITE: no wait), so that a stream's fsync at the end finds
# little left dirty instead of all of it.
EARLY_WRITEBACK_BYTES_MIN = 256 * 1024
# Damage reports waiting for the master link; beyond this a scrub or read that
# finds more waits (the master hears of every one, later).
DAMAGE_REPORTS_QUEUED_MAX = 1024
# Replicas the master deletes go to the chunkserver's quarantine (issue 19) and
# stay there this long (default of [chunkserver] quarantine_retention_s), then go
# once the master says their chunk is safe (at its goal with healthy current
# replicas, or no file's any more). It asks this often, this many chunks a call.
QUARANTINE_RETENTION_S = 24 * 3600.0
QUARANTINE_CHECK_INTERVAL_S = 60.0
QUARANTINE_CHECK_CHUNKS_MAX = 1024
# Space pressure: with less than this share of the data directory's file system
# free, quarantined replicas are purged, oldest first, retention or not.
QUARANTINE_PRESSURE_FREE_FRACTION = 0.05
# Disk space (dfs.chunkserver.space_ledger): each replica reserves its full size
# while it is here; a new one is taken only while free - reserved keeps this much
# over, and a write that would allocate is refused (NoSpace) rather than leave
# less than this free: room for the file system's own blocks (extent trees,
# directories, quarantine renames) that the ledger does not count.
SPACE_MARGIN_BYTES = 8 * 1024 * 1024
# Owner records (file and chunk index, for `vmstore recover`) the master sends in
# one registration reply, for replicas written before records existed; about 25
# bytes each on the wire, so 100,000 stay well inside FRAME_BODY_BYTES_MAX.
REGISTRATION_OWNERS_MAX = 100_000

# --- client --------------------------------------------------------------
# Directory entries a client asks the master for in one readdir call.
READDIR_BATCH_ENTRIES_MAX = 512
# How long metadata calls keep retrying while the master is away (restart,
# failover). Like an NFS hard mount, but bounded.
MASTER_RECONNECT_TIMEOUT_S = 300.0
RECONNECT_BACKOFF_S_MIN = 0.05
RECONNECT_BACKOFF_S_MAX = 2.0
# A chunkserver that refused its master (dfs.protocol.cluster_identity) asks again
# this often: an operator may fix the master meanwhile, and each refusal is logged.
MASTER_REFUSED_RETRY_S = 10.0
WRITE_RETRIES_MAX = 8
READ_RETRIES_MAX = 8
LOCATION_CACHE_ENTRIES_MAX = 65536
# Per-file states of a client (dfs.client.file_state): the idle ones go beyond this many.
FILE_STATES_MAX = 65536
# Files whose lazy metadata changes a client tracks for their fsync
# (MasterClient.owed_through); beyond, the oldest are folded into one floor.
OWED_FILES_MAX = 4096
# Write-behind: bytes a mount holds written but not yet on every replica
# (write() waits for room beyond this), batches in flight per chunk (they
# never overlap) and in all. Few in all: writes queued meanwhile go together
# in the next batch, and a batch costs the chain far more than an extent in
# it (measured with mount_bench, random 4 KiB O_DIRECT writes at depth 16,
# 2 cores, 3 rounds: 64 in flight 6.0k IOPS, 8 6.9k, 4 7.9k-9.9k, 2 5.4k;
# sequential 1 MiB writes unchanged). Full batches (half of
# DATA_REQUEST_BYTES_MAX or more) gain nothing by waiting, only by overlapping:
# they have slots of their own (mount_bench, 3 rounds: seq 1 MiB writes
# 240 MB/s with 4 in flight, 250 with 8 more for full batches, 256-275 with
# 16 more; qemu-img convert 1.23 -> 1.08 s).
WRITE_BEHIND_BYTES_MAX = 64 * 1024 * 1024
WRITE_BATCHES_PER_CHUNK_MAX = 16
WRITE_BATCHES_MAX = 4
FULL_WRITE_BATCHES_MAX = 16
# An fsync that changes no size records the mtime on the master at most this
# often (close always records it): a writer fsyncing every 4 KiB would
# otherwise pay a master commit per fsync for a timestamp.
MTIME_PUBLISH_INTERVAL_S = 1.0
# Chunk locations a client asks the master for at once (1 GiB of a file): a
# sequential reader or writer pays one master round trip per 16 chunks.
LOCATION_PREFETCH_CHUNKS = 16
# A file fsynced within this long has its writes sent synchronous, durable on
# every replica when acknowledged: a writer that fsyncs after each write (a
# guest's flush) then finds nothing left to flush, and saves a round trip.
SYNCHRONOUS_AFTER_FSYNC_S = 1.0
# Batches of small writes in flight per chunk beyond which the next waits to be
# half full (or for one to finish).
SMALL_BATCHES_IN_FLIGHT_MAX = 2
# A closing client waits this long for its queued writes, and again for the
# master to close its session: a master that is away does not hold an unmount
# for ever (the session then expires on its own).
CLOSE_SESSION_TIMEOUT_S = 5.0
# Short-circuit reads (dfs.client.local_replicas). Open replica fds kept (a
# mount's RLIMIT_NOFILE is often 1024, and its TCP connections need some): 256
# chunks are 16 GiB of hot data. An address whose socket is missing (a remote
# chunkserver, or one that is down) is not asked again for NOT_LOCAL_RECHECK_S.
# A sequential stream of small reads is read ahead READAHEAD_BYTES at once, and
# what was read ahead is used for READAHEAD_TTL_S at most: another host's writes
# show within that time.
LOCAL_FDS_MAX = 256
NOT_LOCAL_RECHECK_S = 10.0
READAHEAD_BYTES = 128 * 1024
READAHEAD_TTL_S = 1.0

# --- the mount (vmstore.fuse) ----------------------------------------------------
# How long the kernel may trust an entry or attributes it got, instead of
# pyfuse3's 300 s default, which hid other hosts' size and mtime changes for
# five minutes.
ATTR_TIMEOUT_S = 1.0
ENTRY_TIMEOUT_S = 1.0
# A change's reply waits at most this long for each other mount to answer that it
# forgot what the change made stale (dfs.master.invalidations); a mount that is
# later shows the old state at most until the timeouts above run out.
INVALIDATION_ACK_TIMEOUT_S = 2.0
# A mount waits at most this long for its kernel to drop a name (the kernel
# first waits for the mount's own requests in that directory to end, and one of
# those may wait for the master, which waits for this mount: the bound breaks
# that cycle), then answers anyway and the kernel drops it soon after.
ENTRY_INVALIDATION_WAIT_S = 0.5
# Files remembered to have no security.capability, which the kernel asks for
# before every write; beyond this many the set starts again.
CAPABILITY_CACHE_ENTRIES_MAX = 65536
# An EIO's reason is logged at most once per operation this often (a guest
# retrying must not flood the log).
IO_ERROR_LOG_INTERVAL_S = 5.0
# The mount's readahead (its bdi's read_ahead_kb): measured, 1 MiB took
# sequential reads from ~400 to ~1100 MB/s.
READ_AHEAD_KIB = 1024
# Kernel requests pyfuse3 serves at once (its default is 99).
FUSE_TASKS_MAX = 128

# --- tools and the migration coordinator -------------------------------------
# A progress line on a terminal is rewritten in place; to a file or pipe, one
# line is written this often at most.
PROGRESS_PLAIN_INTERVAL_S = 2.0
# The coordinator's calls to the master wait this long for it (a migration
# must not hang on a master that is away; the operator can run it again).
MIGRATION_MASTER_TIMEOUT_S = 15.0
# A migration's progress and its worker are looked at this often.
MIGRATION_POLL_INTERVAL_S = 0.5
# A copy whose bytes have not moved for this long while the guest is paused (the
# final pass, or the pause policy) has a silent peer (a cut link, a hung host):
# the move is aborted, so the guest stalls about this long, as for a disk (issue 16).
MIGRATION_PEER_SILENT_PAUSED_S = 1.0
# The same while the guest runs: it is not stalled meanwhile, so a busy machine's
# slow copy is given longer before it is taken for a silent peer.
MIGRATION_PEER_SILENT_RUNNING_S = 3.0
# After an abort, libvirt may still wait for a silent peer (its keepalive, about
# 30 s) with the guest already running on the source: wait no longer than this.
MIGRATION_ABORT_WAIT_S = 2.0
# After a failed move, a source whose mount the master has not heard from for this
# long is watched until it is heard from again or its session (and the guest's
# write lease) has expired, for at most MIGRATION_FENCE_WAIT_S (past the default
# lease expiry, LEASE_EXPIRY_S).
MIGRATION_SOURCE_SILENT_MS = 1500
MIGRATION_FENCE_WAIT_S = 30.0
# Throttle steps for auto-converge: libvirt's defaults (20 % + 10 %) were
# measured not to converge a paced dirtier in 120 s; these did in 67 s.
AUTO_CONVERGE_INITIAL_PERCENT = 50
AUTO_CONVERGE_INCREMENT_PERCENT = 20
# QEMU keeps some memory of its own beyond the guest's RAM: a destination
# needs this much free besides.
QEMU_MEMORY_OVERHEAD_KIB = 64 * 1024
# Failover asks the master this often whether a dead host still holds a write lease.
FAILOVER_LEASE_POLL_INTERVAL_S = 1.0

# --- command-line tools (cli/) -----------------------------------------------
# A command gives up on an unreachable master sooner than a mount does.
COMMAND_MASTER_TIMEOUT_S = 15.0
# `vmstore drain --wait` looks at the drain's progress this often.
DRAIN_POLL_INTERVAL_S = 1.0
# `vmstore file-info` asks for at most this many chunks' locations per call.
FILE_INFO_LOCATIONS_PER_CALL_MAX = 1024
# `vmstore cp` moves files in blocks of this size, this many at once.
FILE_COPY_BLOCK_BYTES = 1024 * 1024
FILE_COPY_INFLIGHT_MAX = 8
# `vmstore local up` waits this long for each daemon; `down` gives each this long to stop.
LOCAL_CLUSTER_READY_TIMEOUT_S = 60.0
LOCAL_CLUSTER_STOP_GRACE_S = 10.0
# `vmstore local up --masters N` runs this many etcd members.
LOCAL_ETCD_MEMBERS = 3
# A journal entry is one group commit's rows (dfs.master.journal): room for big ones.
LOCAL_ETCD_REQUEST_BYTES_MAX = 16 * 1024 * 1024
# `vmstore failover` waits at most this long for a dead host's leases to end.
FAILOVER_COMMAND_WAIT_S = 300.0
# `vmstore mount` waits this long for the mount to answer; `umount` this long for it to go.
MOUNT_READY_TIMEOUT_S = 30.0
UNMOUNT_TIMEOUT_S = 60.0
# `vmstore recover` names this many problems one by one, and counts the rest.
RECOVER_LISTED_MAX = 20
# `vmstore status --wait-healthy` lets down chunkservers come back for this long;
# `--watch` redraws this often.
STATUS_LOST_SETTLE_S = 30.0
STATUS_WATCH_INTERVAL_S = 1.0
# `vmstore tls` certificates' lives (a host's within the 825 days browsers accept),
# and how long openssl may take to make one.
TLS_CA_DAYS = 3650
TLS_HOST_DAYS = 825
OPENSSL_TIMEOUT_S = 60.0
# `vmstore import` reads qemu-img's progress output this many bytes at a time.
IMPORT_PROGRESS_READ_BYTES = 256
