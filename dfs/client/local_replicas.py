"""Short-circuit reads: read a replica on this host straight from its file.

Promise: ``LocalReplicas.read`` returns either exactly the bytes a network
read of the same range would return (every block checksum-verified, from a
replica whose header names the chunk and the location's version, holes as
zeros), or None, meaning "read it over the network". It never raises an
operating error and never reports damage: a checksum mismatch seen here may
be a read racing a write of the same block (the chunkserver's lock is not
held), so the network path, which holds it, is the judge of real damage.

How: a replica is local when its chunkserver's abstract Unix socket
(``protocol.local_socket``) exists in our network namespace. The
chunkserver checks the READ capability and the version and hands back a
read-only fd of the replica file; fds are kept in a bounded LRU keyed by
(chunkserver address, chunk id), each with the version it was opened for.
One persistent connection per local chunkserver, one request at a time on
it (a lock: opens are rare, reads are not). An address whose socket does
not exist (or does not answer as a chunkserver we trust) is remembered as
not local for NOT_LOCAL_RECHECK_S, so a remote replica costs a dict lookup
per read.

Fast path: a cached fd, then fstat (a deleted replica has no links, or the
quarantine's mode, see replica_format.QUARANTINED_FILE_MODE), the
header, the range's CRC entries and its data, all with pread on the trio
thread, whatever the size. The fstat and the header are skipped for
READAHEAD_TTL_S after they were last found good under the same caller
generation (see Readahead): random 4 KiB reads then cost two syscalls, not
four. Measured (mount_bench seq-read, 1 MiB reads, 5
rounds, 2 cores): 728 MB/s inline against 435 MB/s with reads of 256 KiB and
more in trio.to_thread. CRC32 of 4 KiB blocks holds the GIL, so a worker
thread adds its hop (~200 µs) and contention and takes no work off the
loop; the page-cache pread it could overlap costs less than the hop.

Readahead: a small read that follows on from the previous one of the same
replica (a sequential stream of 4 KiB O_DIRECT reads, as ``qemu-img bench``
makes) reads and verifies READAHEAD_BYTES at once, and the reads after it
are served from those bytes (measured: a 4 KiB read cost ~27 µs of the
mount's CPU here, a third of it, in fstat, three preads and a CRC). The
bytes are used only while the caller's ``generation`` is the one they were
read under (``ChunkIO`` moves it on before a write of its own is reported
done, on a truncate and on every open, for close-to-open) and for
READAHEAD_TTL_S at most, so another host's writes show within that time even
in a file held open.

A hung local chunkserver (stopped, or stuck behind its disk) keeps its
socket and never answers: an open waits for it no longer than the deadline
drawn from its recent opens (``protocol.latency``, HEDGE_CEILING_S at most),
then the read goes over the network (hedged there) and the server is left
alone for LOCAL_STALL_RECHECK_S. Reads of fds already open never ask it.

Caveats:
* A hung local *disk* still stalls a read of an open fd: the pread runs on
  the trio thread.
* An fd outlives its chunkserver: after a kill -9, a replica whose version
  still matches the location (no write happened since, or the master would
  have moved the version on) keeps being read from the file. It holds the
  data every surviving replica holds, checked block by block.
* A replica moved on (new version, deleted, rebuilt) is noticed by its
  version or link count on the next read from the file that checks them
  (at once after a write of ours, a truncate or an open; else within
  READAHEAD_TTL_S); that read falls back once and the fd is reopened or
  forgotten. Readahead bytes, served without any checks, are at most
  READAHEAD_TTL_S old.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass

import trio
from prometheus_client import Counter

from vmstore.dfs.client.zero_ranges import join_zero_ranges
from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES,
    HEDGE_CEILING_S,
    HEDGE_FLOOR_S,
    HEDGE_P99_MULTIPLE,
    LOCAL_CALL_TIMEOUT_S,
    LOCAL_FDS_MAX,
    LOCAL_STALL_RECHECK_S,
    NOT_LOCAL_RECHECK_S,
    READAHEAD_BYTES,
    READAHEAD_TTL_S,
)
from vmstore.dfs.errors import AccessDenied, DfsError, error_from_code
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.latency import LatencyTracker
from vmstore.dfs.protocol.local_socket import (
    close_all,
    local_socket_name,
    new_socket,
    peer_credentials,
    receive_frame,
    send_frame,
    trusted_uid,
)
from vmstore.dfs.protocol.replica_format import (
    CRC_ENTRY_BYTES,
    CRC_TABLE_OFFSET,
    HEADER_USED_BYTES,
    QUARANTINED_FILE_MODE,
    DamagedReplica,
    crcs_from_bytes,
    decode_header,
    pread_full,
    verified_range,
)

log = logging.getLogger(__name__)
_REQUEST_ID_MAX = 2**32 - 1
# connect() errors that mean "no such socket here": the replica is not local.
_NOT_LOCAL_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENOENT})

SHORT_CIRCUIT_READS = Counter(
    "vmstore_client_short_circuit_reads_total",
    "Reads of a replica on this host: served from its file (local), or handed to the"
    " network path after a problem (fallback)", ["result"], registry=REGISTRY)
LOCAL = SHORT_CIRCUIT_READS.labels("local")  # label lookups take a lock: once, not per read
FALLBACK = SHORT_CIRCUIT_READS.labels("fallback")

Server = tuple[str, int]


class _Unusable(Exception):
    """This fd cannot serve this read (moved on, deleted, refused): fall back."""


@dataclass(eq=False)
class _OpenReplica:
    fd: int
    version: int  # the version the chunkserver vouched for when it opened the fd
    last_end: int = -1  # where the last read of it ended
    ahead: bytes = b""  # verified bytes read ahead, from ahead_offset
    ahead_offset: int = 0
    ahead_generation: int = -1  # the caller's write generation when they were read
    ahead_until_s: float = 0.0
    # When the replica's links and header were last found good, by the caller's
    # generation and the clock: reads within READAHEAD_TTL_S under the same
    # generation skip those two syscalls (the bytes are still CRC-checked).
    checked_generation: int = -1
    checked_until_s: float = 0.0

    def read(self, chunk_id: int, offset: int, length: int, generation: int,
             now_s: float) -> bytes:
        """Bytes [offset, offset + length), from the readahead if it holds them (and is
        still good), else from the file; a read that follows on reads ahead."""
        start = offset - self.ahead_offset
        if (0 <= start and offset + length <= self.ahead_offset + len(self.ahead)
                and generation == self.ahead_generation and now_s < self.ahead_until_s):
            self.last_end = offset + length
            return self.ahead[start:start + length]
        follows_on = abs(offset - self.last_end) < READAHEAD_BYTES // 2  # reordered a bit
        self.last_end = offset + length
        checked = generation == self.checked_generation and now_s < self.checked_until_s
        if not follows_on or length >= READAHEAD_BYTES // 2:
            data = read_verified(self.fd, chunk_id, self.version, offset, length,
                                 check_replica=not checked)
        else:
            span = min(READAHEAD_BYTES, CHUNK_SIZE_BYTES - offset)
            self.ahead = read_verified(self.fd, chunk_id, self.version, offset, span,
                                       check_replica=not checked)
            self.ahead_offset, self.ahead_generation = offset, generation
            self.ahead_until_s = now_s + READAHEAD_TTL_S
            data = self.ahead[:length]
        if not checked:
            self.checked_generation, self.checked_until_s = generation, now_s + READAHEAD_TTL_S
        return data


class _Link:
    """The persistent connection to one local chunkserver; one request at a time."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.lock = trio.Lock()
        self.next_request_id = 1
        self.broken = False

    def close(self) -> None:
        self.broken = True
        self.sock.close()


