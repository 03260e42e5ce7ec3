"""What this client knows of each file it has open or has written: one owner.

A ``FileState`` holds, per file, how many handles are open here (writable
ones too) and how many closes are under way, whether it was written since
its size was last published, the size this client shows for it while it is
open, how far this client's writes reach beyond what the master was told,
the size last told and when, the lock every size report holds, and until
when writes go synchronous. ``FileStates`` is the registry the master link,
``ChunkIO`` and ``Client`` share (built once in ``open_client``), and that
the mount reads and updates through its ``Client``: a state is made by the
first open or write, and dropped at the end of the last close once nothing
is owed.

Whether a close is the file's last is decided when the close begins, before
anything awaits (``handle_closing``): of two closes at once, exactly one is
the last. The master holds the file until every close under way has ended.

Caveats:
* A library user may write without ``Client.opened``, so no close drops
  such a state. Beyond FILE_STATES_MAX states, the idle ones (no handle, no
  close under way, no size owed, no report under way) are dropped: a dropped
  file forgets its published size and its synchronous spell, which costs at
  most one master round trip or one unsynchronous batch, never a wrong size.
* Only the trio thread touches these states; nothing here awaits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import trio

from vmstore.dfs.constants import FILE_STATES_MAX


@dataclass(eq=False)
class FileState:
    inode: int
    # Client.opened minus the Client.closed begun since; writable: those opened
    # for writing (while any, this client holds the write lease, or takes it at
    # the first write after a handover).
    handles: int = 0
    writable_handles: int = 0
    # Client.closed begun and not yet ended. The master keeps the file while a
    # handle is open or closing here, and a restarted master is told so
    # (MasterClient session).
    closing: int = 0
    # Written (Client.write) since the size was last published, truncated or
    # fully fsynced: the mount's close publishes the size then (close-to-open).
    # A first open starts without it.
    written: bool = False
    # The size this client shows for the file while it is open here: the
    # master's last word, or further where this client's writes reach while
    # ``written`` (the master may not know them yet).
    size_bytes: int = 0
    # How far this client's writes reach beyond what it told the master (0:
    # nothing to tell). Grows with every write, goes at a WriteEnd that covers
    # it, and is forgotten, not told, by a truncate (issue 18).
    unpublished_bytes: int = 0
    # The largest size told since the file was opened here or truncated: an
    # fdatasync that grows nothing needs no master round trip.
    published_bytes: int = 0
    published_at_s: float = -math.inf  # trio clock, of the last size and mtime told
    # Held while the file's size is being told to the master (WriteEnd,
    # truncate). The master grows a file to the largest size its writer
    # reports, so a report from before a truncate that reached it after the
    # truncate would bring the cut bytes back as zeros (issue 18).
    size_lock: trio.Lock = field(default_factory=trio.Lock)
    # Until when (trio clock) the file's writes are sent synchronous: durable
    # on every replica when acknowledged, so that an fsync right after finds
    # nothing left to flush (a writer that fsyncs often saves a round trip).
    synchronous_until_s: float = 0.0

    def handle_opened(self, writable: bool) -> bool:
        """A handle opened here; True if it is the only one open or closing."""
        if not self.handles:
            self.written = False  # the last close published that (or failed to, and said so)
        self.handles += 1
        self.writable_handles += writable
        return self.handles + self.closing == 1

    def handle_closing(self, writable: bool) -> bool:
        """A handle's close begins; True if it was the last open here.

        Decided now, before the close awaits anything: of two closes at once,
        exactly one is the last.
        """
        assert self.handles > 0, f"inode {self.inode} closed more often than opened"
        assert self.writable_handles >= writable, f"inode {self.inode}: writable count"
        self.handles -= 1
        self.writable_handles -= writable
        self.closing += 1
        return not self.handles

    def handle_closed(self) -> bool:
        """A handle's close ended; True if no handle is open or closing here now."""
        assert self.closing > 0, f"inode {self.inode}: close ended twice"
        self.closing -= 1
        return not self.handles and not self.closing

    def showing(self, master_size_bytes: int) -> int:
        """The master says the file is ``master_size_bytes`` long: the size to show."""
        self.size_bytes = (max(self.size_bytes, master_size_bytes) if self.written
                           else master_size_bytes)
        return self.size_bytes

    def write_returned(self, end_bytes: int) -> None:
        """A Client.write reaching ``end_bytes`` returned."""
        self.written = True
        self.size_bytes = max(self.size_bytes, end_bytes)

    def truncated(self, size_bytes: int) -> None:
        """The master cut or extended the file to ``size_bytes``, final for every write before."""
        self.written = False
        self.size_bytes = size_bytes

    def wrote(self, end_bytes: int) -> None:
        """A write reaching ``end_bytes`` was made."""
        self.unpublished_bytes = max(self.unpublished_bytes, end_bytes)

    def size_published(self, size_bytes: int) -> None:
        """The master now knows ``size_bytes`` (writes made meanwhile may reach further)."""
        if self.unpublished_bytes <= size_bytes:
            self.unpublished_bytes = 0

    def size_owed(self, size_bytes: int) -> None:
        """Telling ``size_bytes`` failed: it is to be told to the master again."""
        self.unpublished_bytes = max(self.unpublished_bytes, size_bytes)

    def told(self, size_bytes: int) -> None:
        """The master took ``size_bytes`` (and the mtime) now."""
        self.published_bytes = max(self.published_bytes, size_bytes)
        self.published_at_s = trio.current_time()

    def forget_published(self) -> None:
        """The size told before no longer says anything (a truncate, a last close)."""
        self.published_bytes = 0
        self.published_at_s = -math.inf

    @property
    def idle(self) -> bool:
        """Nothing here that a fresh state would not say as well, as far as correctness goes."""
        return (not self.handles and not self.closing and not self.unpublished_bytes
                and not self.size_lock.locked())


class FileStates:
    """The per-file states of one client, by inode."""

    def __init__(self) -> None:
        self._states: dict[int, FileState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def find(self, inode: int) -> FileState | None:
        """The file's state, None if this client holds none (and so owes nothing)."""
        return self._states.get(inode)

    def get(self, inode: int) -> FileState:
        """The file's state, made if there is none."""
        state = self._states.get(inode)
        if state is None:
            if len(self._states) >= FILE_STATES_MAX:
                # A lock nobody holds has no waiters and protects nothing yet.
                self._states = {key: kept for key, kept in self._states.items()
                                if not kept.idle}
            state = self._states[inode] = FileState(inode)
        return state

    def unpublished_bytes(self, inode: int) -> int:
        """How far this client's writes reach, if beyond what the master was told."""
        state = self._states.get(inode)
        return 0 if state is None else state.unpublished_bytes

    def open_inodes(self) -> list[int]:
        """Files with a handle open or closing here (the master holds them)."""
        return [inode for inode, state in self._states.items()
                if state.handles or state.closing]

    def last_closed(self, state: FileState) -> None:
        """The file's last handle here closed: its next opener starts afresh.

        What is still owed (a reach not yet told, a report holding the lock)
        stays; such a state goes at a later close or when idle.
        """
        assert state.handles == 0
        assert state.closing == 0
        assert self._states.get(state.inode) is state
        state.forget_published()
        state.synchronous_until_s = 0.0
        if state.idle:
            del self._states[state.inode]
