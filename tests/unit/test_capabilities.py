"""Capabilities and the chunkserver's fence: forged, misdirected, old and fenced writers and
readers."""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

import msgspec
import pytest

from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.errors import (
    LeaseLost,
    ReadRefused,
    TokenExpired,
    TokenOfOldGeneration,
    WriteRefused,
)
from vmstore.dfs.protocol import capability
from vmstore.dfs.protocol.capability import READ, WRITE, CapabilitySigner, VerifiedCapabilities
from vmstore.dfs.protocol.messages import Capability

CLUSTER_KEY = b"k" * 32
SECOND_NS = 1_000_000_000


def token_for(chunk_id: int, epoch: int, *, key: bytes = CLUSTER_KEY,
              issued_ns: int | None = None, life_ns: int = 10 * SECOND_NS,
              operation: int = WRITE) -> object:
    return capability.sign(capability.capability_key(key), operation=operation,
                           chunk_id=chunk_id, epoch=epoch, session_id=7,
                           issued_ns=issued_ns or time.time_ns(), life_ns=life_ns)


def new_fence() -> WriteFence:
    return WriteFence(VerifiedCapabilities(CLUSTER_KEY))


def test_a_valid_token_is_admitted() -> None:
    new_fence().admit(token_for(5, 1), 5)  # type: ignore[arg-type]


def test_a_missing_token_is_refused() -> None:
    with pytest.raises(WriteRefused, match="write of chunk 5 carries no capability"):
        new_fence().admit(None, 5)


def test_a_token_signed_with_another_key_is_refused() -> None:
    with pytest.raises(WriteRefused, match="not signed"):
        new_fence().admit(token_for(5, 1, key=b"x" * 32), 5)  # type: ignore[arg-type]


def test_a_token_with_a_changed_field_is_refused() -> None:
    token = token_for(5, 1)
    for changes in ({"epoch": 2}, {"expires_ns": token.expires_ns + SECOND_NS},  # type: ignore[attr-defined]
                    {"chunk_id": 6}, {"session_id": 8}):
        forged = msgspec.structs.replace(token, **changes)  # type: ignore[type-var]
        with pytest.raises(WriteRefused):
            new_fence().admit(forged, forged.chunk_id)


def test_a_token_for_another_chunk_is_refused() -> None:
    with pytest.raises(WriteRefused, match="for chunk 5, not 6"):
        new_fence().admit(token_for(5, 1), 6)  # type: ignore[arg-type]


def test_a_token_checked_once_is_still_bound_to_its_chunk_and_expiry() -> None:
    fence = new_fence()
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
        new_fence().admit(token, 5)


def test_an_expired_token_is_refused_as_expired() -> None:
    fence = new_fence()
    old = token_for(5, 1, issued_ns=time.time_ns() - 2 * SECOND_NS, life_ns=SECOND_NS)
    with pytest.raises(TokenExpired, match="expired"):
        fence.admit(old, 5)  # type: ignore[arg-type]


def test_a_token_from_before_the_chunkserver_started_is_refused() -> None:
    issued_ns = time.time_ns()
    fence = new_fence()
    fence.started_ns = issued_ns + 1
    with pytest.raises(TokenExpired, match="predates"):
        fence.admit(token_for(5, 1, issued_ns=issued_ns), 5)  # type: ignore[arg-type]


def test_a_newer_epoch_fences_older_ones_per_chunk() -> None:
    fence = new_fence()
    fence.admit(token_for(5, 3), 5)  # type: ignore[arg-type]
    fence.admit(token_for(5, 4), 5)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost, match="fenced at lease epoch 4"):
        fence.admit(token_for(5, 3), 5)  # type: ignore[arg-type]
    fence.admit(token_for(6, 3), 6)  # type: ignore[arg-type]  # other chunks are unaffected


def test_the_masters_fence_refuses_older_epochs_before_any_write() -> None:
    fence = new_fence()
    fence.raise_epoch(5, 9)
    fence.raise_epoch(5, 2)  # a late, older fence never lowers it
    with pytest.raises(LeaseLost):
        fence.admit(token_for(5, 8), 5)  # type: ignore[arg-type]
    fence.admit(token_for(5, 9), 5)  # type: ignore[arg-type]
    fence.forget(5)
    fence.admit(token_for(5, 1), 5)  # type: ignore[arg-type]  # a replica made anew


