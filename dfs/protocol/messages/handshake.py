"""Authentication: the four messages each connection starts with, both directions.

``protocol.auth`` runs the exchange (mutual HMAC-SHA256 proofs over fresh
nonces with the connector's credential, derived from the cluster key, its role
and a chunkserver's uuid); nothing else is read from a connection before
``AuthAccepted``.
"""

from __future__ import annotations

from typing import ClassVar

from vmstore.dfs.protocol.messages.base import Message


class AuthHello(Message, frozen=True, kw_only=True):
    """Connector → acceptor: who I am and a fresh 32-byte nonce; the rest of the
    handshake proves the credential of exactly that (``auth.credential``)."""

    TYPE: ClassVar[int] = 10
    role: str  # "client" | "chunkserver" | "master" | "admin"
    nonce: bytes
    identity: str = ""  # a chunkserver's uuid; "" for every other role


class AuthChallenge(Message, frozen=True, kw_only=True):
    """Acceptor → connector: its own nonce and proof that it holds the connector's
    credential (so the cluster key, or that credential).

    ``proof`` = HMAC-SHA256(credential, "acceptor" | hello nonce | acceptor nonce).
    """

    TYPE: ClassVar[int] = 11
    nonce: bytes
    proof: bytes


class AuthProof(Message, frozen=True, kw_only=True):
    """Connector → acceptor: HMAC-SHA256(credential, "connector" | acceptor nonce | hello
    nonce)."""

    TYPE: ClassVar[int] = 12
    proof: bytes


class AuthAccepted(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 13
