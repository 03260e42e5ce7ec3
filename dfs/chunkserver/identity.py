"""What a chunkserver's data directory says about itself: its own identity
(``server.uuid``) and the newest master identity it accepted (``cluster.json``);
and, in memory only, the id the master gave it (``ServerIdentity``).

Both are written atomically (a temporary file, fsync, rename, fsync of the directory):
a crash leaves the old file or the new one, never half of one, and never a chunkserver
that forgot which cluster its replicas belong to. The rule applied to a master:
``dfs.protocol.cluster_identity``.

Caveat: a chunkserver whose ``cluster.json`` is gone (removed by hand, or from before
cluster ids) takes the next master's identity, whichever cluster it is of.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from vmstore.dfs.errors import ConfigError
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity

SERVER_UUID_FILE = "server.uuid"
CLUSTER_FILE = "cluster.json"


@dataclass
class ServerIdentity:
    """The id the master gave this chunkserver: set by the master link at each
    registration, read by the data service to name itself in errors."""

    server_id: int = 0  # 0 until the first registration


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.rename(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the rename itself is durable
    finally:
        os.close(directory)


def server_uuid(data_dir: Path) -> str:
    """This disk's identity: made once, kept with the data it names."""
    path = data_dir / SERVER_UUID_FILE
    if path.exists():
        return path.read_text().strip()
    identity = str(uuid.uuid4())
    write_atomically(path, identity + "\n")
    return identity


def load_accepted_master(data_dir: Path) -> ClusterIdentity | None:
    """The newest master identity this chunkserver accepted; None if it never did."""
    path = data_dir / CLUSTER_FILE
    try:
        fields = json.loads(path.read_text())
        return ClusterIdentity(str(fields["cluster_id"]), int(fields["generation"]),
                               str(fields["incarnation"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as error:
        # Not guessed at: taking the next master's identity could hand the replicas
        # here to a stranger.
        raise ConfigError(f"{path} is damaged ({error}); it names the cluster whose"
                          " replicas this directory holds: restore it, or remove it to"
                          " join the next master's cluster") from error


def store_accepted_master(data_dir: Path, identity: ClusterIdentity) -> None:
    write_atomically(data_dir / CLUSTER_FILE, json.dumps({
        "cluster_id": identity.cluster_id, "generation": identity.generation,
        "incarnation": identity.incarnation}) + "\n")
