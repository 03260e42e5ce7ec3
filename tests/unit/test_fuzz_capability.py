"""Fuzzing capabilities: only the master's own, untouched capability for the chunk and
operation passes.

Property: ``capability.check`` returns only for a capability the master
signed, for this chunk and operation, not expired; every other one (random fields over the
whole 64-bit signed range, random MACs, a signed token with any field
changed) raises WriteRefused / ReadRefused or TokenExpired, never struct.error or
OverflowError. Tokens that arrive off the wire went through the message
decoder first (fuzzed in test_fuzz_codec); here they are built directly,
so values the decoder would refuse are tried too.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstore.dfs.errors import ReadRefused, TokenExpired, WriteRefused
from vmstore.dfs.protocol import capability
from vmstore.dfs.protocol.capability import READ, WRITE
from vmstore.dfs.protocol.messages import Capability

KEY = capability.capability_key(b"k" * 32)
NOW_NS = 1_700_000_000 * 10**9
ANY_INT = st.one_of(st.integers(-(2**63), 2**64 + 5),
                    st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]))
FIELDS = ["chunk_id", "operation", "epoch", "session_id", "issued_ns", "expires_ns", "mac",
          "generation", "token_format"]
OPERATION = st.sampled_from([READ, WRITE])


def signed(chunk_id: int = 9) -> Capability:
    return capability.sign(KEY, operation=WRITE, chunk_id=chunk_id, epoch=3, session_id=4,
                           issued_ns=NOW_NS, life_ns=10**10)


def test_the_genuine_token_passes() -> None:
    capability.check(KEY, signed(), 9, WRITE, NOW_NS)


@settings(max_examples=300, deadline=None)
@given(ANY_INT, ANY_INT, ANY_INT, ANY_INT, ANY_INT, ANY_INT, st.binary(max_size=40), ANY_INT,
       OPERATION)
def test_random_tokens_are_refused(chunk_id: int, operation: int, epoch: int, session_id: int,
                                   issued_ns: int, expires_ns: int, mac: bytes, target: int,
                                   wanted: int) -> None:
    token = Capability(chunk_id=chunk_id, operation=operation, epoch=epoch,
                       session_id=session_id, issued_ns=issued_ns, expires_ns=expires_ns,
                       mac=mac)
    try:
        capability.check(KEY, token, target, wanted, NOW_NS)
    except (WriteRefused, ReadRefused):
        return
    raise AssertionError(f"a token nobody signed passed: {token}")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), st.data())
def test_a_signed_token_with_one_field_changed_is_refused(field: str,
                                                          data: st.DataObject) -> None:
    token = signed()
    value = data.draw(st.binary(max_size=40) if field == "mac" else ANY_INT)
    if value == getattr(token, field):
        return
    forged = msgspec.structs.replace(token, **{field: value})
    try:
        capability.check(KEY, forged, 9, WRITE, NOW_NS)
    except (WriteRefused, TokenExpired):
        return
    raise AssertionError(f"changing {field} to {value!r} kept the token valid")


@settings(max_examples=100, deadline=None)
@given(ANY_INT)
def test_a_token_for_another_chunk_is_refused(target: int) -> None:
    if target == 9:
        return
    try:
        capability.check(KEY, signed(9), target, WRITE, NOW_NS)
    except WriteRefused as error:
        assert "not" in str(error)
        return
    raise AssertionError(f"a token for chunk 9 let chunk {target} be written")


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 2**63))
def test_an_expired_token_is_refused(late_ns: int) -> None:
    token = signed()
    try:
        capability.check(KEY, token, 9, WRITE, token.expires_ns + late_ns)
    except TokenExpired:
        return
    raise AssertionError("an expired token passed")
