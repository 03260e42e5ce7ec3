"""The wire on real loopback sockets: auth both ways, many calls in flight, hostile bytes."""

from __future__ import annotations

import os
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstore.dfs.errors import AuthenticationFailed, NotFound, PeerUnavailable, ProtocolError
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol.messages import (
    AttrsReply,
    ClientToMasterGetAttr,
    ClientToMasterStatFs,
    FileAttrs,
    Message,
    Request,
)
from vmstore.dfs.protocol.rpc import Connection, Handler, open_connection, serve_connections

KEY = os.urandom(32)
ROLES = frozenset({"client"})


def attrs(inode: int) -> FileAttrs:
    return FileAttrs(inode=inode, mode=0o100644, nlink=1, uid=0, gid=0, rdev=0, size_bytes=0,
                     allocated_bytes=0, atime_ns=0, mtime_ns=0, ctime_ns=0, goal=2)


def echo_handler(connection: Connection) -> Handler:
    async def handle(request: Request, payload: bytes) -> tuple[Message, bytes]:
        if isinstance(request, ClientToMasterGetAttr):
            if request.inode == 404:
                raise NotFound(f"inode {request.inode}")
            await trio.sleep(0.001 * (request.inode % 7))  # replies come back out of order
            return AttrsReply(attrs=attrs(request.inode)), payload[::-1]
        if isinstance(request, ClientToMasterStatFs):
            await trio.sleep_forever()
        raise ProtocolError("unexpected")

    return handle


async def start_server(nursery: trio.Nursery) -> int:
    port: int = await nursery.start(serve_connections, "127.0.0.1", 0, KEY, ROLES, echo_handler)
    return port


async def test_many_calls_in_flight_get_their_own_replies() -> None:
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        async with open_connection("127.0.0.1", port, KEY, "client", compress=True) as conn:
            results: dict[int, tuple[int, bytes]] = {}

            async def one(inode: int) -> None:
                payload = os.urandom(inode * 1000) + bytes(20000)  # compressible
                reply, back = await conn.call(ClientToMasterGetAttr(inode=inode), payload,
                                              reply_type=AttrsReply)
                assert back == payload[::-1]
                results[inode] = (reply.attrs.inode, back)

            async with trio.open_nursery() as calls:
                for inode in range(1, 101):
                    calls.start_soon(one, inode)
            assert sorted(results) == list(range(1, 101))
            assert all(results[i][0] == i for i in results)
            with pytest.raises(NotFound, match="inode 404"):
                await conn.call(ClientToMasterGetAttr(inode=404))
            with pytest.raises(PeerUnavailable, match="did not answer"):
                await conn.call(ClientToMasterStatFs(), timeout_s=0.2)
        nursery.cancel_scope.cancel()


async def test_wrong_key_is_refused_both_ways(expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        with pytest.raises(AuthenticationFailed, match="does not hold the cluster key"):
            async with open_connection("127.0.0.1", port, os.urandom(32), "client"):
                pass
        # a role the server does not serve is refused too
        with pytest.raises(PeerUnavailable):
            async with open_connection("127.0.0.1", port, KEY, "chunkserver"):
                pass
        # and the honest client still gets in
        async with open_connection("127.0.0.1", port, KEY, "client") as conn:
            reply, _ = await conn.call(ClientToMasterGetAttr(inode=5), reply_type=AttrsReply)
            assert reply.attrs.inode == 5
        nursery.cancel_scope.cancel()


async def raw_exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    with trio.move_on_after(2):
        try:
            await stream.send_all(data)
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
    await stream.aclose()
    return received


GARBAGE = [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x00" * 64,
    codec.HEADER.pack(b"VMS1", 9, 0, 10, 0, 0, 0),  # wrong version
    codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 2**31, 0),  # absurd body length
    codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 10, 2**31),  # absurd payload length
    codec.HEADER.pack(b"VMS1", 1, 0, 60000, 0, 0, 0),  # unknown type
    codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 5, 0) + b"\xc1\xc1\xc1\xc1\xc1",  # bad msgpack
    codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 100, 0) + b"short",  # truncated then EOF
]