class LocalReplicas:
    """Short-circuit reads of the replicas on this host (see the module docstring)."""

    def __init__(self, *, fds_max: int = LOCAL_FDS_MAX) -> None:
        assert fds_max >= 1
        self._fds_max = fds_max
        self._fds: OrderedDict[tuple[str, int, int], _OpenReplica] = OrderedDict()
        self._links: dict[Server, _Link] = {}
        self._not_local_until_s: dict[Server, float] = {}
        # Local chunkservers that let an open time out, until when (see ``stalled``).
        self._stalled_until_s: dict[Server, float] = {}
        self._closed = False
        # Per local chunkserver: how fast it opens replicas, for the open's deadline.
        self._open_latency = LatencyTracker(floor_s=HEDGE_FLOOR_S, ceiling_s=HEDGE_CEILING_S,
                                            multiple=HEDGE_P99_MULTIPLE,
                                            off_s=LOCAL_CALL_TIMEOUT_S)

    def close(self) -> None:
        """Close every fd and connection; reads after this all fall back."""
        self._closed = True
        for opened in self._fds.values():
            os.close(opened.fd)
        self._fds.clear()
        for link in self._links.values():
            link.close()
        self._links.clear()

    def stalled(self, host: str, port: int) -> bool:
        """Whether the chunkserver at host:port is local and lately let an open time out:
        the same process serves its network reads, so they are better asked last."""
        return trio.current_time() < self._stalled_until_s.get((host, port), 0.0)

    # --- reading ----------------------------------------------------------------
    async def read(self, location: m.ChunkLocation, offset: int, length: int,
                   generation: int = 0) -> bytes | None:
        """Bytes [offset, offset + length) of the chunk from a local replica, or None.

        ``generation`` must change whenever the replicas may have changed in a
        way the caller must see (``ChunkIO.replicas_changed``): readahead read
        under another generation is not used.
        """
        if location.read_capability is None or self._closed:
            return None  # admin connections only look; they have nothing to present
        now_s = trio.current_time()
        for replica in location.replicas:
            server = (replica.host, replica.port)
            if self._not_local_until_s.get(server, 0.0) > now_s:
                continue  # fast path for remote replicas
            key = (replica.host, replica.port, location.chunk_id)
            opened = self._fds.get(key)
            try:
                if opened is None or opened.version != location.version:
                    self._drop(key)
                    opened = await self._open_in_time(server, location)
                    if opened is None:
                        continue  # not local after all
                    if self._closed:  # closed while the open waited: keep nothing
                        os.close(opened.fd)
                        return None
                    self._remember(key, opened)
                else:
                    self._fds.move_to_end(key)
                # Inline, whatever the size (see the module docstring): no await
                # between here and the return, so no drop can close the fd meanwhile.
                data = opened.read(location.chunk_id, offset, length, generation, now_s)
            except (_Unusable, DamagedReplica, DfsError, OSError, trio.TooSlowError):
                # Any doubt: the network path reads it, and judges real damage.
                self._drop(key)
                FALLBACK.inc()
                return None
            LOCAL.inc()
            return data
        return None

    def _remember(self, key: tuple[str, int, int], opened: _OpenReplica) -> None:
        self._drop(key)  # a concurrent open of the same replica may have won meanwhile
        self._fds[key] = opened
        while len(self._fds) > self._fds_max:
            _, evicted = self._fds.popitem(last=False)
            os.close(evicted.fd)

    def _drop(self, key: tuple[str, int, int]) -> None:
        opened = self._fds.pop(key, None)
        if opened is not None:
            os.close(opened.fd)

    # --- opening ----------------------------------------------------------------
    async def _open_in_time(self, server: Server, location: m.ChunkLocation
                            ) -> _OpenReplica | None:
        """``_open`` within the server's deadline (``protocol.latency``).

        A chunkserver that is alive but silent (stopped, or stuck behind its
        disk) keeps its Unix socket: a connect and a send succeed and no
        answer comes. Past the deadline the read falls back to the network,
        whose reads are hedged, and the server is not asked again for
        LOCAL_STALL_RECHECK_S.
        """
        started_s = trio.current_time()
        try:
            with trio.fail_after(self._open_latency.deadline_s(server)):
                opened = await self._open(server, location)
        except trio.TooSlowError:
            self._not_local_until_s[server] = trio.current_time() + LOCAL_STALL_RECHECK_S
            self._stalled_until_s[server] = self._not_local_until_s[server]
            log.info("%s:%d: the local chunkserver did not open a replica within %.3f s;"
                     " reading over the network for %.0f s", *server,
                     trio.current_time() - started_s, LOCAL_STALL_RECHECK_S,
                     extra=about("local_open_late", host=server[0], error="late"))
            raise
        if opened is not None:
            self._open_latency.record(server, trio.current_time() - started_s)
        return opened

    async def _open(self, server: Server, location: m.ChunkLocation) -> _OpenReplica | None:
        """A new fd of the replica at ``server``; None if that chunkserver is not local.

        Raises _Unusable (or an OSError, TooSlowError) when it is local but
        did not give us the fd.
        """
        link = await self._link(server)
        if link is None:
            return None
        async with link.lock:
            if link.broken:
                raise _Unusable("the connection broke while this open waited")
            request_id = link.next_request_id
            link.next_request_id = request_id % _REQUEST_ID_MAX + 1
            try:
                with trio.fail_after(LOCAL_CALL_TIMEOUT_S):
                    await send_frame(link.sock, m.ToChunkserverOpenLocalReplica(
                        chunk_id=location.chunk_id, version=location.version,
                        capability=location.read_capability), request_id, response=False)
                    received = await receive_frame(link.sock)
            except BaseException:
                # A frame may be on its way still: the connection is out of step.
                self._forget_link(server, link)
                raise
        if received is None:
            self._forget_link(server, link)
            raise _Unusable("the chunkserver closed the local connection")
        header, reply, fds = received
        if not header.is_response or header.request_id != request_id:
            close_all(fds)
            self._forget_link(server, link)
            raise _Unusable(f"reply {header.request_id} to request {request_id}")
        return self._opened_from(server, location, reply, fds)

    def _opened_from(self, server: Server, location: m.ChunkLocation, reply: m.Message,
                     fds: list[int]) -> _OpenReplica:
        if isinstance(reply, m.ErrorReply):
            close_all(fds)
            error = error_from_code(reply.code, reply.message)
            if isinstance(error, AccessDenied):
                # This process may not hold replica fds: stop asking for a while.
                self._not_local_until_s[server] = trio.current_time() + NOT_LOCAL_RECHECK_S
            raise _Unusable(error.message)
        if (not isinstance(reply, m.LocalReplicaReply) or len(fds) != 1
                or reply.chunk_id != location.chunk_id or reply.version != location.version):
            close_all(fds)
            raise _Unusable(f"unexpected {type(reply).__name__} with {len(fds)} fd(s)")
        fd = fds[0]
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _Unusable("the fd is not a regular file")
        return _OpenReplica(fd, location.version)

    async def _link(self, server: Server) -> _Link | None:
        """The connection to the local chunkserver at ``server``; None if there is none."""
        link = self._links.get(server)
        if link is not None and not link.broken:
            return link
        sock = new_socket()
        try:
            with trio.fail_after(LOCAL_CALL_TIMEOUT_S):
                await sock.connect(local_socket_name(*server))
            _pid, uid, _gid = peer_credentials(sock)
        except OSError as error:
            sock.close()
            if error.errno not in _NOT_LOCAL_ERRNOS:
                raise
            self._not_local_until_s[server] = trio.current_time() + NOT_LOCAL_RECHECK_S
            return None
        except BaseException:
            sock.close()
            raise
        if not trusted_uid(uid):
            sock.close()
            log.warning("%s:%d: the process at its local socket runs as uid %d, not root or"
                        " ours: not a chunkserver we read files from", *server, uid,
                        extra=about("local_socket_untrusted", host=server[0], error=f"uid {uid}"))
            self._not_local_until_s[server] = trio.current_time() + NOT_LOCAL_RECHECK_S
            return None
        raced = self._links.get(server)
        if raced is not None and not raced.broken:
            sock.close()  # a concurrent reader connected first: use its connection
            return raced
        link = _Link(sock)
        self._links[server] = link
        return link

    def _forget_link(self, server: Server, link: _Link) -> None:
        link.close()
        if self._links.get(server) is link:
            del self._links[server]


