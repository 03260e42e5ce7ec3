"""Per-mount rules ("exports"): which client addresses may mount, how, and what they see.

Like MooseFS's mfsexports.cfg. The master's config holds an ordered list of
rules (``[[exports]]`` in vmstore.toml, parsed by ``cli.config``); when a
client connects, the first rule whose ``clients`` holds its address decides:

* no rule matches: every request of the connection, its session first, is
  refused (AccessDenied "not exported to ADDRESS"), so the mount fails;
* ``read_only``: no change of any kind (namespace, attributes, xattrs,
  goals, write leases, write chains, write capabilities): ReadOnly (EROFS).
  Chunkservers write only with a write capability, which the master never
  gives such a session, so no path writes;
* ``directory``: the session's root. Inode 1 in its requests means that
  directory, and the directory is shown to it as inode 1; every inode it
  names (``inode``, ``parent``, ``new_parent``, open files it declares)
  must be that directory or below it (a file: one of its names is below it;
  a file with no name left: this session holds it open), or the request is
  refused (AccessDenied). Names '..' are refused by the namespace anyway,
  so a lookup never climbs out; the kernel keeps '..' of the mount's root
  at the root.

No rules at all (no ``[[exports]]``) means every address may mount the
whole tree read-write, as before exports existed.

Promises: the rule is chosen once per connection, from the address the
master sees (not from anything the client says), and checked on every
request of that connection, before the request runs. Connections of the
role ``admin`` (``vmstore status``, ``fsck``, ``fileinfo``, ``lease``, the
migration coordinator) are not subject to the rules: they may only look
(namespace queries, status, fsck, chunk locations without capabilities) and
do the operator's lease and drain commands; they get no capability, so they
never read or write data.

Caveats: roles are declared by the connector, and anyone holding the
cluster key may claim any role, including ``chunkserver``: exports bound
what honest mounts and clients that hold the key only through a mount may
do, not what a thief of the key may do. A session's directory is resolved
when it opens (and on every reconnect); renaming the exported directory
later leaves open sessions on it, as NFS does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from vmstore.dfs.errors import AccessDenied, NotADirectory, NotFound, ReadOnly
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.types import ROOT_INODE, InodeId, SessionId

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Requests that change something: refused to read-only sessions.
CHANGES: frozenset[type[m.Message]] = frozenset({
    m.ClientToMasterSetAttr, m.ClientToMasterCreate, m.ClientToMasterMkdir,
    m.ClientToMasterSymlink, m.ClientToMasterLink, m.ClientToMasterUnlink,
    m.ClientToMasterRmdir, m.ClientToMasterRename, m.ClientToMasterSetXattr,
    m.ClientToMasterRemoveXattr, m.ClientToMasterSetGoal, m.ClientToMasterChunkForWrite,
    m.ClientToMasterReportBadChain, m.ClientToMasterWriteEnd, m.ClientToMasterAcquireLease,
    m.ClientToMasterLeaseHandover, m.ClientToMasterLeaseBreak, m.ClientToMasterDrain,
})
# Requests about the whole cluster, which a session confined to a directory
# may not make: fsck names files everywhere; drain is an operator's.
CLUSTER_WIDE: frozenset[type[m.Message]] = frozenset({m.ClientToMasterFsck,
                                                      m.ClientToMasterDrain})
# What an admin connection may ask: look, and the operator's commands.
ADMIN_REQUESTS: frozenset[type[m.Message]] = frozenset({
    m.ClientToMasterOpenSession, m.ClientToMasterCloseSession, m.ClientToMasterRenewSession,
    m.ClientToMasterStatFs, m.ClientToMasterStatus, m.ClientToMasterFsck,
    m.ClientToMasterDrain, m.ClientToMasterLookup, m.ClientToMasterGetAttr,
    m.ClientToMasterReadDir, m.ClientToMasterReadLink, m.ClientToMasterGetXattr,
    m.ClientToMasterListXattr, m.ClientToMasterChunkLocations, m.ClientToMasterLeaseInfo,
    m.ClientToMasterLeaseHandover, m.ClientToMasterLeaseBreak,
})
INODE_FIELDS = ("inode", "parent", "new_parent")


@dataclass(frozen=True)
class ExportRule:
    """One ``[[exports]]`` entry: who (``clients``), where (``directory``), how."""

    clients: tuple[Network, ...]
    directory: str = "/"  # absolute, normalised: no '.', '..', '//' or trailing '/'
    read_only: bool = False

    def matches(self, address: Address) -> bool:
        return any(address.version == network.version and address in network
                   for network in self.clients)

    def describe(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        return f"{self.directory} {mode}"


def peer_address(peer: str) -> Address | None:
    """The IP address of a connection's ``host:port`` (IPv4-mapped IPv6 as IPv4)."""
    host = peer.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def rule_for(rules: tuple[ExportRule, ...], peer: str) -> ExportRule | None:
    """The first rule for the address of ``peer``; with no rules, the whole tree read-write."""
    if not rules:
        return ExportRule(clients=())
    address = peer_address(peer)
    if address is None:
        return None
    return next((rule for rule in rules if rule.matches(address)), None)


