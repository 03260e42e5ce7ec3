"""Export rules on a real namespace: who matches, what read-only and a directory forbid."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmstore.cli.exports_config import exports_from
from vmstore.dfs.errors import AccessDenied, ConfigError, ReadOnly
from vmstore.dfs.master.exports import ExportGuard, ExportRule, rule_for
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.types import ROOT_INODE, InodeId, SessionId

NOW = 1_000_000_000_000
CONFIG = Path("/etc/vmstore/vmstore.toml")


def rule(*clients: str, directory: str = "/", read_only: bool = False) -> ExportRule:
    return ExportRule(tuple(ipaddress.ip_network(c) for c in clients), directory, read_only)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Namespace, dict[str, InodeId]]]:
    """/guests/vm.img, /guests/sub/, /outside/secret.img; a hard link /outside/link.img ->
    /guests/vm.img."""
    store = MetadataStore(tmp_path / "meta.db")
    namespace = Namespace(store, lambda inode: True)  # unlinked files stay (open)
    with store.transaction():
        guests = InodeId(namespace.mkdir(ROOT_INODE, b"guests", 0o755, 0, 0, NOW).inode)
        sub = InodeId(namespace.mkdir(guests, b"sub", 0o755, 0, 0, NOW).inode)
        outside = InodeId(namespace.mkdir(ROOT_INODE, b"outside", 0o755, 0, 0, NOW).inode)
        image = InodeId(namespace.create(guests, b"vm.img", 0o100644, 0, 0, 0, NOW).inode)
        secret = InodeId(namespace.create(outside, b"secret.img", 0o100644, 0, 0, 0, NOW).inode)
        namespace.link(image, outside, b"link.img", NOW)
    yield namespace, {"guests": guests, "sub": sub, "outside": outside, "image": image,
                      "secret": secret}
    store.close()


def test_no_rules_allow_everything_and_the_first_match_wins() -> None:
    assert rule_for((), "10.1.1.1:5000") == ExportRule(clients=())
    rules = (rule("10.0.0.0/24", read_only=True), rule("10.0.0.5/32"), rule("::1/128"))
    assert rule_for(rules, "10.0.0.5:40000") == rules[0]
    assert rule_for(rules, "10.0.1.5:40000") is None
    assert rule_for(rules, "::1:40000") == rules[2]
    assert rule_for(rules, "::ffff:10.0.0.9:40000") == rules[0]  # IPv4-mapped
    assert rule_for(rules, "not-an-address:1") is None


def test_an_unexported_address_is_refused_everything(tree: tuple[Namespace, dict]) -> None:
    guard = ExportGuard((rule("10.9.0.0/16"),), tree[0], lambda inode: set())
    access = guard.access_for("127.0.0.1:40000", "client")
    for request in (m.ClientToMasterStatFs(), m.ClientToMasterGetAttr(inode=ROOT_INODE)):
        with pytest.raises(AccessDenied, match="not exported to 127.0.0.1"):
            guard.admit(access, request)


def test_read_only_refuses_every_change(tree: tuple[Namespace, dict]) -> None:
    namespace, inodes = tree
    guard = ExportGuard((rule("127.0.0.0/8", read_only=True),), namespace, lambda inode: set())
    access = guard.access_for("127.0.0.1:1", "client")
    guard.admit(access, m.ClientToMasterGetAttr(inode=inodes["image"]))
    guard.admit(access, m.ClientToMasterChunkLocations(inode=inodes["image"], first_index=0,
                                                       count=1))
    for request in (m.ClientToMasterChunkForWrite(session_id=1, op_id=1,
                                                  inode=inodes["image"], index=0),
                    m.ClientToMasterAcquireLease(session_id=1, inode=inodes["image"]),
                    m.ClientToMasterSetAttr(session_id=1, op_id=2, inode=inodes["image"],
                                            mode=0o600),
                    m.ClientToMasterUnlink(session_id=1, op_id=3, parent=ROOT_INODE,
                                           name=b"guests")):
        with pytest.raises(ReadOnly, match="exported read-only to 127.0.0.1"):
            guard.admit(access, request)


def test_a_directory_is_the_root_and_nothing_outside_it_is_reachable(
        tree: tuple[Namespace, dict]) -> None:
    namespace, inodes = tree
    holders: dict[int, set[SessionId]] = {}
    guard = ExportGuard((rule("127.0.0.1/32", directory="/guests"),), namespace,
                        lambda inode: holders.get(inode, set()))
    access = guard.access_for("127.0.0.1:1", "client")
    translated = guard.admit(access, m.ClientToMasterReadDir(inode=ROOT_INODE, after_cookie=0,
                                                             limit=10))
    assert translated.inode == inodes["guests"]  # type: ignore[attr-defined]
    shown = guard.shown(access, m.AttrsReply(attrs=namespace.getattr(inodes["guests"])))
    assert shown.attrs.inode == ROOT_INODE  # type: ignore[attr-defined]
    for inode in ("image", "sub"):
        guard.admit(access, m.ClientToMasterGetAttr(inode=inodes[inode]))
    for request in (m.ClientToMasterGetAttr(inode=inodes["secret"]),
                    m.ClientToMasterLookup(parent=inodes["outside"], name=b"secret.img"),
                    m.ClientToMasterRename(session_id=1, op_id=1, parent=ROOT_INODE,
                                           name=b"vm.img", new_parent=inodes["outside"],
                                           new_name=b"x"),
                    m.ClientToMasterLink(session_id=1, op_id=2, inode=inodes["secret"],
                                         new_parent=ROOT_INODE, new_name=b"stolen")):
        with pytest.raises(AccessDenied, match="outside /guests"):
            guard.admit(access, request)
    with pytest.raises(AccessDenied, match="sees only /guests"):
        guard.admit(access, m.ClientToMasterFsck())
    # A file with no name left is visible only to the sessions holding it open.
    with namespace.store.transaction():
        namespace.unlink(inodes["outside"], b"secret.img", NOW)
    with pytest.raises(AccessDenied):
        guard.admit(access, m.ClientToMasterGetAttr(inode=inodes["secret"]))
    access.session_id = SessionId(4)
    holders[inodes["secret"]] = {SessionId(4)}
    guard.admit(access, m.ClientToMasterGetAttr(inode=inodes["secret"]))


def test_a_missing_export_directory_refuses_the_session(tree: tuple[Namespace, dict]) -> None:
    guard = ExportGuard((rule("127.0.0.1/32", directory="/nowhere"),), tree[0],
                        lambda inode: set())
    with pytest.raises(AccessDenied, match="exported directory /nowhere does not exist"):
        guard.admit(guard.access_for("127.0.0.1:1", "client"),
                    m.ClientToMasterGetAttr(inode=ROOT_INODE))


def test_admin_connections_only_look(tree: tuple[Namespace, dict]) -> None:
    namespace, inodes = tree
    guard = ExportGuard((rule("10.9.0.0/16"),), namespace, lambda inode: set())
    access = guard.access_for("127.0.0.1:1", "admin")
    guard.admit(access, m.ClientToMasterGetAttr(inode=inodes["secret"]))
    guard.admit(access, m.ClientToMasterStatus())
    with pytest.raises(AccessDenied, match="admin connections may only look"):
        guard.admit(access, m.ClientToMasterChunkForWrite(session_id=0, op_id=1,
                                                          inode=inodes["image"], index=0))


def test_the_config_entries() -> None:
    rules = exports_from(CONFIG, [
        {"clients": ["10.77.0.0/24", "127.0.0.1"], "directory": "/guests//a/",
         "read_only": True},
        {"clients": ["*"]},
    ])
    assert rules[0].directory == "/guests/a"
    assert rules[0].read_only
    assert rule_for(rules, "10.77.0.3:1") == rules[0]
    assert rule_for(rules, "192.168.1.1:1") == rules[1]
    assert rule_for(rules, "[2001:db8::1]:1") == rules[1]


@pytest.mark.parametrize(("entries", "message"), [
    ({"clients": ["*"]}, "exports must be an array of tables"),
    (["x"], r"\[\[exports\]\] entry 1 must be a table"),
    ([{"clients": ["*"], "dir": "/"}], "entry 1: unknown key 'dir'"),
    ([{}], "entry 1 clients None is not a list"),
    ([{"clients": []}], "entry 1 clients"),
    ([{"clients": ["10.0.0.300"]}], "clients: '10.0.0.300' is not an IP address"),
    ([{"clients": [7]}], "clients: 7 is not an IP address"),
    ([{"clients": ["*"], "directory": "guests"}], "directory 'guests' is not an absolute"),
    ([{"clients": ["*"], "directory": "/a/../b"}], r"contains '\.' or '\.\.'"),
    ([{"clients": ["*"], "read_only": "yes"}], "read_only 'yes' is not true or false"),
])
def test_config_errors_name_the_file_entry_and_key(entries: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        exports_from(CONFIG, entries)
    assert str(CONFIG) in str(caught.value)
