"""Whole frames in and out of a byte stream (the layer under ``connection``).

A frame's first byte may be awaited as long as it takes (an idle peer is
fine); once begun, the rest of it must come within FRAME_RECEIVE_TIMEOUT_S,
or ``receive_header``/``receive_body`` raise ProtocolError. A request whose
body decodes with a field out of range comes as its InvalidField, after the
whole frame is consumed, so the stream stays in step and the request can be
answered; a reply with such a field raises it.

Caveat: a send cut off half-way (cancelled, or the stream broke) leaves half
a frame on the wire; the FrameStream is then ``broken`` and refuses further
sends: the stream can only be closed.
"""

from __future__ import annotations

import trio

from vmstore.dfs.constants import (
    FRAME_RECEIVE_BYTES,
    FRAME_RECEIVE_TIMEOUT_S,
    JOINED_PAYLOAD_BYTES_MAX,
    PAYLOAD_IN_PARTS_BYTES_MIN,
)
from vmstore.dfs.errors import InvalidField, PeerUnavailable, ProtocolError
from vmstore.dfs.protocol.codec import (
    HEADER_BYTES,
    FrameHeader,
    decode_body,
    decode_header,
    decode_payload,
)
from vmstore.dfs.protocol.limits import acquire_uncontended_at_once
from vmstore.dfs.protocol.messages import Message


class FrameStream:
    """Whole frames in and out of a byte stream; sends are serialised."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self.broken = False

    async def _fill(self, wanted_bytes: int) -> None:
        while len(self._buffer) < wanted_bytes:
            data = await self.stream.receive_some(
                max(FRAME_RECEIVE_BYTES, wanted_bytes - len(self._buffer))
            )
            if not data:
                raise PeerUnavailable("connection closed by the peer")
            self._buffer += data

    async def receive(self) -> tuple[FrameHeader, Message | InvalidField, bytes]:
        """The next whole frame (``receive_header`` then ``receive_body``)."""
        header = await self.receive_header()
        message, payload = await self.receive_body(header)
        return header, message, payload

    async def receive_header(self) -> FrameHeader:
        """The next frame's header; its body stays unread until ``receive_body``.

        Waits for a frame's first byte as long as it takes (an idle peer is
        fine); the rest of the header must follow within FRAME_RECEIVE_TIMEOUT_S.
        """
        if not self._buffer:
            await self._fill(1)
        if len(self._buffer) >= HEADER_BYTES:  # the common case: no deadline to set
            return decode_header(self._buffer[:HEADER_BYTES])
        with trio.move_on_after(FRAME_RECEIVE_TIMEOUT_S):
            await self._fill(HEADER_BYTES)
            return decode_header(self._buffer[:HEADER_BYTES])
        raise ProtocolError(f"frame header incomplete after {FRAME_RECEIVE_TIMEOUT_S} s"
                            f" ({len(self._buffer)} bytes received)")

    async def receive_body(self, header: FrameHeader) -> tuple[Message | InvalidField, bytes]:
        """The body and payload of the frame ``header`` began, within FRAME_RECEIVE_TIMEOUT_S.

        A request with a field out of range comes as its InvalidField.
        """
        body_end = HEADER_BYTES + header.body_bytes
        frame_end = body_end + header.payload_bytes
        if len(self._buffer) >= frame_end:
            return self._decoded(header, *self._take(header))  # here: no deadline to set
        with trio.move_on_after(FRAME_RECEIVE_TIMEOUT_S):
            if header.payload_bytes < PAYLOAD_IN_PARTS_BYTES_MIN:
                await self._fill(frame_end)
                return self._decoded(header, *self._take(header))
            await self._fill(body_end)
            return self._decoded(header, *await self._take_in_parts(header))
        raise ProtocolError(f"frame incomplete after {FRAME_RECEIVE_TIMEOUT_S} s"
                            f" ({len(self._buffer)} bytes received)")

    def _take(self, header: FrameHeader) -> tuple[bytes, bytes]:
        """The body and payload of the frame ``header`` began, whole in the buffer."""
        body_end = HEADER_BYTES + header.body_bytes
        frame_end = body_end + header.payload_bytes
        # Copies (the frame leaves the buffer now), each made once, through a view:
        # slicing the bytearray itself would copy twice.
        with memoryview(self._buffer) as view:
            body = bytes(view[HEADER_BYTES:body_end])
            payload = bytes(view[body_end:frame_end]) if header.payload_bytes else b""
        del self._buffer[:frame_end]
        return body, payload

    async def _take_in_parts(self, header: FrameHeader) -> tuple[bytes, bytes]:
        """The body (in the buffer) and a big payload, received as parts of its own
        and joined once, rather than appended to the buffer and copied out again."""
        body_end = HEADER_BYTES + header.body_bytes
        with memoryview(self._buffer) as view:
            body = bytes(view[HEADER_BYTES:body_end])
            buffered = bytes(view[body_end:body_end + header.payload_bytes])
        del self._buffer[:body_end + len(buffered)]
        parts: list[bytes | bytearray] = [buffered] if buffered else []
        missing = header.payload_bytes - len(buffered)
        while missing:
            # No more than the payload: the next frame stays in the socket.
            data = await self.stream.receive_some(missing)
            if not data:
                raise PeerUnavailable("connection closed by the peer")
            parts.append(data)
            missing -= len(data)
        whole = parts[0] if len(parts) == 1 else b"".join(parts)
        # bytes, never a bytearray: a replica stores immutable payloads in one pwrite.
        return body, whole if isinstance(whole, bytes) else bytes(whole)

    @staticmethod
    def _decoded(header: FrameHeader, body: bytes, payload: bytes
                 ) -> tuple[Message | InvalidField, bytes]:
        # The frame is consumed before its body is judged, so the stream stays
        # in step and a bad request can be answered.
        try:
            message: Message | InvalidField = decode_body(header, body)
        except InvalidField as error:
            if header.is_response:
                raise
            message = error
        return message, decode_payload(header, payload)

    async def send(self, frame: tuple[bytes, bytes | memoryview]) -> None:
        head, payload = frame
        if payload and len(payload) <= JOINED_PAYLOAD_BYTES_MAX:
            head, payload = head + payload, b""
        if self.broken:
            raise PeerUnavailable("connection is broken")
        await acquire_uncontended_at_once(self._send_lock)  # send_all checkpoints anyway
        # A send cut off half-way leaves half a frame on the wire: after
        # that the stream can only be closed.
        completed = False
        try:
            await self.stream.send_all(head)
            if payload:
                await self.stream.send_all(payload)
            completed = True
        finally:
            self._send_lock.release()
            if not completed:
                self.broken = True

