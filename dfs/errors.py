"""Operating errors: things that go wrong in a healthy program.

Each error has a stable ``code`` so that it crosses the wire unchanged: the
master or a chunkserver raises, the protocol carries the code and message,
and the client raises the same class again. ``vmstore.fuse.errors`` maps
them to errno values; nothing in ``dfs`` knows about errno.

Programmer errors (broken invariants) are ``assert``s, never these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar


class DfsError(Exception):
    """Base of every operating error. ``code`` is its wire identity."""

    code: ClassVar[int] = 1

    def __init__(self, message: str = "", server_id: int = 0) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        # The chunkserver at fault, when one is: a client drops it from the
        # write chain. 0 when the fault is nobody's in particular.
        self.server_id = server_id


# --- namespace -------------------------------------------------------------
class NotFound(DfsError):
    code = 2


class Exists(DfsError):
    code = 3


class NotEmpty(DfsError):
    code = 4


class NotADirectory(DfsError):
    code = 5


class IsADirectory(DfsError):
    code = 6


class InvalidArgument(DfsError):
    code = 7


class NameTooLong(DfsError):
    code = 8


class NoSuchAttribute(DfsError):
    code = 9


class PermissionDenied(DfsError):
    code = 10


class FileTooLarge(DfsError):
    code = 11


class NoSpace(DfsError):
    """No chunkserver can take the data (all full, or too few up for the goal)."""

    code = 12


class Busy(DfsError):
    code = 13


class LeaseHeld(Busy):
    """Another client session holds the file's write lease; the message names its host."""

    code = 17


class CrossDevice(DfsError):
    code = 14


class ReadOnly(DfsError):
    """A change asked of a read-only export (or a read-only mount)."""

    code = 15


class AccessDenied(DfsError):
    """The master's exports refuse this: an address not exported, an inode outside
    the mount's directory, a request an admin connection may not make."""

    code = 18


class RangeTooLarge(DfsError):
    """A value (xattr, symlink target) larger than its limit."""

    code = 16


# --- data path -------------------------------------------------------------
class StaleChunkVersion(DfsError):
    """The caller's chunk version is not the replica's: re-ask the master."""

    code = 20


class ChecksumMismatch(DfsError):
    """A replica's bytes do not match their checksum: read another replica."""

    code = 21


class ReplicaUnavailable(DfsError):
    """No replica of a chunk could be reached or read."""

    code = 22


class ChunkNotFound(DfsError):
    code = 23


class WriteRefused(DfsError):
    """A chunkserver refused a write or flush: its capability is missing, forged, or for
    another chunk or operation."""

    code = 24


class LeaseLost(DfsError):
    """This client no longer holds the file's write lease: it is fenced.

    Never retried: another host may be writing the file now, so a write from
    here must not land anywhere. The file must be opened again.
    """

    code = 25


class SessionLost(LeaseLost):
    """The session a mutation was stamped with ended before it was answered (it
    expired while this client was cut off; a new one took its place).

    Raised by the client, never sent: whether the master applied it is not
    known, and under the new session it would not be exactly-once, so it is
    not sent again. The session's leases went with it.
    """

    code = 28


class TokenExpired(DfsError):
    """A capability is past its life (or a write one older than the chunkserver): get a
    fresh one."""

    code = 26


class TokenPredatesRestart(TokenExpired):
    """A chunkserver refused a write capability issued before it started: it lost the
    lease epochs it had seen, so it cannot tell a fenced writer from a current one.

    Says nothing against the writer nor any replica: a chain member that applied the
    write passes it back unchanged, and the writer repeats the write on the whole chain
    with a fresh token."""

    code = 29


class TokenOfOldGeneration(TokenPredatesRestart):
    """A chunkserver refused a capability issued by a master of an older generation than
    the newest it has seen (a deposed HA leader, or a master since restarted), or of a
    format from before generations: fencing across masters.

    Handled as TokenPredatesRestart is: the client fetches a fresh capability from the
    current master and repeats the call (a write on the whole chain)."""

    code = 19


class ReadRefused(DfsError):
    """A chunkserver refused a read: its capability is missing, forged, or for another
    chunk or operation."""

    code = 27


