"""The `vmstore` command. Exit codes: 0 ok, 1 an operating error (named on stderr),
2 bad usage; `status` uses 1 for degraded and 2 for lost data."""

from __future__ import annotations

import argparse
import sys

from vmstore.cli import (
    bench,
    credential_command,
    daemons,
    file_info,
    files,
    fsck,
    import_command,
    init_command,
    key_command,
    lease,
    local_cluster,
    metadata_command,
    migrate_command,
    mount_command,
    quarantine_command,
    recover_command,
    status,
    tls_command,
)
from vmstore.cli.config import load_tls_settings
from vmstore.dfs import __version__
from vmstore.dfs.errors import DfsError
from vmstore.dfs.protocol import tls

# These read or write the config file themselves and connect nowhere: a
# [tls] they are about to fix must not stop them.
COMMANDS_WITHOUT_CONNECTIONS = frozenset({"init", "tls", "key", "bench", "umount", "local",
                                         "metadata", "quarantine", "recover", "credential"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmstore", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A replicated filesystem for KVM guest images, mounted on every host.",
        epilog="The configuration file is /etc/vmstore/vmstore.toml, or $VMSTORE_CONFIG.")
    parser.add_argument("--version", action="version", version=f"vmstore {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (init_command, daemons, local_cluster, mount_command, status, fsck, files,
                   import_command, file_info, lease, migrate_command, bench, tls_command,
                   key_command, credential_command, metadata_command, quarantine_command,
                   recover_command):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in COMMANDS_WITHOUT_CONNECTIONS:
            tls.configure(load_tls_settings())  # every connection this process makes or takes
        result: int = args.handler(args)
        return result
    except DfsError as error:
        print(f"vmstore {args.command}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