# --- reads, and operations that are not what the capability allows --------------------
def test_a_read_capability_is_checked_for_chunk_operation_and_expiry() -> None:
    checker = VerifiedCapabilities(CLUSTER_KEY)
    read = token_for(5, 0, operation=READ, life_ns=SECOND_NS // 5)
    checker.check(read, 5, READ)  # type: ignore[arg-type]
    checker.check(read, 5, READ)  # type: ignore[arg-type]  # from the cache of verified ones
    with pytest.raises(ReadRefused, match="read capability is for chunk 5, not 6"):
        checker.check(read, 6, READ)  # type: ignore[arg-type]
    with pytest.raises(ReadRefused, match="read of chunk 5 carries no capability"):
        checker.check(None, 5, READ)
    time.sleep(0.3)
    with pytest.raises(TokenExpired, match="read capability for chunk 5 expired"):
        checker.check(read, 5, READ)  # type: ignore[arg-type]


def test_a_read_capability_never_writes_and_a_write_capability_never_reads() -> None:
    checker = VerifiedCapabilities(CLUSTER_KEY)
    read = token_for(5, 0, operation=READ)
    write = token_for(5, 1, operation=WRITE)
    checker.check(read, 5, READ)  # type: ignore[arg-type]  # verified and cached first
    with pytest.raises(WriteRefused, match="allows read, not write"):
        WriteFence(checker).admit(read, 5)  # type: ignore[arg-type]
    with pytest.raises(ReadRefused, match="allows write, not read"):
        checker.check(write, 5, READ)  # type: ignore[arg-type]


def test_the_operation_is_inside_the_signature() -> None:
    read = token_for(5, 0, operation=READ)
    forged = msgspec.structs.replace(read, operation=WRITE)  # type: ignore[type-var]
    with pytest.raises(WriteRefused, match="not signed"):
        new_fence().admit(forged, 5)


def test_the_masters_signer_makes_capabilities_the_chunkservers_accept() -> None:
    signer = CapabilitySigner(CLUSTER_KEY, write_life_s=5.0, generation=4)
    checker = VerifiedCapabilities(CLUSTER_KEY)
    checker.check(signer.read(3, 11), 11, READ)
    WriteFence(checker).admit(signer.write(3, 11, epoch=2), 11)
    other_cluster = VerifiedCapabilities(b"o" * 32)
    with pytest.raises(ReadRefused, match="not signed by this cluster's master"):
        other_cluster.check(signer.read(3, 11), 11, READ)


# --- master generations: fencing across masters (issue 15) ---------------------------
def test_a_capability_of_an_older_master_generation_is_refused_once_a_newer_is_seen() -> None:
    checker = VerifiedCapabilities(CLUSTER_KEY)
    old_master = CapabilitySigner(CLUSTER_KEY, write_life_s=5.0, generation=4)
    new_master = CapabilitySigner(CLUSTER_KEY, write_life_s=5.0, generation=5)
    old_read = old_master.read(3, 11)
    checker.check(old_read, 11, READ)  # verified and cached while 4 is the newest seen
    checker.check(new_master.read(3, 11), 11, READ)  # a newer master: 5 from now on
    assert checker.newest_generation == 5
    for token, operation in ((old_read, READ), (old_master.write(3, 11, epoch=2), WRITE)):
        with pytest.raises(TokenOfOldGeneration, match="generation 4, older than generation 5"):
            checker.check(token, 11, operation)
    with pytest.raises(TokenExpired):  # the client's path: fetch a fresh one
        WriteFence(checker).admit(old_master.write(3, 11, epoch=2), 11)
    checker.see_generation(3)  # never lowered
    assert checker.newest_generation == 5


def test_a_registration_fences_older_generations_before_any_capability() -> None:
    checker = VerifiedCapabilities(CLUSTER_KEY)
    checker.see_generation(8)
    with pytest.raises(TokenOfOldGeneration, match="generation 7, older than generation 8"):
        checker.check(CapabilitySigner(CLUSTER_KEY, 5.0, generation=7).read(1, 2), 2, READ)
    checker.check(CapabilitySigner(CLUSTER_KEY, 5.0, generation=8).read(1, 2), 2, READ)


def test_the_generation_is_inside_the_signature() -> None:
    old = CapabilitySigner(CLUSTER_KEY, write_life_s=5.0, generation=4).read(3, 11)
    assert (old.generation, old.token_format) == (4, capability.TOKEN_FORMAT)
    raised = msgspec.structs.replace(old, generation=9)
    with pytest.raises(ReadRefused, match="not signed"):
        VerifiedCapabilities(CLUSTER_KEY).check(raised, 11, READ)


def test_a_token_of_format_1_decodes_and_is_refused_by_name() -> None:
    """Format 1 had seven fields, no generation: it still decodes, and is refused as
    TokenOfOldGeneration (the client fetches a fresh one), never read as generation 0."""
    now_ns = time.time_ns()
    fields = (11, READ, 0, 3, now_ns, now_ns + SECOND_NS)
    mac = hmac.new(capability.capability_key(CLUSTER_KEY), struct.pack("<QQQQQQ", *fields),
                   hashlib.sha256).digest()[:capability.MAC_BYTES]  # as format 1 signed
    for mac_of_old, refusal in ((mac, TokenOfOldGeneration), (b"m" * 16, ReadRefused)):
        format_1 = msgspec.msgpack.encode([*fields, mac_of_old])
        old = msgspec.msgpack.decode(format_1, type=Capability)
        assert (old.generation, old.token_format) == (0, 1)
        with pytest.raises(refusal, match="token format 1, not 2|not signed"):
            VerifiedCapabilities(CLUSTER_KEY).check(old, 11, READ)
    current = CapabilitySigner(CLUSTER_KEY, write_life_s=5.0, generation=4).read(3, 11)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(current), type=Capability) == current
