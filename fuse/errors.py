"""The one place where operating errors become errno values.

Everything under ``vmstore.dfs`` raises typed ``DfsError``s; the mount's
handlers let them propagate to ``to_fuse_error``. Errors that mean "the
data cannot be had right now" (no replica reachable, master gone past its
retry window) become EIO, as a disk would answer; a caller may retry.
"""

from __future__ import annotations

import errno

import pyfuse3

from vmstore.dfs import errors

ERRNO_BY_ERROR: dict[type[errors.DfsError], int] = {
    errors.NotFound: errno.ENOENT,
    errors.Exists: errno.EEXIST,
    errors.NotEmpty: errno.ENOTEMPTY,
    errors.NotADirectory: errno.ENOTDIR,
    errors.IsADirectory: errno.EISDIR,
    errors.InvalidArgument: errno.EINVAL,
    errors.NameTooLong: errno.ENAMETOOLONG,
    errors.NoSuchAttribute: pyfuse3.ENOATTR,
    errors.PermissionDenied: errno.EPERM,
    errors.FileTooLarge: errno.EFBIG,
    errors.NoSpace: errno.ENOSPC,
    errors.Busy: errno.EBUSY,
    errors.LeaseHeld: errno.EBUSY,
    errors.CrossDevice: errno.EXDEV,
    errors.ReadOnly: errno.EROFS,
    errors.AccessDenied: errno.EACCES,
    errors.RangeTooLarge: errno.E2BIG,
    # Data that cannot be read or written right now: what a failing disk says.
    errors.StaleChunkVersion: errno.EIO,
    errors.ChecksumMismatch: errno.EIO,
    errors.ReplicaUnavailable: errno.EIO,
    errors.ChunkNotFound: errno.EIO,
    errors.WriteRefused: errno.EIO,
    errors.LeaseLost: errno.EIO,
    errors.TokenExpired: errno.EIO,
    errors.ReadRefused: errno.EACCES,
    errors.ProtocolError: errno.EIO,
    errors.AuthenticationFailed: errno.EACCES,
    errors.PeerUnavailable: errno.EIO,
    errors.MasterUnavailable: errno.EIO,
}


def errno_of(error: errors.DfsError) -> int:
    for cls in type(error).__mro__:
        if cls in ERRNO_BY_ERROR:
            return ERRNO_BY_ERROR[cls]
    return errno.EIO


def to_fuse_error(error: errors.DfsError, *, names_an_inode: bool = False) -> pyfuse3.FUSEError:
    """``names_an_inode``: the request named an inode the kernel holds (not a name in a
    directory). That inode being gone means another host removed it, and the kernel
    still holds a name for it: ESTALE makes the kernel look the path up again and
    find what the name is now, where ENOENT would report an existing name missing."""
    value = errno_of(error)
    if names_an_inode and value == errno.ENOENT:
        return pyfuse3.FUSEError(errno.ESTALE)
    return pyfuse3.FUSEError(value)
