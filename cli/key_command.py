"""`vmstore key`: show the cluster key file, and roll the key without downtime.

    vmstore key show                 fingerprints: compare them across hosts
    vmstore key rotate add           a new key, accepted but not yet used
    vmstore key rotate promote       the newest key becomes the one used
    vmstore key rotate retire        only the current key stays

Each step edits this host's key file (atomically, mode 0600); copy the file
to every host before the next step (`vmstore key show` prints the same
fingerprints everywhere when done). Running processes re-read the file on
their own within seconds (see vmstore.dfs.protocol.auth).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from vmstore.cli.config import load_config
from vmstore.dfs.constants import KEYS_PER_FILE_MAX
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.protocol.auth import (
    KEY_BYTES_MIN,
    ClusterKeys,
    fingerprint,
    load_keys,
)

NEXT_STEP = {
    "add": "copy the file to every host, then: vmstore key rotate promote",
    "promote": "copy the file to every host, then: vmstore key rotate retire",
    "retire": "copy the file to every host; the old key now opens nothing",
}


def write_keys(path: Path, keys: list[bytes]) -> None:
    """Replace the key file in one rename: a reader sees the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write("# vmstore cluster keys: the first is used, every one is accepted\n")
        key_file.writelines(key.hex() + "\n" for key in keys)
        key_file.flush()
        os.fsync(key_file.fileno())
    temporary.rename(path)


def rotated(keys: ClusterKeys, step: str) -> list[bytes]:
    accepted = list(keys.accepted)
    if step == "add":
        if len(accepted) >= KEYS_PER_FILE_MAX:
            raise ConfigError(f"already {len(accepted)} keys: retire old ones first")
        return [*accepted, os.urandom(KEY_BYTES_MIN)]
    if step == "promote":
        if len(accepted) < 2:
            raise ConfigError("only one key: nothing to promote (vmstore key rotate add first)")
        return [accepted[-1], *accepted[:-1]]
    if len(accepted) < 2:
        raise ConfigError("only one key: nothing to retire")
    return [keys.current]


def describe(path: Path, keys: ClusterKeys) -> dict[str, Any]:
    return {"key_file": str(path), "current": fingerprint(keys.current),
            "accepted": [fingerprint(key) for key in keys.accepted]}


def run_key_command(args: argparse.Namespace) -> int:
    path = Path(args.key_file) if args.key_file else load_config(need_master=False).key_file
    keys = load_keys(path)
    if args.action == "rotate":
        if args.step is None:
            raise ConfigError("vmstore key rotate needs a step: add, promote or retire")
        write_keys(path, rotated(keys, args.step))
        keys = load_keys(path)
    shown = describe(path, keys)
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    print(f"{path}: current key {shown['current']}")
    for name in shown["accepted"][1:]:
        print(f"  also accepted: {name}")
    if args.action == "rotate":
        print(f"next: {NEXT_STEP[args.step]}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "key", help="show the cluster key file's keys, or rotate the key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show the fingerprints of the keys in this host's key file, or take one"
        " step of a rotation. Take each step on one host, copy the file to every host, and"
        " only then take the next; nothing needs a restart.",
        epilog="examples:\n  vmstore key show\n  vmstore key rotate add      # then copy\n"
        "  vmstore key rotate promote  # then copy\n  vmstore key rotate retire   # then copy")
    parser.add_argument("action", choices=["show", "rotate"])
    parser.add_argument("step", nargs="?", choices=["add", "promote", "retire"])
    parser.add_argument("--key-file", help="default: [cluster] key_file of the config file")
    parser.add_argument("--json", action="store_true", help="fingerprints as JSON")
    parser.set_defaults(handler=run_key_command)
