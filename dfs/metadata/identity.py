"""The cluster id and the metadata generation as the metadata stores them (meta rows).

When and why the generation moves: ``dfs.protocol.cluster_identity``. Here it moves
once per master start, in a transaction of its own, before the master serves anyone,
so that no chunkserver can have seen a generation the database does not hold.
"""

from __future__ import annotations

import uuid

from vmstore.dfs.errors import DamagedMetadata
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity


def begin_generation(store: MetadataStore) -> ClusterIdentity:
    """Move the generation forward for this start, in a transaction of its own."""
    with store.transaction():
        return advance_generation(store)


def advance_generation(store: MetadataStore) -> ClusterIdentity:
    """Move the generation forward inside the caller's transaction (an HA leader's
    first group commit, so that the move is journaled); this start's identity."""
    cluster_id = store.one("SELECT value FROM meta WHERE key = 'cluster_id'")
    generation = store.one("SELECT value FROM meta WHERE key = 'generation'")
    if cluster_id is None or generation is None or not str(generation[0]).isdigit():
        raise DamagedMetadata(f"metadata in {store.path} has no valid cluster id and"
                              f" generation ({cluster_id!r}, {generation!r})")
    next_generation = int(generation[0]) + 1
    store.execute("UPDATE meta SET value = ? WHERE key = 'generation'",
                  (str(next_generation),))
    return ClusterIdentity(str(cluster_id[0]), next_generation, str(uuid.uuid4()))
