"""FileStates: one state per file, made by an open or a write, gone when nothing is owed."""

from __future__ import annotations

import math

import pytest

from vmstore.dfs.client import file_state
from vmstore.dfs.client.file_state import FileStates


async def test_a_reach_is_told_once_and_owed_again_when_telling_fails() -> None:
    files = FileStates()
    state = files.get(7)
    state.wrote(60_000)
    state.wrote(10_000)
    assert files.unpublished_bytes(7) == 60_000
    state.size_published(40_000)  # a write reached further than the report
    assert state.unpublished_bytes == 60_000
    state.size_published(60_000)
    assert state.unpublished_bytes == 0
    state.size_owed(60_000)
    assert state.unpublished_bytes == 60_000
    state.told(60_000)
    state.told(50_000)
    assert state.published_bytes == 60_000
    assert state.published_at_s > -math.inf


async def test_the_last_close_drops_the_state_unless_something_is_owed() -> None:
    files = FileStates()
    state = files.get(7)
    state.handles = 1
    state.told(4096)
    state.synchronous_until_s = 10.0
    assert files.open_inodes() == [7]
    state.handles = 0
    files.last_closed(state)
    assert files.find(7) is None
    assert files.unpublished_bytes(7) == 0

    owing = files.get(8)
    owing.wrote(4096)
    owing.told(1024)
    owing.synchronous_until_s = 10.0
    files.last_closed(owing)
    assert files.find(8) is owing  # its reach is still to be told
    assert owing.published_bytes == 0
    assert owing.published_at_s == -math.inf
    assert owing.synchronous_until_s == 0.0
    assert files.open_inodes() == []


async def test_a_held_size_lock_keeps_its_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_state, "FILE_STATES_MAX", 3)
    files = FileStates()
    reporting = files.get(1)
    open_file = files.get(2)
    open_file.handles = 1
    files.get(3)  # idle: dropped when room is needed
    async with reporting.size_lock:
        files.last_closed(reporting)
        assert files.find(1) is reporting
        files.get(4)
        assert files.find(1) is reporting
        assert files.find(2) is open_file
        assert files.find(3) is None
    assert len(files) == 3


async def test_the_last_close_is_decided_when_it_begins_and_the_hold_lasts_to_its_end() -> None:
    files = FileStates()
    state = files.get(7)
    assert state.handle_opened(writable=True)  # the first: the master is to hold the file
    assert not state.handle_opened(writable=False)
    state.write_returned(4096)
    assert (state.handles, state.writable_handles, state.written) == (2, 1, True)
    assert not state.handle_closing(writable=True)
    assert state.handle_closing(writable=False)  # the last, though the first has not ended
    assert (state.handles, state.writable_handles, state.closing) == (0, 0, 2)
    assert files.open_inodes() == [7]  # held while closes are under way
    assert not state.idle
    assert not state.handle_opened(writable=False)  # held already
    assert not state.written  # a first open starts afresh
    assert state.handle_closing(writable=False)
    assert not state.handle_closed()
    assert not state.handle_closed()
    assert state.handle_closed()
    assert files.open_inodes() == []
    files.last_closed(state)
    assert files.find(7) is None


async def test_the_size_shown_is_the_masters_unless_written_here() -> None:
    state = FileStates().get(7)
    assert state.showing(5000) == 5000
    state.write_returned(6000)
    assert state.showing(5000) == 6000  # the master does not know the write yet
    assert state.showing(8000) == 8000
    state.truncated(100)
    assert state.showing(5000) == 5000
