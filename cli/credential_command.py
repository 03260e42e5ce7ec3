"""`vmstore credential issue`: a role-only credential file, so a host need not hold the
cluster key (issue 19).

    vmstore credential issue --kind client --out /etc/vmstore/client.credential
    vmstore credential issue --kind chunkserver --data-dir /srv/vmstore/disk1 --out F
    vmstore credential issue --kind admin --out F

Run it where the cluster key file is (a master's host); copy the file (mode 0600) to
the host and point that host's [cluster] key_file at it. A client's file proves the
client role only: it cannot act as a chunkserver, a master or an admin. A chunkserver's
proves that one chunkserver to the master, and the peer role to other chunkservers; it
also holds what the chunkserver checks (the client credential, the capability keys),
and nothing a master or an admin proves. An admin's proves the admin role only (status,
drain, and the other operator commands). One value per accepted cluster key: after a
key rotation step, issue the files again (see vmstore key).

Caveats: a client credential is shared by every client, and the peer credential by
every chunkserver; and a chunkserver can sign capabilities with the keys it checks them
with (they are symmetric). A master needs the cluster key file itself.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from vmstore.cli.config import load_config
from vmstore.dfs.chunkserver.identity import server_uuid
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.protocol import auth
from vmstore.dfs.protocol.capability import capability_key


def issue(keys: auth.ClusterKeys, kind: str, identity: str = "") -> auth.RoleCredentials:
    """The credentials a peer of ``kind`` (a chunkserver: of uuid ``identity``) holds."""
    if kind not in auth.CREDENTIAL_KINDS:
        raise ConfigError(f"no credential kind {kind!r}: client, chunkserver or admin")
    problem = auth.claim_problem(kind, identity)
    if problem:
        raise ConfigError(problem)
    secrets = {auth.credential_name(role, identity): tuple(
        auth.credential(key, role, identity) for key in keys.accepted)
        for role in auth.CREDENTIAL_KINDS[kind]}
    if kind == "chunkserver":
        secrets[auth.CAPABILITY_SECRET] = tuple(capability_key(key) for key in keys.accepted)
    return auth.RoleCredentials(kind=kind, identity=identity, secrets=secrets)


def write_credentials(path: Path, credentials: auth.RoleCredentials) -> None:
    """Write the file owner-readable only, in one rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as credential_file:
        credential_file.write(auth.format_credentials(credentials))
        credential_file.flush()
        os.fsync(credential_file.fileno())
    temporary.rename(path)


def run_credential_command(args: argparse.Namespace) -> int:
    key_path = Path(args.key_file) if args.key_file else load_config(
        need_master=False).key_file
    keys = auth.load_keys(key_path)  # a credential file here is refused, naming it
    identity = args.uuid or ""
    if args.data_dir and not identity:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)  # a chunkserver to come
        identity = server_uuid(Path(args.data_dir))
    credentials = issue(keys, args.kind, identity)
    out = Path(args.out)
    write_credentials(out, credentials)
    print(f"{out}: {credentials.describe()}, for {len(keys.accepted)} accepted key(s);"
          f" copy it to the host (mode 0600) and set [cluster] key_file = \"{out}\" there")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "credential", help="issue a role-only credential file (no cluster key on the host)",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    parser.add_argument("action", choices=["issue"])
    parser.add_argument("--kind", required=True, choices=sorted(auth.CREDENTIAL_KINDS))
    parser.add_argument("--uuid", help="a chunkserver's uuid (its data directory's"
                        " server.uuid)")
    parser.add_argument("--data-dir", help="a chunkserver's data directory: its uuid"
                        " (made now if it has none yet)")
    parser.add_argument("--out", required=True, help="the credential file to write")
    parser.add_argument("--key-file", help="the cluster key file; default: [cluster]"
                        " key_file of the config file")
    parser.set_defaults(handler=run_credential_command)