@dataclass
class Access:
    """What one connection may do; made when it connects, by its address and role."""

    peer: str
    role: str
    rule: ExportRule | None  # None: not exported to this address
    root: InodeId | None = None  # the rule's directory, once resolved
    session_id: SessionId = SessionId(0)  # the session opened on this connection
    unrestricted: bool = field(init=False)  # the fast path: whole tree, read-write

    def __post_init__(self) -> None:
        self.unrestricted = (self.role != "admin" and self.rule is not None
                             and self.rule.directory == "/" and not self.rule.read_only)
        if self.unrestricted:
            self.root = ROOT_INODE


class ExportGuard:
    """Checks every client request against its connection's ``Access``."""

    def __init__(self, rules: tuple[ExportRule, ...], namespace: Namespace,
                 holders: Callable[[int], set[SessionId]]) -> None:
        self.rules = rules
        self.namespace = namespace  # the reader's: guards never change metadata
        self.holders = holders  # sessions holding an inode open

    def access_for(self, peer: str, role: str) -> Access:
        return Access(peer, role, None if role == "admin" else rule_for(self.rules, peer))

    def admit(self, access: Access, request: m.Request) -> m.Request:
        """``request`` as this connection may send it (its root made real), or raise."""
        if access.unrestricted:
            return request  # fast path
        kind = type(request)
        name = kind.__name__.removeprefix("ClientToMaster")
        if access.role == "admin":
            if kind not in ADMIN_REQUESTS:
                raise AccessDenied(f"{name}: admin connections may only look and run"
                                   " operator commands; mount to change files")
            return request
        rule = access.rule
        if rule is None:
            raise AccessDenied(f"not exported to {access.peer.rpartition(':')[0]}: no"
                               " [[exports]] rule of the master matches this address")
        if rule.read_only and kind in CHANGES:
            raise ReadOnly(f"{name}: exported read-only to {access.peer.rpartition(':')[0]}")
        if rule.directory == "/":
            return request
        if kind in CLUSTER_WIDE:
            raise AccessDenied(f"{name}: this mount sees only {rule.directory}")
        root = self.root_of(access)
        changes: dict[str, Any] = {}
        for field_name in INODE_FIELDS:
            inode = getattr(request, field_name, None)
            if inode is not None:
                changes[field_name] = self._inside(access, root, inode)
        if isinstance(request, m.ClientToMasterOpenSession):
            changes["open_inodes"] = [i for i in request.open_inodes
                                      if self._visible(access, root, i)]
        return msgspec.structs.replace(request, **changes) if changes else request

    def shown(self, access: Access, reply: m.Message) -> m.Message:
        """The reply as the session sees it: its root directory is inode 1."""
        if (access.unrestricted or access.root is None or access.root == ROOT_INODE
                or not isinstance(reply, m.AttrsReply) or reply.attrs.inode != access.root):
            return reply
        return m.AttrsReply(attrs=msgspec.structs.replace(reply.attrs, inode=ROOT_INODE))

    def root_of(self, access: Access) -> InodeId:
        """The session's root directory, resolved on first use (again on each connection)."""
        if access.root is None:
            assert access.rule is not None
            directory = access.rule.directory
            try:
                attrs = self.namespace.resolve_path(directory.encode())
            except (NotFound, NotADirectory):
                raise AccessDenied(f"exported directory {directory} does not exist") from None
            if attrs.mode & 0o170000 != 0o040000:
                raise AccessDenied(f"exported directory {directory} is not a directory")
            access.root = InodeId(attrs.inode)
        return access.root

    def _inside(self, access: Access, root: InodeId, inode: int) -> int:
        if inode == ROOT_INODE:
            return root
        if not self._visible(access, root, inode):
            assert access.rule is not None
            raise AccessDenied(f"inode {inode} is outside {access.rule.directory}, the"
                               " only directory this mount sees")
        return inode

    def _visible(self, access: Access, root: InodeId, inode: int) -> bool:
        if inode in (ROOT_INODE, root):
            return True
        placed = self.namespace.under(InodeId(inode), root)  # NotFound for no such inode
        if placed is None:  # no name left: visible only to the sessions holding it open
            return access.session_id in self.holders(inode)
        return placed
