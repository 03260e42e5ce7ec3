"""pyfuse3 operations over the vmstore client library: a thin boundary.

Every handler translates arguments, calls ``vmstore.dfs.client.Client`` and
turns a ``DfsError`` into an errno (``vmstore.fuse.errors``); nothing else
here decides anything about storage.

Coherence between hosts (issue 18), better than NFS's close-to-open:
* ``flush`` (close) publishes this mount's file size and mtime, ``fsync``
  makes the data durable on every replica first and publishes a grown size.
* The master tells every other mount what a change made stale before the
  changer hears back (MasterToClientInvalidate, dfs.master.invalidations):
  here the kernel drops those names (``invalidate_entry``, in a worker
  thread: it waits for this mount's own requests in that directory) and
  attributes (``invalidate_inode``, attributes only: that never waits), and
  this mount its own cached attributes. So a lookup or stat after another
  host's change asks again and sees it, with no window.
* ``open`` asks the master for fresh attributes and drops the kernel's
  (another host's change may not have reached a mount that was cut off), and
  never keeps the page cache (``keep_cache`` off).
* A name the kernel still holds whose inode is gone (a change this mount did
  not hear of) is answered ESTALE, never ENOENT: the kernel looks it up again.
* Names the master says are missing are not kept by the kernel (a FUSE
  ENOENT reply leaves no cached negative entry), so a name another host
  creates is found at once.
Entry and attribute caches live ATTR_TIMEOUT_S at most, the bound for a mount
that misses a notice (cut off from the master while the change was made).

Caveats:
* pyfuse3 has no fallocate, lseek(SEEK_DATA/HOLE), lock or ioctl
  handlers: punch-hole is EOPNOTSUPP, locks are local to this host.
* A file unlinked while open here stays readable and writable through the
  open handles until they close: the mount holds it at the master. A mount
  that dies without closing leaves such a file until the master restarts
  (session expiry comes with the lease issue).
* st_ino is the master's inode id: stable for the file's life, never reused.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio
from prometheus_client import Counter, Histogram

from vmstore.dfs.client.client import Client
from vmstore.dfs.client.create_open import create_and_open
from vmstore.dfs.constants import (
    ATTR_TIMEOUT_S,
    CAPABILITY_CACHE_ENTRIES_MAX,
    ENTRY_INVALIDATION_WAIT_S,
    ENTRY_TIMEOUT_S,
    IO_ERROR_LOG_INTERVAL_S,
    READDIR_BATCH_ENTRIES_MAX,
)
from vmstore.dfs.errors import DfsError, LeaseHeld, NoSuchAttribute
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import LATENCY_BUCKETS_S, REGISTRY
from vmstore.dfs.protocol.messages import FileAttrs, MasterToClientInvalidate
from vmstore.fuse.errors import to_fuse_error

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

BLOCK_SIZE_FOR_TOOLS = 65536  # st_blksize: tools size their I/O by it
CAPABILITY_XATTR = b"security.capability"
# readdir positions: 1 after ".", 2 after "..", cookie + 2 after a real entry.
_DOT_POSITIONS = 2


OPERATION_SECONDS = Histogram("vmstore_mount_operation_seconds",
                              "Time to answer a kernel request, by FUSE operation",
                              ["operation"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
OPERATION_ERRORS = Counter("vmstore_mount_operation_errors_total",
                           "Kernel requests answered with an error, by operation and errno",
                           ["operation", "errno"], registry=REGISTRY)
DATA_BYTES = Counter("vmstore_mount_data_bytes_total", "Bytes read and written through the"
                     " mount", ["direction"], registry=REGISTRY)
BYTES_READ = DATA_BYTES.labels("read")  # label lookups take a lock: once, not per request
BYTES_WRITTEN = DATA_BYTES.labels("written")
# (operation, errno) -> its counter, looked up once: some errors come with every
# buffered write (ENOATTR for security.capability).
_operation_error_counters: dict[tuple[str, int], Counter] = {}


def _count_error(operation: str, errno_value: int) -> None:
    counter = _operation_error_counters.get((operation, errno_value))
    if counter is None:
        counter = OPERATION_ERRORS.labels(operation, errno.errorcode.get(errno_value, "?"))
        _operation_error_counters[(operation, errno_value)] = counter
    counter.inc()


# An EIO says nothing to whoever gets it; the log says why, at most once per
# operation every IO_ERROR_LOG_INTERVAL_S (a guest retrying must not flood it).
_io_errors_unlogged: dict[str, int] = {}
_io_error_logged_s: dict[str, float] = {}


def _log_io_error(operation: str, error: DfsError) -> None:
    now = time.monotonic()
    unlogged = _io_errors_unlogged.get(operation, 0) + 1
    if now - _io_error_logged_s.get(operation, -IO_ERROR_LOG_INTERVAL_S) < IO_ERROR_LOG_INTERVAL_S:
        _io_errors_unlogged[operation] = unlogged
        return
    _io_error_logged_s[operation] = now
    _io_errors_unlogged.pop(operation, None)
    log.warning("%s failed with EIO (%d time(s) since the last report): %s", operation,
                unlogged, error.message, extra=about("io_error", operation=operation,
                                                     count=unlogged, error=error.message))


# Requests that name an inode the kernel holds: its being gone is ESTALE (to_fuse_error).
_BY_INODE = frozenset({"getattr", "setattr", "open", "readlink", "readdir", "link",
                       "getxattr", "setxattr", "listxattr", "removexattr"})


def translated(handler: Callable[P, Coroutine[Any, Any, R]]
               ) -> Callable[P, Coroutine[Any, Any, R]]:
    """Operating errors become errno values here, and only here; each call is measured."""
    operation = handler.__name__
    seconds = OPERATION_SECONDS.labels(operation)
    names_an_inode = operation in _BY_INODE

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.perf_counter()
        try:
            return await handler(*args, **kwargs)
        except DfsError as error:
            fuse_error = to_fuse_error(error, names_an_inode=names_an_inode)
            _count_error(operation, fuse_error.errno)
            if fuse_error.errno == errno.EIO:
                _log_io_error(operation, error)
            raise fuse_error from None
        except pyfuse3.FUSEError as error:
            _count_error(operation, error.errno)
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    return wrapper


@dataclass
class OpenFile:
    """What only the mount keeps of a file while handles to it are open here.

    The rest (handles, the size shown, written since published) is the
    client's FileState, read through ``Client.files``.
    """

    # The master's attributes and when they came (time.monotonic()): while this
    # mount holds the write lease, nobody else changes the file's data or size,
    # so the kernel's GETATTR after each write is answered from here.
    attrs: FileAttrs | None = None
    attrs_at_s: float = 0.0


def _tell_kernel(invalidate: Callable[..., None], *args: Any) -> None:
    """A pyfuse3 invalidation; the kernel holding nothing of it is fine."""
    try:
        invalidate(*args)
    except OSError:
        pass  # ENOENT: nothing cached there; not mounted (yet, or any more): nothing either


def _forget_entries(entries: list[tuple[int, bytes]]) -> None:
    """In a worker thread: the kernel drops these names (each waits for this mount's
    own requests in its directory to end)."""
    for parent, name in entries:
        _tell_kernel(pyfuse3.invalidate_entry, parent, name)


@dataclass
class Handle:
    inode: int
    writable: bool
    # O_SYNC or O_DSYNC: every write is on stable storage on every replica
    # before it returns. Other writes return once queued (write-behind) and
    # are durable at fsync, as on a disk with a volatile write cache.
    synchronous: bool = False


def entry_attributes(attrs: FileAttrs, size_bytes: int | None = None) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attrs.inode
    entry.generation = 0
    entry.entry_timeout = ENTRY_TIMEOUT_S
    entry.attr_timeout = ATTR_TIMEOUT_S
    entry.st_mode = attrs.mode
    entry.st_nlink = attrs.nlink
    entry.st_uid = attrs.uid
    entry.st_gid = attrs.gid
    entry.st_rdev = attrs.rdev
    entry.st_size = attrs.size_bytes if size_bytes is None else size_bytes
    entry.st_blksize = BLOCK_SIZE_FOR_TOOLS
    entry.st_blocks = -(-attrs.allocated_bytes // 512)
    entry.st_atime_ns = attrs.atime_ns
    entry.st_mtime_ns = attrs.mtime_ns
    entry.st_ctime_ns = attrs.ctime_ns
    return entry


class VmstoreOperations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, client: Client, writeback_cache: bool = False) -> None:
        super().__init__()
        self.client = client
        # The kernel's writeback cache batches buffered writes into large,
        # concurrent requests (measured: 1 GiB dd with conv=fsync went from
        # 62 to 129 MB/s; O_DIRECT I/O, QEMU cache=none, bypasses it). But
        # with it the kernel trusts its own cached file size over the
        # master's, so another host's appends stay invisible: off by default,
        # for single-host use only.
        self.enable_writeback_cache = writeback_cache
        # By inode, while a handle is open here (FileState.handles).
        self.open_files: dict[int, OpenFile] = {}
        self.handles: dict[int, Handle] = {}
        self._next_handle = 1
        # The kernel asks for security.capability before every write (to drop
        # file capabilities); files without one are remembered here so that a
        # write costs no master round trip for it. Another host setting a
        # capability is seen after a remount: capabilities on guest images
        # do not matter, a round trip per write does.
        self.without_capabilities: set[int] = set()
        client.master.on_invalidate.append(self.invalidated)

    # --- what another host changed ------------------------------------------------
    async def invalidated(self, notice: MasterToClientInvalidate) -> None:
        """The master says another session changed these: nothing here, in this mount
        or in the kernel, may answer from before the change once this returns."""
        for inode in [*notice.inodes, *(attrs.inode for attrs in notice.files)]:
            self.without_capabilities.discard(inode)
            open_file = self.open_files.get(inode)
            if open_file is not None:
                open_file.attrs = None
            # Attributes only: never waits. The page cache goes at the next open
            # (keep_cache off), and when the kernel sees a new mtime.
            _tell_kernel(pyfuse3.invalidate_inode, inode, True)
        if notice.entries:
            # The kernel first waits for this mount's own requests in the directory; one
            # of those may wait for the master, which waits for this answer: bounded.
            with trio.move_on_after(ENTRY_INVALIDATION_WAIT_S):
                await trio.to_thread.run_sync(_forget_entries, notice.entries,
                                              abandon_on_cancel=True)

    # --- attributes ---------------------------------------------------------------
    def _open_here(self, inode: int) -> bool:
        state = self.client.files.find(inode)
        return state is not None and state.handles > 0

    def _entry(self, attrs: FileAttrs) -> pyfuse3.EntryAttributes:
        state = self.client.files.find(attrs.inode)
        open_file = self.open_files.get(attrs.inode)
        if state is None or not state.handles or open_file is None:
            return entry_attributes(attrs)
        if attrs is not open_file.attrs:
            open_file.attrs, open_file.attrs_at_s = attrs, time.monotonic()
        return entry_attributes(attrs, state.showing(attrs.size_bytes))

    @translated
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._entry(await self.client.getattr(parent_inode))
        if name == b"..":
            raise pyfuse3.FUSEError(errno.ENOTSUP)  # not needed: no NFS export
        return self._entry(await self.client.lookup(parent_inode, name))

    @translated
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        state = self.client.files.find(inode)
        open_file = self.open_files.get(inode)
        if (state is not None and state.handles and open_file is not None
                and open_file.attrs
                and time.monotonic() - open_file.attrs_at_s < ATTR_TIMEOUT_S):
            # Open here: the attributes the open (or a later answer) brought, which a
            # notice of another host's change drops; the lease holder's size is this
            # mount's to know.
            return entry_attributes(open_file.attrs, state.size_bytes)
        return self._entry(await self.client.getattr(inode))

    @translated
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        changes: dict[str, int] = {}
        if fields.update_mode:
            changes["mode"] = stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            changes["uid"] = attr.st_uid
        if fields.update_gid:
            changes["gid"] = attr.st_gid
        if fields.update_size:
            changes["size_bytes"] = attr.st_size
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
        if not changes:
            return self._entry(await self.client.getattr(inode))
        return self._entry(await self.client.setattr(inode, **changes))

    # --- namespace --------------------------------------------------------------------
    @translated
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.client.create(parent_inode, name, mode, ctx.uid,
                                                    ctx.gid, rdev))

    @translated
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.client.mkdir(parent_inode, name, stat.S_IMODE(mode),
                                                   ctx.uid, ctx.gid))

    @translated
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.client.symlink(parent_inode, name, target, ctx.uid,
                                                     ctx.gid))

    @translated
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.client.link(inode, new_parent_inode, new_name))

    @translated
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.client.unlink(parent_inode, name)
        self._forget_cached_attrs()  # a link count changed, we do not know whose

    @translated
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.client.rmdir(parent_inode, name)

    @translated
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        await self.client.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
        self._forget_cached_attrs()  # a replaced target's link count, a ctime

    def _forget_cached_attrs(self) -> None:
        for open_file in self.open_files.values():
            open_file.attrs = None

    @translated
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return await self.client.readlink(inode)

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    @translated
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if start_id < _DOT_POSITIONS:
            here = entry_attributes(await self.client.getattr(fh))
            for position, name in ((1, b"."), (2, b"..")):
                if start_id < position and not pyfuse3.readdir_reply(token, name, here,
                                                                      position):
                    return
        cookie = max(0, start_id - _DOT_POSITIONS)
        while entries := await self.client.readdir(fh, cookie, READDIR_BATCH_ENTRIES_MAX):
            for entry in entries:
                if not pyfuse3.readdir_reply(token, entry.name, self._entry(entry.attrs),
                                             entry.cookie + _DOT_POSITIONS):
                    return
                cookie = entry.cookie

    async def releasedir(self, fh: int) -> None:
        return None

    @translated
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # The master answers namespace changes before they are durable: an fsync
        # of a directory waits until this mount's are (as on a local disk).
        await self.client.sync_metadata()

    # --- files --------------------------------------------------------------------
    def _new_handle(self, attrs: FileAttrs, flags: int) -> pyfuse3.FileInfo:
        """The handle of an open the client has counted (``Client.opened``)."""
        state = self.client.files.find(attrs.inode)
        assert state is not None, f"inode {attrs.inode}: a handle without Client.opened"
        assert state.handles > 0, f"inode {attrs.inode}: a handle without Client.opened"
        open_file = self.open_files.setdefault(attrs.inode, OpenFile())
        open_file.attrs, open_file.attrs_at_s = attrs, time.monotonic()
        state.showing(attrs.size_bytes)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        handle_id = self._next_handle
        self._next_handle += 1
        self.handles[handle_id] = Handle(attrs.inode, writable,
                                         bool(flags & (os.O_SYNC | os.O_DSYNC)))
        info = pyfuse3.FileInfo()
        info.fh = handle_id
        info.keep_cache = False  # close-to-open: another host may have changed the data
        # An O_DIRECT open (QEMU cache=none) bypasses the page cache anyway. As a
        # direct_io handle its writes also skip the kernel's check for privileges
        # to drop, a GETXATTR of security.capability per write otherwise (half the
        # requests of a 4 KiB write stream). Not for a setuid or setgid file,
        # whose bits a write must still clear, and not for every open: shared
        # mmap needs the page cache.
        info.direct_io = bool(flags & os.O_DIRECT) and not attrs.mode & (stat.S_ISUID
                                                                        | stat.S_ISGID)
        return info

    @translated
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        attrs = await self.client.getattr(inode)  # fresh: close-to-open
        if stat.S_ISDIR(attrs.mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        await self._opened(inode, writable, ctx)
        try:
            return await self._open_file(inode, flags, attrs)
        except BaseException:
            await self.client.closed(inode, writable)
            raise

    async def _opened(self, inode: int, writable: bool, ctx: Any) -> None:
        try:
            await self.client.opened(inode, writable)
        except LeaseHeld as error:
            log.warning("open for writing by pid %d refused: %s", ctx.pid, error.message,
                        extra=about("open_refused_lease_held", inode=inode, pid=ctx.pid,
                                    error=error.message))
            raise

    async def _open_file(self, inode: int, flags: int, attrs: FileAttrs) -> pyfuse3.FileInfo:
        if flags & os.O_TRUNC and attrs.size_bytes:
            # libfuse 3 negotiates atomic O_TRUNC: the kernel sends no setattr,
            # truncating is ours to do here.
            attrs = await self.client.setattr(inode, size_bytes=0)
        state = self.client.files.find(inode)
        assert state is not None, f"inode {inode}: opened without its state"
        if not state.written:
            # The kernel may hold attributes from before another host's change whose
            # notice never came here (this mount was cut off): it asks again, and the
            # answer comes from what this open brought (getattr).
            _tell_kernel(pyfuse3.invalidate_inode, inode, True)
        return self._new_handle(attrs, flags)

    @translated
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        # One round trip: the master creates, holds and (for a writer) leases the
        # file in one commit (dfs.client.create_open).
        attrs = await create_and_open(self.client, parent_inode, name, mode, ctx.uid,
                                      ctx.gid, writable=flags & os.O_ACCMODE != os.O_RDONLY)
        # A new file has no xattrs: the kernel's question before its first write needs
        # no round trip (another host's setxattr drops this, as for any file).
        self._remember_no_capabilities(attrs.inode)
        return self._new_handle(attrs, flags), self._entry(attrs)

    @translated
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles[fh]
        state = self.client.files.find(handle.inode)
        assert state is not None, f"inode {handle.inode}: a handle open without its state"
        data = await self.client.read(handle.inode, off, size, state.size_bytes)
        BYTES_READ.inc(len(data))
        return data

    @translated
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles[fh]
        written = await self.client.write(handle.inode, off, buf, wait=False,
                                          synchronous=handle.synchronous)
        BYTES_WRITTEN.inc(written)
        return written

    @translated
    async def flush(self, fh: int) -> None:
        await self.client.publish_written(self.handles[fh].inode)

    @translated
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.client.fsync(self.handles[fh].inode, datasync)

    @translated
    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        try:
            # The client decides whether this is the file's last handle here
            # (then it publishes the size) before it awaits anything.
            await self.client.closed(handle.inode, handle.writable, publish_written=True)
        finally:
            if not self._open_here(handle.inode):
                self.open_files.pop(handle.inode, None)

    # --- extended attributes -------------------------------------------------------------
    @translated
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if name == CAPABILITY_XATTR and inode in self.without_capabilities:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)  # fast path: asked on every write
        try:
            return await self.client.getxattr(inode, name)
        except NoSuchAttribute:
            if name == CAPABILITY_XATTR:
                self._remember_no_capabilities(inode)
            raise

    def _remember_no_capabilities(self, inode: int) -> None:
        if len(self.without_capabilities) >= CAPABILITY_CACHE_ENTRIES_MAX:
            self.without_capabilities.clear()
        self.without_capabilities.add(inode)

    @translated
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.without_capabilities.discard(inode)
        await self.client.setxattr(inode, name, value)

    @translated
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return await self.client.listxattr(inode)

    @translated
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.without_capabilities.discard(inode)
        await self.client.removexattr(inode, name)

    # --- the filesystem -------------------------------------------------------------
    @translated
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        space = await self.client.statfs()
        data = pyfuse3.StatvfsData()
        data.f_bsize = BLOCK_SIZE_FOR_TOOLS
        data.f_frsize = BLOCK_SIZE_FOR_TOOLS
        data.f_blocks = space.total_bytes // BLOCK_SIZE_FOR_TOOLS
        data.f_bfree = space.free_bytes // BLOCK_SIZE_FOR_TOOLS
        data.f_bavail = data.f_bfree
        data.f_files = space.inodes_used + 2**32
        data.f_ffree = 2**32
        data.f_favail = data.f_ffree
        data.f_namemax = 255
        return data
