"""Frames with file descriptors over a chunkserver's Unix socket (short-circuit reads).

Promise: ``receive_frame`` returns one whole, decoded frame and the fds that
came with it, or raises ProtocolError naming what was wrong, having closed
every fd it received; it never allocates more than LOCAL_FRAME_BYTES_MAX.
Received fds are close-on-exec.

The socket: AF_UNIX, SOCK_SEQPACKET, bound in the *abstract* namespace
under ``local_socket_name(advertised host, data port)``. Abstract names
belong to a network namespace, not to the filesystem, so:

* a client finds exactly the chunkservers of its own network namespace
  (its own host in a real cluster; all of them on one loopback host), by
  the address the master gives it for each replica, with no path to
  configure and no file to clean up after a crash;
* anybody in the namespace may bind a name first. So each side checks the
  other's credentials (SO_PEERCRED): a chunkserver serves only root and its
  own user, and a client trusts only a server that runs as root or as the
  client's user.

One message per packet: SEQPACKET keeps message boundaries, so a frame
never has to be reassembled and a short one is just malformed. Each packet
is a codec frame (header and msgpack body, no payload); a reply that opens
a replica carries its fd as SCM_RIGHTS ancillary data.
"""

from __future__ import annotations

import array
import os
import socket
import struct

import trio

from vmstore.dfs.errors import ProtocolError
from vmstore.dfs.protocol.codec import (
    HEADER_BYTES,
    FrameHeader,
    decode_body,
    decode_header,
    encode_frame,
)
from vmstore.dfs.protocol.messages import Message

LOCAL_SOCKET_PREFIX = b"\0vmstore/chunkserver/"
# A request or reply is under 200 bytes; anything longer is not ours.
LOCAL_FRAME_BYTES_MAX = 4096
FDS_PER_FRAME_MAX = 1
_FD_BYTES = array.array("i").itemsize
_ANCILLARY_BYTES = socket.CMSG_SPACE(FDS_PER_FRAME_MAX * _FD_BYTES)
_PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def local_socket_name(host: str, port: int) -> bytes:
    """The abstract socket name of the chunkserver whose data address is host:port."""
    return LOCAL_SOCKET_PREFIX + f"{host}:{port}".encode()


def new_socket() -> trio.socket.SocketType:
    """A Unix SEQPACKET socket (not inherited by children, as every Python socket)."""
    return trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel saw it at connect."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER_CREDENTIALS.size)
    pid, uid, gid = _PEER_CREDENTIALS.unpack(raw)
    return pid, uid, gid


def trusted_uid(uid: int) -> bool:
    """Root, or the user this process runs as: who may hold a replica's fd or hand one."""
    return uid in (0, os.geteuid())


async def send_frame(sock: trio.socket.SocketType, message: Message, request_id: int, *,
                     response: bool, fd: int | None = None) -> None:
    """Send one frame (and ``fd``, if given) as one packet; the caller sets the deadline."""
    head, payload = encode_frame(message, request_id, response=response)
    assert not payload
    ancillary = [] if fd is None else [
        (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    sent = await sock.sendmsg([head], ancillary)
    if sent != len(head):
        # SEQPACKET sends all or nothing; a partial send would be a kernel surprise.
        raise ProtocolError(f"sent {sent} of a {len(head)}-byte frame")


async def receive_frame(sock: trio.socket.SocketType
                        ) -> tuple[FrameHeader, Message, list[int]] | None:
    """The next frame and the fds that came with it; None when the peer closed.

    The caller owns the fds returned (and the deadline). On ProtocolError
    every fd that arrived is closed already.
    """
    data, ancillary, flags, _ = await sock.recvmsg(LOCAL_FRAME_BYTES_MAX, _ANCILLARY_BYTES,
                                                   socket.MSG_CMSG_CLOEXEC)
    fds = _fds_of(ancillary)
    try:
        # (The ancillary buffer is rounded up to 8 bytes: it fits two 4-byte fds.)
        if flags & socket.MSG_CTRUNC or len(fds) > FDS_PER_FRAME_MAX:
            raise ProtocolError(f"more than {FDS_PER_FRAME_MAX} fd(s) with one frame")
        if flags & socket.MSG_TRUNC:
            raise ProtocolError(f"a packet over {LOCAL_FRAME_BYTES_MAX} bytes")
        if not data:
            if fds:
                raise ProtocolError("fds without a frame")
            return None  # SEQPACKET: an empty read is the peer's close
        if len(data) < HEADER_BYTES:
            raise ProtocolError(f"a {len(data)}-byte packet is shorter than a frame header")
        header = decode_header(data[:HEADER_BYTES])
        if header.payload_bytes or HEADER_BYTES + header.body_bytes != len(data):
            raise ProtocolError(f"frame of {HEADER_BYTES} + {header.body_bytes} +"
                                f" {header.payload_bytes} bytes in a {len(data)}-byte packet")
        # A body that decodes with a field out of range (InvalidField) is as
        # malformed as any other here: nobody but our own code speaks this.
        message = decode_body(header, memoryview(data)[HEADER_BYTES:])
    except BaseException:
        close_all(fds)
        raise
    return header, message, fds


def _fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % _FD_BYTES])
    return list(fds)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
