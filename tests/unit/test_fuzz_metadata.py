"""Fuzzing what the master decodes from its own SQLite database.

Two values are decoded on the way back, and both are treated as hostile
(a damaged disk, an operator's sqlite3 session): the reply cache's blobs,
which become messages again when a client retries (ProtocolError if they
do not), and the schema version (DamagedMetadata naming the value, never
ValueError).
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_codec import MESSAGES, mutated, sample_message
from vmstore.dfs.errors import DamagedMetadata, ProtocolError
from vmstore.dfs.metadata.schema import MIGRATABLE_SCHEMA_VERSIONS, SCHEMA_VERSION
from vmstore.dfs.metadata.sessions import SessionTable
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol.messages import Message
from vmstore.dfs.types import SessionId


@pytest.fixture(scope="module")
def sessions() -> SessionTable:
    directory = tempfile.mkdtemp()
    return SessionTable(MetadataStore(Path(directory) / "metadata.db"))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(MESSAGES).map(sample_message), st.data())
def test_damaged_cached_replies(sessions: SessionTable, message: Message,
                                data: st.DataObject) -> None:
    blob = data.draw(st.one_of(mutated(codec.encode_stored_message(message)),
                               st.binary(max_size=100)))
    with sessions.store.transaction():
        sessions.store_reply(SessionId(1), 5, blob)
    stored = sessions.cached_reply(SessionId(1), 5)
    assert stored == blob
    try:
        decoded = codec.decode_stored_message(stored)
    except ProtocolError:
        return
    assert isinstance(decoded, Message)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.text(max_size=10), st.binary(max_size=10),
                 st.integers(min_value=-2**63, max_value=2**63 - 1),
                 # SQLite stores NaN as NULL, which the column refuses: not a damage
                 # the store can meet.
                 st.floats(allow_nan=False)))
def test_a_damaged_schema_version_is_named(value: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "metadata.db"
        MetadataStore(path).close()
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                               (value,))
        connection.close()
        if str(value) == str(SCHEMA_VERSION) or str(value) in MIGRATABLE_SCHEMA_VERSIONS:
            MetadataStore(path).close()
            return
        with pytest.raises(DamagedMetadata, match="schema version"):
            MetadataStore(path)
