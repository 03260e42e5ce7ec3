"""Frames: the unit on every vmstore connection.

Layout (little-endian, 20-byte header, then body, then payload)::

    magic     4s   b"VMS1"
    version   u8   PROTOCOL_VERSION
    flags     u8   FLAG_RESPONSE | FLAG_PAYLOAD_LZ4
    type      u16  the message's TYPE (dfs.protocol.messages)
    request   u32  request id; a response carries the id of its request
    body      u32  bytes of msgpack body (<= FRAME_BODY_BYTES_MAX)
    payload   u32  bytes of raw payload on the wire (<= FRAME_PAYLOAD_BYTES_MAX)

The payload carries chunk data beside the control body so that data is never
re-encoded. With FLAG_PAYLOAD_LZ4 it is an lz4 block with its size stored in
front; a stored size over the limit is refused before anything is inflated.

Everything here treats its input as hostile: every fault raises
ProtocolError naming what was wrong (InvalidField, naming the message and
field, when the body decoded but a value is out of the range its message
declares), and nothing is allocated from a length before that length is
checked.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import lz4.block
import msgspec

from vmstore.dfs.constants import (
    COMPRESS_BYTES_MIN,
    FRAME_BODY_BYTES_MAX,
    FRAME_PAYLOAD_BYTES_MAX,
)
from vmstore.dfs.errors import InvalidField, ProtocolError
from vmstore.dfs.protocol.messages import MESSAGE_BY_TYPE, Message

MAGIC = b"VMS1"
PROTOCOL_VERSION = 5  # 2: capabilities on every chunk operation; 3: batched writes;
# 4: each peer proves its own credential (role, a chunkserver's uuid), not the cluster key;
# 5: chunkservers prove the role "peer" to each other (role-only credential files)
FLAG_RESPONSE = 0x01
FLAG_PAYLOAD_LZ4 = 0x02
_KNOWN_FLAGS = FLAG_RESPONSE | FLAG_PAYLOAD_LZ4
HEADER = struct.Struct("<4sBBHIII")
HEADER_BYTES = HEADER.size
REQUEST_ID_MAX = 2**32 - 1
_ERROR_PATH = re.compile(r" - at `\$\[(\d+)\](.*)`$")

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[int, msgspec.msgpack.Decoder[Message]] = {
    message_type: msgspec.msgpack.Decoder(cls) for message_type, cls in MESSAGE_BY_TYPE.items()
}


@dataclass(frozen=True, slots=True)
class FrameHeader:
    flags: int
    message_type: int
    request_id: int
    body_bytes: int
    payload_bytes: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)


def decode_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    """Check and split a 20-byte header; the lengths are safe to allocate after this."""
    assert len(data) == HEADER_BYTES
    magic, version, flags, message_type, request_id, body_bytes, payload_bytes = HEADER.unpack(
        data
    )
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}, this peer speaks {PROTOCOL_VERSION}")
    if flags & ~_KNOWN_FLAGS:
        raise ProtocolError(f"unknown frame flags {flags:#x}")
    if message_type not in MESSAGE_BY_TYPE:
        raise ProtocolError(f"unknown message type {message_type}")
    if body_bytes > FRAME_BODY_BYTES_MAX:
        raise ProtocolError(f"frame body of {body_bytes} bytes exceeds {FRAME_BODY_BYTES_MAX}")
    if payload_bytes > FRAME_PAYLOAD_BYTES_MAX:
        raise ProtocolError(
            f"frame payload of {payload_bytes} bytes exceeds {FRAME_PAYLOAD_BYTES_MAX}"
        )
    return FrameHeader(flags, message_type, request_id, body_bytes, payload_bytes)


def decode_body(header: FrameHeader, body: bytes | bytearray | memoryview) -> Message:
    """The message; InvalidField (naming it) for a value out of range, else ProtocolError.

    InvalidField promises that the frame was whole and the stream is still in
    step, so it is raised only for a body that is exactly one msgpack value. A
    body with bytes left over or missing means the frame's length was wrong:
    the next frame's bytes were swallowed (or ours spill into it), so nothing
    after it can be trusted and the connection must end (a fuzz-found wedge:
    a refused request that had eaten the honest one behind it, leaving an
    idle connection that neither answered nor closed).
    """
    cls = MESSAGE_BY_TYPE[header.message_type]
    try:
        return _decoders[header.message_type].decode(body)
    except msgspec.ValidationError as error:
        invalid = InvalidField(_describe(cls, str(error)))
    # msgspec lets invalid UTF-8 in a str field out as UnicodeDecodeError.
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"malformed {cls.__name__} body: {error}") from None
    # The slow path, for refused bodies only: is the body one whole value?
    try:
        msgspec.msgpack.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise ProtocolError(f"malformed {cls.__name__} body: {error}") from None
    raise invalid


def _describe(cls: type[Message], text: str) -> str:
    """msgspec's "... - at `$[2][0]`" as "Cls.field[0]: ...": the field, by name."""
    match = _ERROR_PATH.search(text)
    if match is None:
        return f"{cls.__name__}: {text}"
    index, rest = int(match.group(1)), match.group(2)
    fields = cls.__struct_fields__
    field = fields[index] if index < len(fields) else f"[{index}]"
    return f"{cls.__name__}.{field}{rest}: {text[: match.start()]}"