def _retired(status: os.stat_result) -> bool:
    """Unlinked, or moved to the chunkserver's quarantine (linked there: its mode says)."""
    return status.st_nlink == 0 or stat.S_IMODE(status.st_mode) == QUARANTINED_FILE_MODE


def read_verified(fd: int, chunk_id: int, version: int, offset: int, length: int, *,
                  check_replica: bool = True) -> bytes:
    """Chunk bytes [offset, offset + length) from a replica file, verified as the
    chunkserver verifies them; raises (_Unusable, DamagedReplica, ChecksumMismatch,
    OSError) on any doubt. Synchronous, on the caller's thread. Without
    ``check_replica``, whether the file is still linked and at ``version`` is
    taken as known (the blocks are checked all the same)."""
    if check_replica and _retired(os.fstat(fd)):
        raise _Unusable(f"chunk {chunk_id:016x}: the replica was deleted")
    if check_replica and decode_header(os.pread(fd, HEADER_USED_BYTES, 0),
                                       chunk_id) != version:
        raise _Unusable(f"chunk {chunk_id:016x}: the replica is not at version {version}")
    if length == 0:
        return b""
    first = offset // BLOCK_SIZE_BYTES
    last = (offset + length - 1) // BLOCK_SIZE_BYTES + 1
    table_bytes = (last - first) * CRC_ENTRY_BYTES
    raw = pread_full(fd, table_bytes, CRC_TABLE_OFFSET + first * CRC_ENTRY_BYTES)
    if len(raw) != table_bytes:
        raise DamagedReplica("CRC table truncated")
    payload, zero_ranges = verified_range(fd, crcs_from_bytes(raw), first, offset, length,
                                          chunk_id)
    return join_zero_ranges(offset, length, zero_ranges, payload)

