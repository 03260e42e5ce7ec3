"""Write tokens and the chunkserver's fence: forged, misdirected, old and fenced writers."""

from __future__ import annotations

import time

import msgspec
import pytest

from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.errors import LeaseLost, TokenExpired, WriteRefused
from vmstore.dfs.protocol import write_token

CLUSTER_KEY = b"k" * 32
SECOND_NS = 1_000_000_000


def token_for(chunk_id: int, epoch: int, *, key: bytes = CLUSTER_KEY,
              issued_ns: int | None = None, life_ns: int = 10 * SECOND_NS) -> object:
    return write_token.sign(write_token.token_key(key), chunk_id=chunk_id, epoch=epoch,
                            session_id=7, issued_ns=issued_ns or time.time_ns(),
                            life_ns=life_ns)


def test_a_valid_token_is_admitted() -> None:
    WriteFence(CLUSTER_KEY).admit(token_for(5, 1), 5)  # type: ignore[arg-type]


def test_a_missing_token_is_refused() -> None:
    with pytest.raises(WriteRefused, match="no write token"):
        WriteFence(CLUSTER_KEY).admit(None, 5)


def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(WriteRefused, match="not signed"):
        WriteFence(CLUSTER_KEY).admit(token_for(5, 1, key=b"x" * 32), 5)  # type: ignore[arg-type]


def test_a_token_with_a_changed_field_is_refused() -> None:
    token = token_for(5, 1)
    for changes in ({"epoch": 2}, {"expires_ns": token.expires_ns + SECOND_NS},  # type: ignore[attr-defined]
                    {"chunk_id": 6}, {"session_id": 8}):
        forged = msgspec.structs.replace(token, **changes)  # type: ignore[type-var]
        with pytest.raises(WriteRefused):
            WriteFence(CLUSTER_KEY).admit(forged, forged.chunk_id)


def test_a_token_for_another_chunk_is_refused() -> None:
    with pytest.raises(WriteRefused, match="for chunk 5, not 6"):
        WriteFence(CLUSTER_KEY).admit(token_for(5, 1), 6)  # type: ignore[arg-type]


def test_a_token_checked_once_is_still_bound_to_its_chunk_and_expiry() -> None:
    fence = WriteFence(CLUSTER_KEY)
    token = token_for(5, 1, life_ns=SECOND_NS // 5)
    fence.admit(token, 5)  # type: ignore[arg-type]
    fence.admit(token, 5)  # type: ignore[arg-type]  # from the cache of checked tokens
    with pytest.raises(WriteRefused, match="for chunk 5, not 6"):
        fence.admit(token, 6)  # type: ignore[arg-type]
    time.sleep(0.3)
    with pytest.raises(TokenExpired):
        fence.admit(token, 5)  # type: ignore[arg-type]


def test_absurd_field_values_are_refused_not_crashed_on() -> None:
    token = msgspec.structs.replace(token_for(5, 1), epoch=-1)  # type: ignore[type-var]
    with pytest.raises(WriteRefused, match="out of range"):
        WriteFence(CLUSTER_KEY).admit(token, 5)


def test_an_expired_token_is_refused_as_expired() -> None:
    fence = WriteFence(CLUSTER_KEY)
    old = token_for(5, 1, issued_ns=time.time_ns() - 2 * SECOND_NS, life_ns=SECOND_NS)
    with pytest.raises(TokenExpired, match="expired"):
        fence.admit(old, 5)  # type: ignore[arg-type]


def test_a_token_from_before_the_chunkserver_started_is_refused() -> None:
    issued_ns = time.time_ns()
    fence = WriteFence(CLUSTER_KEY)
    fence.started_ns = issued_ns + 1
    with pytest.raises(TokenExpired, match="predates"):
        fence.admit(token_for(5, 1, issued_ns=issued_ns), 5)  # type: ignore[arg-type]


def test_a_newer_epoch_fences_older_ones_per_chunk() -> None:
    fence = WriteFence(CLUSTER_KEY)
    fence.admit(token_for(5, 3), 5)  # type: ignore[arg-type]
    fence.admit(token_for(5, 4), 5)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost, match="fenced at lease epoch 4"):
        fence.admit(token_for(5, 3), 5)  # type: ignore[arg-type]
    fence.admit(token_for(6, 3), 6)  # type: ignore[arg-type]  # other chunks are unaffected


def test_the_masters_fence_refuses_older_epochs_before_any_write() -> None:
    fence = WriteFence(CLUSTER_KEY)
    fence.raise_epoch(5, 9)
    fence.raise_epoch(5, 2)  # a late, older fence never lowers it
    with pytest.raises(LeaseLost):
        fence.admit(token_for(5, 8), 5)  # type: ignore[arg-type]
    fence.admit(token_for(5, 9), 5)  # type: ignore[arg-type]
    fence.forget(5)
    fence.admit(token_for(5, 1), 5)  # type: ignore[arg-type]  # a replica made anew
