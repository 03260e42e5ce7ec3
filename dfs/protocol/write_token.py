"""Write tokens: the master signs, every chunkserver of a write chain checks.

Promise: ``check`` accepts a token only if the master made it (HMAC with a
key derived from the cluster key, compared in constant time), for exactly
this chunk, and it is not past its expiry by this machine's clock. Epochs
are not judged here: that needs what a chunkserver has seen
(``chunkserver.write_fence``).

Clocks: expiry is wall-clock time of the master, judged by the
chunkserver's clock. The master keeps a lease CLOCK_SKEW_MAX_S longer than
any token it issued for it, so clocks that disagree by less than that
(NTP keeps them within milliseconds) cannot let a late write through.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from vmstore.dfs.errors import TokenExpired, WriteRefused
from vmstore.dfs.protocol.messages import WriteToken

MAC_BYTES = 16
_KEY_PURPOSE = b"vmstore write token v1"
_FIELDS = struct.Struct("<QQQQQ")


def token_key(cluster_key: bytes) -> bytes:
    """A key for tokens only, so that a token MAC never doubles as a handshake proof."""
    return hmac.new(cluster_key, _KEY_PURPOSE, hashlib.sha256).digest()


def _mac(key: bytes, chunk_id: int, epoch: int, session_id: int, issued_ns: int,
         expires_ns: int) -> bytes:
    fields = _FIELDS.pack(chunk_id, epoch, session_id, issued_ns, expires_ns)
    return hmac.new(key, fields, hashlib.sha256).digest()[:MAC_BYTES]


def sign(key: bytes, *, chunk_id: int, epoch: int, session_id: int, issued_ns: int,
         life_ns: int) -> WriteToken:
    expires_ns = issued_ns + life_ns
    return WriteToken(chunk_id=chunk_id, epoch=epoch, session_id=session_id,
                      issued_ns=issued_ns, expires_ns=expires_ns,
                      mac=_mac(key, chunk_id, epoch, session_id, issued_ns, expires_ns))


def check(key: bytes, token: WriteToken | None, chunk_id: int, now_ns: int) -> None:
    """Raise WriteRefused for a missing, forged or misdirected token, TokenExpired if old."""
    if token is None:
        raise WriteRefused(f"write to chunk {chunk_id} carries no write token")
    try:
        expected = _mac(key, token.chunk_id, token.epoch, token.session_id, token.issued_ns,
                        token.expires_ns)
    except struct.error:
        raise WriteRefused(f"write token for chunk {chunk_id} has fields out of range") from None
    if not hmac.compare_digest(expected, token.mac):
        raise WriteRefused(f"write token for chunk {chunk_id} was not signed by this"
                           " cluster's master")
    if token.chunk_id != chunk_id:
        raise WriteRefused(f"write token is for chunk {token.chunk_id}, not {chunk_id}")
    if now_ns > token.expires_ns:
        raise TokenExpired(f"write token for chunk {chunk_id} expired"
                           f" {(now_ns - token.expires_ns) / 1e9:.1f} s ago")
