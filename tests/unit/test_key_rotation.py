"""Rolling the cluster key: the key file's format, each rotation step, and hosts midway
through a rotation still connecting both ways (real sockets)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import trio

from tests.unit.test_rpc import ROLES, echo_handler
from vmstore.cli.key_command import rotated, write_keys
from vmstore.dfs.errors import AuthenticationFailed, ConfigError
from vmstore.dfs.protocol import auth
from vmstore.dfs.protocol.auth import ClusterKeys, KeyFile, load_keys, parse_keys
from vmstore.dfs.protocol.messages import AttrsReply, ClientToMasterGetAttr
from vmstore.dfs.protocol.rpc import open_connection, serve_connections

OLD, NEW = os.urandom(32), os.urandom(32)


def test_a_key_file_holds_current_then_accepted_keys(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    keys = parse_keys(f"# rotated\n{NEW.hex()}\n\n{OLD.hex()}  # old\n{NEW.hex()}\n", path)
    assert keys == ClusterKeys(current=NEW, accepted=(NEW, OLD))
    with pytest.raises(ConfigError, match="line 2 is not a hex key"):
        parse_keys(f"{OLD.hex()}\nzz\n", path)
    with pytest.raises(ConfigError, match="line 1 is 4 bytes; at least 32"):
        parse_keys("00112233\n", path)
    with pytest.raises(ConfigError, match="does not hold a hex key"):
        parse_keys("# nothing\n", path)
    with pytest.raises(ConfigError, match="holds 5 keys; at most 4"):
        parse_keys("".join(os.urandom(32).hex() + "\n" for _ in range(5)), path)


def test_each_rotation_step_and_the_file_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    write_keys(path, [OLD])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    added = rotated(load_keys(path), "add")
    assert added[0] == OLD and len(added) == 2
    write_keys(path, added)
    promoted = rotated(load_keys(path), "promote")
    assert promoted == [added[1], OLD]
    write_keys(path, promoted)
    assert rotated(load_keys(path), "retire") == [added[1]]
    with pytest.raises(ConfigError, match="only one key: nothing to promote"):
        rotated(ClusterKeys(OLD, (OLD,)), "promote")
    with pytest.raises(ConfigError, match="nothing to retire"):
        rotated(ClusterKeys(OLD, (OLD,)), "retire")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_key_file_is_followed_and_a_broken_one_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.auth", "keeping the keys read before",
                        level=logging.ERROR)
    monkeypatch.setattr(auth, "KEY_FILE_CHECK_INTERVAL_S", 0.0)
    path = tmp_path / "cluster.key"
    write_keys(path, [OLD])
    followed = KeyFile(path)
    write_keys(path, [NEW, OLD])
    assert followed.keys() == ClusterKeys(NEW, (NEW, OLD))
    path.write_text("half a key")  # a copy cut short
    assert followed.keys() == ClusterKeys(NEW, (NEW, OLD))


async def handshake(server: ClusterKeys, client: ClusterKeys) -> None:
    failure: AuthenticationFailed | None = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_connections, "127.0.0.1", 0, server, ROLES,
                                   echo_handler)
        try:
            async with open_connection("127.0.0.1", port, client, "client") as connection:
                reply, _ = await connection.call(ClientToMasterGetAttr(inode=9),
                                                 reply_type=AttrsReply)
                assert reply.attrs.inode == 9
        except AuthenticationFailed as error:
            failure = error
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


@pytest.mark.parametrize(("server", "client"), [
    (ClusterKeys(OLD, (OLD, NEW)), ClusterKeys(OLD, (OLD, NEW))),  # after "add"
    (ClusterKeys(NEW, (NEW, OLD)), ClusterKeys(OLD, (OLD, NEW))),  # server promoted first
    (ClusterKeys(OLD, (OLD, NEW)), ClusterKeys(NEW, (NEW, OLD))),  # client promoted first
    (ClusterKeys(NEW, (NEW,)), ClusterKeys(NEW, (NEW, OLD))),      # server retired first
    (ClusterKeys(NEW, (NEW, OLD)), ClusterKeys(NEW, (NEW,))),      # client retired first
], ids=["added", "server-promoted", "client-promoted", "server-retired", "client-retired"])
async def test_hosts_midway_through_a_rotation_still_connect(server: ClusterKeys,
                                                             client: ClusterKeys) -> None:
    await handshake(server, client)


async def test_a_retired_key_opens_nothing(expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    with pytest.raises(AuthenticationFailed, match="does not hold the cluster key"):
        await handshake(ClusterKeys(NEW, (NEW,)), ClusterKeys(OLD, (OLD,)))
