"""Run one client session against the configured cluster, for a command."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from vmstore.cli.config import load_config
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.constants import COMMAND_MASTER_TIMEOUT_S
from vmstore.dfs.protocol.auth import use_key_file

T = TypeVar("T")


def with_client(master: str | None, work: Callable[[Client], Awaitable[T]],
                role: str = "client") -> T:
    config = load_config(master=master)
    key = use_key_file(config.key_file)

    async def main() -> T:
        async with open_client(config.master_host, config.master_port, key,
                               ClientIdentity(host_label=config.host_label, role=role),
                               reconnect_timeout_s=COMMAND_MASTER_TIMEOUT_S,
                               other_masters=config.other_masters) as client:
            return await work(client)

    return trio.run(main)
