"""Fuzzing the frame layer and every message decoder (hypothesis).

The property, for every input: ``decode_frame`` returns a message or raises
ProtocolError (InvalidField included); never IndexError, struct.error,
UnicodeDecodeError, MemoryError, OverflowError or anything else. Inputs are
random bytes, and valid frames of every message type mutated: bits
flipped, cut short, extended, length fields set to absurd values, integer
fields set to negative or over-64-bit values.
"""

from __future__ import annotations

import struct
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstore.dfs.errors import InvalidField, ProtocolError
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol.messages import ALL_MESSAGES, ClientToMasterGetAttr, Message

EXAMPLES = settings(max_examples=250, deadline=None)
MESSAGES = sorted(ALL_MESSAGES, key=lambda cls: cls.TYPE)
# Integers a hostile peer picks: around every boundary a decoder may trip on.
NASTY_INTS = [-1, -(2**31), -(2**63), 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1]


def sample_value(info: msgspec.inspect.Type) -> Any:
    """A small valid value of a msgspec type (what an honest peer sends)."""
    if isinstance(info, msgspec.inspect.IntType):
        return max(info.ge or 0, 1) if info.le is None or info.le > 0 else info.le
    if isinstance(info, msgspec.inspect.StrType):
        return "client"
    if isinstance(info, msgspec.inspect.BytesType):
        return b"name"
    if isinstance(info, msgspec.inspect.BoolType):
        return True
    if isinstance(info, msgspec.inspect.FloatType):
        return 1.5
    if isinstance(info, msgspec.inspect.NoneType):
        return None
    if isinstance(info, msgspec.inspect.UnionType):
        return sample_value(next(t for t in info.types
                                 if not isinstance(t, msgspec.inspect.NoneType)))
    if isinstance(info, msgspec.inspect.ListType):
        return [sample_value(info.item_type)]
    if isinstance(info, msgspec.inspect.TupleType):
        return tuple(sample_value(t) for t in info.item_types)
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls(**{f.name: sample_value(f.type) for f in info.fields})
    raise AssertionError(f"no sample for {info!r}: teach sample_value this type")


def sample_message(cls: type[Message]) -> Message:
    message = sample_value(msgspec.inspect.type_info(cls))
    assert isinstance(message, cls)
    return message


def decode_frame(data: bytes) -> Message | None:
    """What a FrameStream does with bytes: header, then body, then payload."""
    if len(data) < codec.HEADER_BYTES:
        return None  # a reader waits for more; nothing is decoded
    header = codec.decode_header(data[: codec.HEADER_BYTES])
    body_end = codec.HEADER_BYTES + header.body_bytes
    frame_end = body_end + header.payload_bytes
    if len(data) < frame_end:
        return None
    message = codec.decode_body(header, data[codec.HEADER_BYTES : body_end])
    codec.decode_payload(header, data[body_end:frame_end])
    return message


def frame_of(message: Message, payload: bytes = b"", compress: bool = False,
             request_id: int = 7) -> bytes:
    head, tail = codec.encode_frame(message, request_id, payload=payload, compress=compress)
    return head + tail


def test_every_message_type_has_a_sample_that_round_trips() -> None:
    for cls in MESSAGES:
        message = sample_message(cls)
        assert decode_frame(frame_of(message)) == message


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after one to four hostile edits."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "cut", "extend", "length", "byte", "marker"]))
        at = draw(st.integers(0, max(len(buffer) - 1, 0)))
        if edit == "flip" and buffer:
            buffer[at] ^= 1 << draw(st.integers(0, 7))
        elif edit == "cut":
            del buffer[at:]
        elif edit == "extend":
            buffer += draw(st.binary(min_size=1, max_size=64))
        elif edit == "length" and len(buffer) >= codec.HEADER_BYTES:
            # body or payload length: absurd, just over the limit, or zero
            field_at = draw(st.sampled_from([12, 16]))
            value = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 8 * 2**20 + 1, 4 * 2**20 + 1]))
            buffer[field_at : field_at + 4] = struct.pack("<I", value)
        elif edit == "byte" and buffer:
            buffer[at] = draw(st.integers(0, 255))
        elif edit == "marker":
            # a msgpack array32 / bin32 / str32 claiming ~4 GiB of elements or bytes
            marker = draw(st.sampled_from([b"\xdd", b"\xc6", b"\xdb", b"\xdf"]))
            buffer[at:at] = marker + b"\xff\xff\xff\xf0"
    return bytes(buffer)


def check_decodes_cleanly(data: bytes) -> None:
    try:
        decode_frame(data)
    except ProtocolError:
        pass


@EXAMPLES
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    check_decodes_cleanly(data)