def decode_payload(header: FrameHeader, payload: bytes) -> bytes:
    if not header.flags & FLAG_PAYLOAD_LZ4:
        return payload
    if len(payload) < 4:
        raise ProtocolError("compressed payload shorter than its size field")
    inflated_bytes = int.from_bytes(payload[:4], "little")
    if inflated_bytes > FRAME_PAYLOAD_BYTES_MAX:
        raise ProtocolError(f"compressed payload claims {inflated_bytes} bytes")
    try:
        return bytes(lz4.block.decompress(payload))
    except lz4.block.LZ4BlockError as error:
        raise ProtocolError(f"corrupt lz4 payload: {error}") from None


def encode_frame(
    message: Message,
    request_id: int,
    *,
    response: bool = False,
    payload: bytes | memoryview = b"",
    compress: bool = False,
) -> tuple[bytes, bytes | memoryview]:
    """Header+body, and the payload to send after it (kept apart to avoid a copy).

    ``compress`` asks for lz4; it is used only when the payload is big enough
    and actually shrinks by an eighth or more.
    """
    assert 0 <= request_id <= REQUEST_ID_MAX
    body = _encoder.encode(message)
    if len(body) > FRAME_BODY_BYTES_MAX:
        raise ProtocolError(f"{type(message).__name__} body of {len(body)} bytes is too large")
    flags = FLAG_RESPONSE if response else 0
    if compress and len(payload) >= COMPRESS_BYTES_MIN:
        packed = lz4.block.compress(payload, store_size=True)
        if len(packed) < len(payload) - len(payload) // 8:
            payload = packed
            flags |= FLAG_PAYLOAD_LZ4
    if len(payload) > FRAME_PAYLOAD_BYTES_MAX:
        raise ProtocolError(f"payload of {len(payload)} bytes is too large")
    header = HEADER.pack(
        MAGIC, PROTOCOL_VERSION, flags, message.TYPE, request_id, len(body), len(payload)
    )
    return header + body, payload


def encode_stored_message(message: Message) -> bytes:
    """A message as bytes for storage (the reply cache): its TYPE, then msgpack."""
    return message.TYPE.to_bytes(2, "little") + _encoder.encode(message)


def decode_stored_message(data: bytes) -> Message:
    header = FrameHeader(0, int.from_bytes(data[:2], "little"), 0, len(data) - 2, 0)
    if header.message_type not in _decoders:
        raise ProtocolError(f"stored message of unknown type {header.message_type}")
    return decode_body(header, data[2:])
