"""The checks on what a caller hands ChunkStore, and the decoding of a write's range.

Promise: a chunk id, version, range or zero-range encoding that is not
valid raises InvalidArgument (never an assert, never a half-done call);
a version that is not the replica's current one raises StaleChunkVersion.
Every check runs before the store touches a file.

A write's range [offset, offset + length) arrives as ``zero_ranges`` plus
a payload holding the bytes of the rest, in order. ``segments_of`` turns that
into ordered ``Segment`` pieces (start, end, bytes or None for zeros),
which ``block_writer`` writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from vmstore.dfs.chunkserver.replica_file import OpenReplica
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.errors import InvalidArgument, StaleChunkVersion
from vmstore.dfs.protocol.replica_format import CHUNK_ID_MAX, VERSION_MAX, chunk_name

# A piece of a write: [start, end) of the chunk, its bytes or None for zeros.
Segment: TypeAlias = tuple[int, int, memoryview | None]


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_id(chunk_id: int) -> None:
    if not is_int(chunk_id) or not 0 < chunk_id <= CHUNK_ID_MAX:
        raise InvalidArgument(f"chunk id {chunk_id!r} is not in (0, 2**63)")


def check_version(version: int) -> None:
    if not is_int(version) or not 1 <= version <= VERSION_MAX:
        raise InvalidArgument(f"chunk version {version!r} is not in [1, 2**63)")


def check_version_change(old_version: int, new_version: int) -> None:
    check_version(old_version)
    check_version(new_version)
    if new_version <= old_version:
        raise InvalidArgument(f"new version {new_version} is not above {old_version}")


def check_range(offset: int, length: int) -> None:
    if not (is_int(offset) and is_int(length)) or offset < 0 or length < 0:
        raise InvalidArgument(f"range offset={offset!r} length={length!r} is not valid")
    if offset + length > CHUNK_SIZE_BYTES:
        raise InvalidArgument(f"range [{offset}, {offset + length}) passes the end of a chunk")


def check_current(replica: OpenReplica, version: int) -> None:
    if replica.version != version:
        raise StaleChunkVersion(
            f"{chunk_name(replica.chunk_id)}: version {version} asked,"
            f" the replica has {replica.version}"
        )


def segments_of(
    offset: int, length: int, payload: memoryview, zero_ranges: Sequence[tuple[int, int]]
) -> list[Segment]:
    """[offset, offset + length) as ordered (start, end, bytes or None for zeros) pieces.

    Validates the encoding: zero ranges non-empty, ordered, not overlapping,
    inside the range, and the payload exactly as long as the rest.
    """
    end = offset + length
    pieces: list[Segment] = []
    position, used = offset, 0
    for zero_range in zero_ranges:
        try:
            zero_start, zero_length = zero_range
        except (TypeError, ValueError):
            raise InvalidArgument(f"zero range {zero_range!r} is not (offset, length)") from None
        if not (is_int(zero_start) and is_int(zero_length)) or zero_length <= 0:
            raise InvalidArgument(f"zero range {zero_range!r} is not valid")
        if zero_start < position or zero_start + zero_length > end:
            raise InvalidArgument(
                f"zero range {zero_range!r} is out of order, overlapping or outside"
                f" [{offset}, {end})"
            )
        if zero_start > position:
            pieces.append((position, zero_start, payload[used : used + zero_start - position]))
            used += zero_start - position
        pieces.append((zero_start, zero_start + zero_length, None))
        position = zero_start + zero_length
    if position < end:
        pieces.append((position, end, payload[used : used + end - position]))
        used += end - position
    if used != len(payload) or any(
        source is not None and len(source) != stop - start for start, stop, source in pieces
    ):
        raise InvalidArgument(
            f"payload is {len(payload)} bytes, the range outside the zero ranges is"
            f" {sum(stop - start for start, stop, source in pieces if source is not None)}"
        )
    return pieces
