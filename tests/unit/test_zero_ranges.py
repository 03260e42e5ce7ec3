from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from vmstore.dfs.client.zero_ranges import join_zero_ranges, split_zero_blocks


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20000), st.lists(st.tuples(st.booleans(), st.integers(1, 9000)),
                                       max_size=8))
def test_split_then_join_is_identity(offset: int, pieces: list[tuple[bool, int]]) -> None:
    data = b"".join(bytes(n) if zero else os.urandom(n) for zero, n in pieces)
    zero_ranges, payload = split_zero_blocks(offset, data)
    assert len(payload) + sum(size for _, size in zero_ranges) == len(data)
    for start, size in zero_ranges:
        assert start % 4096 == 0 and size % 4096 == 0
        assert data[start - offset:start - offset + size] == bytes(size)
    assert join_zero_ranges(offset, len(data), zero_ranges, payload) == data


def test_all_zero_megabyte_sends_nothing() -> None:
    zero_ranges, payload = split_zero_blocks(0, bytes(1 << 20))
    assert zero_ranges == [(0, 1 << 20)] and payload == b""
