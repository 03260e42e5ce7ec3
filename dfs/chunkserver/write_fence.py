"""Which writers a chunkserver still lets write: tokens and lease epochs.

Promises:
* A write is let through only with a token the master signed for this
  chunk, not expired (``protocol.write_token``), and with a lease epoch no
  older than the newest this chunkserver has seen for the chunk (from a
  write or from the master's fence).
* Tokens issued before this process started are refused as expired: the
  epochs seen before a restart are gone, so an old token could otherwise
  slip past a fence. The writer just fetches a fresh token from the master,
  which gives one only to the lease's current holder.

The caller holds the chunk's range lock around ``admit`` and the write, and
the whole chunk's lock around ``raise_epoch``, so a fence waits for the
writes already admitted and no older write is admitted after it.
"""

from __future__ import annotations

import time

from vmstore.dfs.errors import LeaseLost, TokenExpired
from vmstore.dfs.protocol import write_token
from vmstore.dfs.protocol.messages import WriteToken

VERIFIED_TOKENS_MAX = 65536


class WriteFence:
    def __init__(self, cluster_key: bytes) -> None:
        self._key = write_token.token_key(cluster_key)
        self.started_ns = time.time_ns()
        self._epochs: dict[int, int] = {}  # chunk id -> newest lease epoch seen
        # A writer sends the same token with every write to a chunk for
        # seconds: its signature is checked once (the token is immutable).
        self._signed: set[WriteToken] = set()

    def admit(self, token: WriteToken | None, chunk_id: int) -> None:
        """Raise unless ``token`` may write ``chunk_id`` now; remember its epoch."""
        now_ns = time.time_ns()
        known = (token is not None and token.chunk_id == chunk_id
                 and now_ns <= token.expires_ns and token in self._signed)
        if not known:
            write_token.check(self._key, token, chunk_id, now_ns)
            assert token is not None
            if len(self._signed) >= VERIFIED_TOKENS_MAX:
                self._signed.clear()
            self._signed.add(token)
        assert token is not None
        if token.issued_ns < self.started_ns:
            raise TokenExpired(f"write token for chunk {chunk_id} predates this chunkserver's"
                               " start")
        newest = self._epochs.get(chunk_id, 0)
        if token.epoch < newest:
            raise LeaseLost(f"chunk {chunk_id} is fenced at lease epoch {newest}; the write"
                            f" has epoch {token.epoch} (its writer lost the lease)")
        self._epochs[chunk_id] = token.epoch

    def raise_epoch(self, chunk_id: int, epoch: int) -> None:
        self._epochs[chunk_id] = max(epoch, self._epochs.get(chunk_id, 0))

    def forget(self, chunk_id: int) -> None:
        """The replica is gone; its epochs need no memory."""
        self._epochs.pop(chunk_id, None)