async def test_garbage_closes_the_connection_and_the_server_runs_on(expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        for data in GARBAGE:
            reply = await raw_exchange(port, data)
            assert len(reply) < 200  # at most a challenge, never data
        async with open_connection("127.0.0.1", port, KEY, "client") as conn:
            reply_, _ = await conn.call(ClientToMasterGetAttr(inode=7), reply_type=AttrsReply)
            assert reply_.attrs.inode == 7
        nursery.cancel_scope.cancel()


async def test_garbage_after_authentication_closes_only_that_connection(expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "closing connection")
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        async with open_connection("127.0.0.1", port, KEY, "client") as good:
            async with open_connection("127.0.0.1", port, KEY, "client") as bad:
                await bad.frames.stream.send_all(codec.HEADER.pack(b"VMS1", 1, 0, 111, 1, 3, 0)
                                                 + b"\x93\x01\x02")
                with trio.fail_after(5):
                    await bad.closed.wait()
            reply, _ = await good.call(ClientToMasterGetAttr(inode=9), reply_type=AttrsReply)
            assert reply.attrs.inode == 9
        nursery.cancel_scope.cancel()


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=codec.HEADER_BYTES, max_size=200))
def test_decoder_rejects_or_accepts_every_header_cleanly(data: bytes) -> None:
    try:
        header = codec.decode_header(data[: codec.HEADER_BYTES])
    except ProtocolError:
        return
    try:
        codec.decode_body(header, data[codec.HEADER_BYTES:][: header.body_bytes])
        codec.decode_payload(header, data[codec.HEADER_BYTES + header.body_bytes:])
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(codec._decoders) - 1), st.binary(max_size=300))
def test_every_message_decoder_survives_random_bodies(index: int, body: bytes) -> None:
    message_type = sorted(codec._decoders)[index]
    header = codec.FrameHeader(0, message_type, 1, len(body), 0)
    try:
        codec.decode_body(header, body)
    except ProtocolError:
        pass


def test_lz4_bomb_is_refused() -> None:
    header = codec.FrameHeader(codec.FLAG_PAYLOAD_LZ4, 1, 1, 0, 8)
    with pytest.raises(ProtocolError, match="claims"):
        codec.decode_payload(header, struct.pack("<I", 2**31) + b"\x00" * 4)
    with pytest.raises(ProtocolError, match="corrupt lz4"):
        codec.decode_payload(header, struct.pack("<I", 100) + b"\xff" * 4)


def test_invalid_utf8_in_a_string_field_is_a_protocol_error() -> None:
    """Found by the fuzz test: msgspec raises UnicodeDecodeError, not DecodeError."""
    hello = codec.FrameHeader(0, 10, 0, 4, 0)  # AuthHello(role: str, nonce: bytes)
    with pytest.raises(ProtocolError, match="malformed AuthHello"):
        codec.decode_body(hello, b"\x92\xa1\x80\xc4")


async def test_big_payloads_arrive_whole_between_small_frames() -> None:
    """Payloads big enough to be received apart from the frame buffer come back
    intact, and the small frames sent right behind them are not swallowed."""
    async with trio.open_nursery() as nursery:
        port = await start_server(nursery)
        async with open_connection("127.0.0.1", port, KEY, "client") as conn:
            async def one(inode: int, size: int) -> None:
                payload = os.urandom(size)
                _, back = await conn.call(ClientToMasterGetAttr(inode=inode), payload,
                                          reply_type=AttrsReply)
                assert back == payload[::-1]

            with trio.fail_after(60):
                async with trio.open_nursery() as calls:
                    for inode in range(1, 41):
                        size = (1 << 20) + inode if inode % 2 else inode * 100
                        calls.start_soon(one, inode, size)
        nursery.cancel_scope.cancel()
