"""One master command sent to several chunkservers at once.

Promise: ``command_all`` sends each server its command concurrently, each
call bounded by RPC_TIMEOUT_S, and returns only once every one has answered,
failed or timed out; it returns the servers that carried the command out, in
the order given. A server not registered, or without a connection, is
skipped (counted as failed). No error escapes: each refusal is logged
(INFO for NoSpace, a state the chunkserver reports; WARNING otherwise) and,
when asked, handed back per server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from vmstore.dfs.constants import RPC_TIMEOUT_S
from vmstore.dfs.errors import DfsError, NoSpace
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.registry import Registry
from vmstore.dfs.protocol.messages import Request
from vmstore.dfs.types import ServerId

log = logging.getLogger(__name__)


async def command_all(
    registry: Registry, servers: list[ServerId], make: Callable[[ServerId], Request],
    refusals: dict[ServerId, DfsError] | None = None,
) -> list[ServerId]:
    """Send a command to each server at once; the ones that succeeded, in order
    (``refusals``, if given, gets the error of each that refused)."""
    succeeded: set[ServerId] = set()

    async def one(server_id: ServerId) -> None:
        entry = registry.chunkservers.get(server_id)
        if entry is None or entry.connection is None:
            return
        try:
            await entry.connection.call(make(server_id), timeout_s=RPC_TIMEOUT_S)
            succeeded.add(server_id)
        except DfsError as error:
            command = type(make(server_id)).__name__
            if refusals is not None:
                refusals[server_id] = error
            # A full disk is a state the chunkserver reports, not a fault.
            log.log(logging.INFO if isinstance(error, NoSpace) else logging.WARNING,
                    "chunkserver %d refused %s: %s", server_id, command, error,
                    extra=about("command_refused", server=server_id,
                                command=command, error=str(error)))

    async with trio.open_nursery() as nursery:
        for server_id in servers:
            nursery.start_soon(one, server_id)
    return [s for s in servers if s in succeeded]
