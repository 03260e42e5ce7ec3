"""Who takes part in a move: the hosts (as libvirt reaches them) and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from vmstore.dfs.errors import UnknownHost


@dataclass(frozen=True)
class MigrationHost:
    """A host guests run on, as the coordinator and the other libvirtd reach it."""

    name: str  # for messages
    libvirt_uri: str  # for the coordinator
    migration_uri: str  # for a peer libvirtd (peer-to-peer migration)
    label: str  # its vmstore host label; "" until learned from libvirt (its hostname)


def host_from_uri(uri: str) -> MigrationHost:
    """An unconfigured host named by its libvirt URI: the same URI serves both sides."""
    return MigrationHost(name=urlsplit(uri).hostname or uri, libvirt_uri=uri,
                         migration_uri=uri, label="")


@dataclass(frozen=True)
class ClusterAccess:
    """How the coordinator talks to the vmstore master, and where hosts mount it."""

    master_host: str
    master_port: int
    key: bytes
    mount: str  # the same path on every host, e.g. /var/lib/vmstore
    host_label: str  # of the host the coordinator runs on
    # The rest of an HA group's masters: a call goes on to the one that leads now.
    other_masters: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Fleet:
    """The configured hosts; a libvirt URI names a host that is not configured."""

    hosts: tuple[MigrationHost, ...] = ()

    def host(self, text: str) -> MigrationHost:
        for host in self.hosts:
            if text in (host.name, host.label, host.libvirt_uri, host.migration_uri):
                return host
        if "://" in text or text.startswith("qemu"):
            return host_from_uri(text)
        raise UnknownHost(f"no host {text!r}: name a configured host"
                          f" ({', '.join(h.name for h in self.hosts) or 'none configured'})"
                          " or give its libvirt URI, e.g. qemu+ssh://root@host2/system")
