"""The durable lease rows: epochs only grow, rows live while they mean something."""

from __future__ import annotations

from pathlib import Path

from vmstore.dfs.metadata.leases import LeaseTable
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import InodeId, SessionId


def table(tmp_path: Path) -> LeaseTable:
    return LeaseTable(MetadataStore(tmp_path / "metadata.db"))


def test_every_grant_and_revoke_takes_a_new_epoch_across_files(tmp_path: Path) -> None:
    leases = table(tmp_path)
    first = leases.grant(InodeId(10), SessionId(1), "h1")
    second = leases.grant(InodeId(11), SessionId(2), "h2")
    revoked = leases.revoke(InodeId(10))
    again = leases.grant(InodeId(10), SessionId(1), "h1")
    assert first < second < revoked < again


def test_epochs_keep_growing_after_a_restart(tmp_path: Path) -> None:
    epoch = table(tmp_path).grant(InodeId(10), SessionId(1), "h1")
    table(tmp_path).release(InodeId(10))
    assert table(tmp_path).grant(InodeId(10), SessionId(3), "h3") > epoch


def test_a_row_lives_while_held_or_while_a_handover_waits(tmp_path: Path) -> None:
    leases = table(tmp_path)
    inode = InodeId(10)
    epoch = leases.grant(inode, SessionId(1), "h1")
    row = leases.get(inode)
    assert row is not None and (row.holder_session, row.holder_host, row.epoch) == (1, "h1", epoch)
    leases.set_handover(inode, "h2")
    leases.release(inode)
    row = leases.get(inode)
    assert row is not None and row.holder_session == 0 and row.handover_host == "h2"
    leases.grant(inode, SessionId(2), "h2")  # the handover is taken
    row = leases.get(inode)
    assert row is not None and row.handover_host == ""
    leases.release(inode)
    assert leases.get(inode) is None
    leases.set_handover(inode, "h3")
    leases.set_handover(inode, "")  # cancelled
    assert leases.get(inode) is None


def test_leases_held_by_a_session(tmp_path: Path) -> None:
    leases = table(tmp_path)
    leases.grant(InodeId(10), SessionId(1), "h1")
    leases.grant(InodeId(11), SessionId(1), "h1")
    leases.grant(InodeId(12), SessionId(2), "h2")
    assert {row.inode for row in leases.held_by(SessionId(1))} == {10, 11}
    assert leases.holder_sessions() == {1, 2}
    assert leases.held_count() == 3