@EXAMPLES
@given(st.sampled_from(MESSAGES).map(sample_message), st.binary(max_size=64), st.data())
def test_mutated_valid_frames(message: Message, payload: bytes, data: st.DataObject) -> None:
    check_decodes_cleanly(data.draw(mutated(frame_of(message, payload))))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_mutated_compressed_payloads(data: st.DataObject) -> None:
    message = sample_message(MESSAGES[0])
    frame = frame_of(message, bytes(20000) + b"tail" * 100, compress=True)
    assert frame[5] & codec.FLAG_PAYLOAD_LZ4, "the sample payload should compress"
    check_decodes_cleanly(data.draw(mutated(frame)))


def top_level_ints(cls: type[Message]) -> list[int]:
    """Positions of the fields that are plain integers."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return [i for i, f in enumerate(info.fields) if isinstance(f.type, msgspec.inspect.IntType)]


INT_MESSAGES = [cls for cls in MESSAGES if top_level_ints(cls)]


@EXAMPLES
@given(st.sampled_from(INT_MESSAGES), st.data())
def test_an_integer_out_of_range_is_refused_naming_its_field(cls: type[Message],
                                                              data: st.DataObject) -> None:
    fields = list(msgspec.msgpack.decode(msgspec.msgpack.encode(sample_message(cls))))
    position = data.draw(st.sampled_from(top_level_ints(cls)))
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    field = info.fields[position]
    assert isinstance(field.type, msgspec.inspect.IntType)
    value = data.draw(st.sampled_from(NASTY_INTS))
    fields[position] = value
    body = msgspec.msgpack.encode(fields)
    header = codec.FrameHeader(0, cls.TYPE, 1, len(body), 0)
    in_range = (field.type.ge is None or value >= field.type.ge) and (
        field.type.le is None or value <= field.type.le)
    if in_range:
        decoded = codec.decode_body(header, body)
        assert getattr(decoded, field.name) == value
    else:
        with pytest.raises(InvalidField, match=rf"^{cls.__name__}\.{field.name}: "):
            codec.decode_body(header, body)


def test_every_integer_on_the_wire_fits_sqlite() -> None:
    """No int field anywhere (nested too) accepts a value SQLite cannot store."""

    def unbounded(info: msgspec.inspect.Type, where: str) -> list[str]:
        if isinstance(info, msgspec.inspect.IntType):
            ok = info.ge is not None and info.ge >= -(2**63) and info.le is not None \
                and info.le <= 2**63 - 1
            return [] if ok else [where]
        children: list[tuple[msgspec.inspect.Type, str]] = []
        if isinstance(info, msgspec.inspect.StructType):
            children = [(f.type, f"{where}.{f.name}") for f in info.fields]
        elif isinstance(info, msgspec.inspect.ListType):
            children = [(info.item_type, f"{where}[]")]
        elif isinstance(info, (msgspec.inspect.TupleType, msgspec.inspect.UnionType)):
            items = info.item_types if isinstance(info, msgspec.inspect.TupleType) else info.types
            children = [(t, f"{where}[{i}]") for i, t in enumerate(items)]
        return [w for child, name in children for w in unbounded(child, name)]

    found = [w for cls in MESSAGES for w in unbounded(msgspec.inspect.type_info(cls),
                                                      cls.__name__)]
    assert not found, f"integer fields without bounds: {found}"


@EXAMPLES
@given(st.binary(max_size=200))
def test_stored_replies_from_the_database(data: bytes) -> None:
    """The reply cache's blobs are decoded again after a restart: hostile too."""
    try:
        codec.decode_stored_message(data)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(MESSAGES).map(sample_message), st.data())
def test_mutated_stored_replies(message: Message, data: st.DataObject) -> None:
    stored = codec.encode_stored_message(message)
    assert codec.decode_stored_message(stored) == message
    try:
        codec.decode_stored_message(data.draw(mutated(stored)))
    except ProtocolError:
        pass


def test_a_refused_body_with_bytes_left_over_is_a_protocol_error() -> None:
    """InvalidField (answer and serve on) only for a body that is one whole value:
    leftover bytes mean the frame's length was wrong and the stream is out of step."""
    good = frame_of(ClientToMasterGetAttr(inode=5))
    refused = good[:-1] + b"\xff"  # inode -1: out of range, the frame whole
    header = codec.decode_header(refused[:codec.HEADER_BYTES])
    with pytest.raises(InvalidField):
        codec.decode_body(header, refused[codec.HEADER_BYTES:])
    swallowed = refused + b"\x00\x01"
    longer = codec.decode_header(codec.HEADER.pack(
        codec.MAGIC, codec.PROTOCOL_VERSION, 0, ClientToMasterGetAttr.TYPE, 1,
        header.body_bytes + 2, 0))
    with pytest.raises(ProtocolError) as raised:
        codec.decode_body(longer, swallowed[codec.HEADER_BYTES:])
    assert not isinstance(raised.value, InvalidField)
    assert "trailing" in str(raised.value)
