"""Zero detection: whole zero blocks are sent as ranges, never as bytes."""

from __future__ import annotations

from vmstore.dfs.constants import BLOCK_SIZE_BYTES

_ZERO_BLOCK = bytes(BLOCK_SIZE_BYTES)


def split_zero_blocks(offset: int, data: bytes | memoryview
                      ) -> tuple[list[tuple[int, int]], bytes | memoryview]:
    """(zero ranges, payload) for writing ``data`` at chunk offset ``offset``.

    Only whole, aligned blocks count as zero (a partial block must be merged
    with what is on disk anyway). The payload is ``data`` without them (``data``
    itself when there are none: the caller must not change it while it is used).
    """
    length = len(data)
    view = memoryview(data)
    first = -(-offset // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES - offset  # into data
    zero_ranges: list[tuple[int, int]] = []
    kept: list[tuple[int, int]] = []  # (start, end) in data
    cursor = 0
    position = first
    while position + BLOCK_SIZE_BYTES <= length:
        # The first byte rules out almost every data block without a compare;
        # startswith is a memcmp, where memoryview == bytes goes item by item.
        if view[position] == 0 and _ZERO_BLOCK.startswith(
                view[position:position + BLOCK_SIZE_BYTES]):
            if zero_ranges and zero_ranges[-1][0] + zero_ranges[-1][1] == offset + position:
                start, size = zero_ranges[-1]
                zero_ranges[-1] = (start, size + BLOCK_SIZE_BYTES)
            else:
                zero_ranges.append((offset + position, BLOCK_SIZE_BYTES))
                if position > cursor:
                    kept.append((cursor, position))
            cursor = position + BLOCK_SIZE_BYTES
        position += BLOCK_SIZE_BYTES
    if not zero_ranges:
        return [], data  # fast path: nothing to cut out, nothing copied
    if cursor < length:
        kept.append((cursor, length))
    return zero_ranges, b"".join(view[start:end] for start, end in kept)


def join_zero_ranges(offset: int, length: int, zero_ranges: list[tuple[int, int]],
                     payload: bytes) -> bytes:
    """The inverse of a read reply's encoding: bytes of [offset, offset+length)."""
    if not zero_ranges:
        return payload
    parts: list[bytes | memoryview] = []
    view = memoryview(payload)
    cursor = offset
    used = 0
    for start, size in zero_ranges:
        if start > cursor:
            parts.append(view[used:used + start - cursor])
            used += start - cursor
        parts.append(bytes(size))
        cursor = start + size
    if cursor < offset + length:
        parts.append(view[used:used + offset + length - cursor])
    return b"".join(parts)
