"""Which writers a chunkserver still lets write: tokens and lease epochs.

Promises:
* A write is let through only with a WRITE capability the master signed
  for this chunk, not expired (``protocol.capability``), and with a lease epoch no
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

from vmstore.dfs.errors import LeaseLost, TokenPredatesRestart
from vmstore.dfs.protocol.capability import WRITE, VerifiedCapabilities
from vmstore.dfs.protocol.messages import Capability


class WriteFence:
    def __init__(self, capabilities: VerifiedCapabilities) -> None:
        self.capabilities = capabilities
        self.started_ns = time.time_ns()
        self._epochs: dict[int, int] = {}  # chunk id -> newest lease epoch seen

    def admit(self, capability: Capability | None, chunk_id: int) -> None:
        """Raise unless ``capability`` may write ``chunk_id`` now; remember its epoch."""
        token = self.capabilities.check(capability, chunk_id, WRITE)
        if token.issued_ns < self.started_ns:
            raise TokenPredatesRestart(f"write capability for chunk {chunk_id} predates"
                                       " this chunkserver's start")
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
