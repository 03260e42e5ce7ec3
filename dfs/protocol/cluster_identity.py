"""Which cluster a master speaks for, and how new its metadata is: what a chunkserver
checks before it lets a master decide about its replicas.

A master decides which replicas are stale and tells chunkservers to delete them. A
master that is not the cluster's (started on an empty data directory, pointed at
another cluster's database) or that runs on an old copy of the metadata would call
every replica it does not know stale, and the chunkservers would destroy the data.
So the metadata carries:

* ``cluster_id`` — a uuid made once, with the metadata database, never changed.
* ``generation`` — a number that moves forward at every master start, before the
  master serves anyone (``dfs.metadata.identity``).
* ``incarnation`` — a random id of one master start (memory only), so that two starts
  with the same generation (two copies of one database, each started once) are told
  apart.

A chunkserver stores the newest of these it has accepted (``dfs.chunkserver.identity``)
and refuses a master of another cluster, one below that generation, and one at that
generation but of another start. The master applies the same rule to what a chunkserver
reports at registration, so that it never takes in the replicas of a chunkserver that
would refuse it.

Why at every start and not at every commit or checkpoint: a chunkserver learns the
generation when it registers, which happens when a master starts (or a link breaks and
comes back); a number moving more often would not be seen in between, and moving it
costs a transaction, which the write path should not pay.

Caveat: a copy of the metadata taken while the master ran, started after that master
is gone and before any later start of it, is one generation ahead of what the
chunkservers saw and is accepted: that is what restoring a backup is. Only an explicit
restore should do it; the changes made after the copy are lost to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterIdentity:
    cluster_id: str  # uuid text
    generation: int
    incarnation: str  # uuid text of one master start; "" when not known

    def describe(self) -> str:
        return f"cluster {self.cluster_id} generation {self.generation}"


def refusal(seen: ClusterIdentity | None, master: ClusterIdentity) -> str:
    """Why a chunkserver that has accepted ``seen`` must refuse ``master``; "" to accept.

    ``seen`` None: a chunkserver that never accepted a master (new, or from before
    cluster ids) takes the first one's.
    """
    if seen is None:
        return ""
    if master.cluster_id != seen.cluster_id:
        return (f"the master is of cluster {master.cluster_id or '(none)'}, this chunkserver"
                f" belongs to cluster {seen.cluster_id}")
    if master.generation < seen.generation:
        return (f"the master's metadata is generation {master.generation}, older than"
                f" generation {seen.generation} this chunkserver has seen: it runs on an old"
                " copy of the metadata")
    if master.generation == seen.generation and master.incarnation != seen.incarnation:
        return (f"the master's metadata is generation {master.generation} of another start"
                " than the one this chunkserver has seen: it runs on a copy of the metadata")
    return ""
