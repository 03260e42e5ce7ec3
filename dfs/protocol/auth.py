"""Mutual challenge-response authentication on the cluster key.

Both sides prove they hold the key by an HMAC over two fresh nonces, one
from each side, so nothing on the wire can be replayed on another
connection and the key itself never travels. The connector proves itself
only after the acceptor has, so a fake acceptor learns nothing useful.

    connector                          acceptor
    AuthHello(role, nonce_c)    ──▶
                                ◀──    AuthChallenge(nonce_a, HMAC(k, "acceptor"|nonce_c|nonce_a))
    AuthProof(HMAC(k, "connector"|nonce_a|nonce_c)) ──▶
                                ◀──    AuthAccepted
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from vmstore.dfs.errors import AuthenticationFailed, ConfigError

NONCE_BYTES = 32
KEY_BYTES_MIN = 32
ROLES = frozenset({"client", "chunkserver", "master", "admin"})


def acceptor_proof(key: bytes, connector_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    return hmac.new(key, b"acceptor" + connector_nonce + acceptor_nonce, hashlib.sha256).digest()


def connector_proof(key: bytes, connector_nonce: bytes, acceptor_nonce: bytes) -> bytes:
    return hmac.new(key, b"connector" + acceptor_nonce + connector_nonce, hashlib.sha256).digest()


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def check_nonce(nonce: bytes, who: str) -> None:
    if len(nonce) != NONCE_BYTES:
        raise AuthenticationFailed(f"{who} sent a nonce of {len(nonce)} bytes")


def proofs_match(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)


def generate_key_file(path: Path) -> None:
    """Write a new random cluster key, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(os.urandom(KEY_BYTES_MIN).hex() + "\n")


def load_key(path: Path) -> bytes:
    """Read the cluster key; refuse a key others can read (it opens every disk)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"cannot read cluster key file {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"cluster key file {path} is readable by group or others (mode {mode & 0o777:o});"
            " run: chmod 600 " + str(path)
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"cluster key file {path} does not hold a hex key") from None
    if len(key) < KEY_BYTES_MIN:
        raise ConfigError(f"cluster key in {path} is {len(key)} bytes; at least {KEY_BYTES_MIN}")
    return key
