"""The hop tracer (dfs.protocol.hop_trace): records go to the process's file when on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vmstore.dfs.protocol import hop_trace


def test_marks_reach_the_process_file_in_order(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hop_trace, "_directory", str(tmp_path))
    monkeypatch.setattr(hop_trace, "_records", [])
    monkeypatch.setattr(hop_trace, "_header_written", False)
    hop_trace.mark("first", 1)
    hop_trace.mark("second", "ToChunkserverWriteChunk")
    hop_trace.flush()
    lines = (tmp_path / f"{os.getpid()}.trace").read_text().splitlines()
    assert lines[0].startswith("# ")
    records = [line.split(" ") for line in lines[1:]]
    assert [(event, detail) for _, event, detail in records] == [
        ("first", "1"), ("second", "ToChunkserverWriteChunk")]
    assert int(records[0][0]) <= int(records[1][0])


def test_off_without_the_environment_variable() -> None:
    assert hop_trace.TRACE_ENV not in os.environ
    assert not hop_trace.ENABLED
