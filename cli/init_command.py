"""`vmstore init`: a new cluster key and a starter configuration file."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

from vmstore.cli.config import DEFAULT_MASTER_PORT, DEFAULT_MOUNT, config_path, parse_address
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.protocol.auth import generate_key_file

STARTER = """\
# Written by `vmstore init`. Copy it and the key file to every host (keep the
# key mode 0600); change [client] host_label per host.

[cluster]
master = "{master}"
key_file = "{key_file}"

[client]
host_label = "{host_label}"
mount = "{mount}"

# One section per host that runs guests (vmstore migrate, evacuate, failover):
# [hosts.host2]
# libvirt = "qemu+ssh://root@host2/system"
# migration = "qemu+tcp://host2/system"
"""


def run_init(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else config_path()
    key_file = Path(args.key_file) if args.key_file else config.parent / "cluster.key"
    parse_address(args.master, "--master")
    for path in (config, key_file):
        if path.exists() and not args.force:
            raise ConfigError(f"{path} exists; pass --force to replace it (a new key locks"
                              " every host with the old one out)")
    key_file.unlink(missing_ok=True)
    generate_key_file(key_file)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(STARTER.format(master=args.master, key_file=key_file,
                                     host_label=args.host_label, mount=args.mount))
    print(f"wrote {config} and a new cluster key in {key_file} (mode 0600)")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init", help="write a new cluster key and a starter config file",
        description="Create a new cluster: a random key file (mode 0600) and a config"
        " file naming the master. Refuses to overwrite either without --force.",
        epilog="example: vmstore init --master 10.0.0.1:9420")
    parser.add_argument("--master", required=True, metavar="HOST:PORT",
                        help=f"where the master will listen (port {DEFAULT_MASTER_PORT})")
    parser.add_argument("--config", help="config file to write (default: $VMSTORE_CONFIG"
                        " or /etc/vmstore/vmstore.toml)")
    parser.add_argument("--key-file", help="key file to write (default: cluster.key beside"
                        " the config file)")
    parser.add_argument("--host-label", default=socket.gethostname(),
                        help="this host's failure domain (default: the hostname)")
    parser.add_argument("--mount", default=DEFAULT_MOUNT,
                        help=f"where hosts mount the cluster (default {DEFAULT_MOUNT})")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.set_defaults(handler=run_init)
