"""The master's ``[[exports]]`` in vmstore.toml: per-mount rules, like MooseFS's mfsexports.cfg.

    [[exports]]                      # first matching entry wins
    clients = ["10.77.0.0/24", "127.0.0.1"]   # addresses, networks, or "*" for any
    directory = "/guests"            # the mount's root (default "/")
    read_only = false                # default false

No ``[[exports]]`` at all: every client may mount the whole tree read-write
(as before exports existed). With entries, an address that none matches is
refused. What a rule means is in ``vmstore.dfs.master.exports``. Every error
names the file, the entry, the key and what is wrong, in one line.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from vmstore.dfs.constants import NAME_BYTES_MAX
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.master.exports import ExportRule, Network

EXPORT_KEYS = {"clients", "directory", "read_only"}
EVERY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def exports_from(path: Path, entries: Any) -> tuple[ExportRule, ...]:
    """The rules of ``entries`` (the file's ``exports`` value), in order."""
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: exports must be an array of tables ([[exports]]),"
                          f" not {type(entries).__name__}")
    rules = []
    for number, entry in enumerate(entries, 1):
        where = f"{path}: [[exports]] entry {number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table, not {type(entry).__name__}")
        unknown = set(entry) - EXPORT_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        read_only = entry.get("read_only", False)
        if not isinstance(read_only, bool):
            raise ConfigError(f"{where} read_only {read_only!r} is not true or false")
        rules.append(ExportRule(clients=_clients(where, entry.get("clients")),
                                directory=_directory(where, entry.get("directory", "/")),
                                read_only=read_only))
    return tuple(rules)


def _clients(where: str, clients: Any) -> tuple[Network, ...]:
    if not isinstance(clients, list) or not clients:
        raise ConfigError(f'{where} clients {clients!r} is not a list of "ADDRESS",'
                          ' "NETWORK/BITS" or "*"')
    networks: list[Network] = []
    for client in clients:
        if client == "*":
            networks.extend(EVERY_ADDRESS)
            continue
        try:
            if not isinstance(client, str) or "\0" in client:
                raise ValueError(client)
            networks.append(ipaddress.ip_network(client, strict=False))
        except ValueError:
            raise ConfigError(f'{where} clients: {client!r} is not an IP address, a network'
                              ' (10.0.0.0/24) or "*"') from None
    return tuple(networks)


def _directory(where: str, directory: Any) -> str:
    """An absolute path in the cluster, normalised; '.' and '..' are refused, not resolved."""
    if not isinstance(directory, str) or not directory.startswith("/") or "\0" in directory:
        raise ConfigError(f"{where} directory {directory!r} is not an absolute path")
    parts = [part for part in directory.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ConfigError(f"{where} directory {directory!r} contains '.' or '..'")
    if any(len(part.encode()) > NAME_BYTES_MAX for part in parts):
        raise ConfigError(f"{where} directory {directory!r} has a name over"
                          f" {NAME_BYTES_MAX} bytes")
    return "/" + "/".join(parts)