# --- connections -------------------------------------------------------------
class ProtocolError(DfsError):
    """The peer sent something that is not our protocol."""

    code = 30


class InvalidField(ProtocolError):
    """A message that decoded with a field out of its range; the message names the field.

    The frame itself was whole, so the stream is still in step: a request
    is answered with InvalidArgument instead of the connection being lost.
    """

    code = 34


class AuthenticationFailed(DfsError):
    code = 31


class PeerUnavailable(DfsError):
    """A connection could not be made, or broke, or timed out."""

    code = 32


class MasterUnavailable(PeerUnavailable):
    code = 33


class NoAnswer(PeerUnavailable):
    """A call's deadline passed with the connection still up: the peer is silent (hung
    process or host, cut link with no reset) or slow."""

    code = 35


class ConfigError(DfsError):
    code = 40


class DamagedMetadata(DfsError):
    """The master's database holds something its schema does not allow; the message says what."""

    code = 41


class ClusterMismatch(DfsError):
    """A master and a chunkserver that must not work together: of different clusters, or
    the master's metadata is older than what the chunkserver has seen. The chunkserver
    keeps its replicas and tries again later."""

    code = 42


class StaleMaster(ClusterMismatch):
    """A chunkserver refused a command of a master whose generation (its epoch) is older
    than one the chunkserver has seen since it registered: a deposed master."""

    code = 46


class EtcdUnavailable(DfsError):
    """No etcd endpoint answered a call in time (metadata HA); the message names each
    endpoint's failure. The call may still have taken effect."""

    code = 43


class JournalTrimmed(DfsError):
    """A standby's copy is older than the oldest entry the HA journal keeps (it was down
    while a snapshot trimmed it): the copy is rebuilt from the snapshot."""

    code = 45


class NotLeader(MasterUnavailable):
    """This master is not (or no longer) the leader of an HA cluster: nothing it did for
    the request was acknowledged. Clients and chunkservers go to another master."""

    code = 44


# --- tools: migration, image import, bench ---------------------------------
class PreflightFailed(DfsError):
    """A guest cannot move as asked; the message lists every problem preflight found."""

    code = 50


class MigrationFailed(DfsError):
    """A migration, evacuation or failover could not be done; the guest stays where it ran."""

    code = 51


class UnknownHost(DfsError):
    """A host named on the command line is neither configured nor a libvirt URI."""

    code = 52


class ImportFailed(DfsError):
    code = 53


class BenchFailed(DfsError):
    """A benchmark tool is missing, failed, or printed what we cannot read."""

    code = 54


# Every code is registered here, once: a DfsError subclass defined in another
# module would never reach this table, so tests/unit/test_errors.py checks
# that none is.
_BY_CODE: dict[int, type[DfsError]] = {}


def _register(cls: type[DfsError]) -> None:
    assert cls.code not in _BY_CODE, f"duplicate error code {cls.code}"
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(DfsError)


def error_from_code(code: int, message: str, server_id: int = 0) -> DfsError:
    """The exception a peer meant by ``code``; unknown codes stay DfsError."""
    return _BY_CODE.get(code, DfsError)(message, server_id)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            leaves.extend(_leaves(error))
        else:
            leaves.append(error)
    return leaves


@contextmanager
def unwrapped_errors() -> Iterator[None]:
    """Let the one error out of a nursery's exception group.

    Concurrent legs of one operation (a local write and its forward down the
    chain) may both fail; the caller wants one DfsError, preferably one that
    names a chunkserver at fault. Anything else (a bug, a cancellation mixed
    with others) stays a group and propagates as such.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        operating = [e for e in leaves if isinstance(e, DfsError)]
        cancelled = [e for e in leaves if _is_cancellation(e)]
        if len(operating) + len(cancelled) != len(leaves):
            raise
        if cancelled:
            # A shutdown raced with a peer's failure: the shutdown wins.
            raise cancelled[0] from None
        raise max(operating, key=lambda e: e.server_id != 0) from None


def _is_cancellation(error: BaseException) -> bool:
    # trio.Cancelled, without importing trio into the bottom layer.
    return type(error).__name__ == "Cancelled" and type(error).__module__.startswith("trio")
