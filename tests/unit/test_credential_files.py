"""Role-only credential files (issue 19): a host holding one proves its role, never
another's. A client's file cannot act as a chunkserver, a master or an admin; a
chunkserver's cannot act as a master, an admin or another chunkserver. Refused before a
byte is sent when the file lacks the role, and by the acceptor when a forged file claims
it; the honest connection still gets in, and the file round-trips through disk."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio

from tests.unit.test_rpc import echo_handler
from vmstore.cli.credential_command import issue, write_credentials
from vmstore.dfs.errors import AuthenticationFailed, ConfigError
from vmstore.dfs.protocol import auth
from vmstore.dfs.protocol.capability import capability_key
from vmstore.dfs.protocol.messages import AttrsReply, ClientToMasterGetAttr
from vmstore.dfs.protocol.rpc import open_connection, serve_connections

CURRENT = os.urandom(32)
KEYS = auth.ClusterKeys(current=CURRENT, accepted=(CURRENT, os.urandom(32)))
SERVER = str(uuid.uuid4())
MASTER_ROLES = frozenset({"client", "chunkserver", "admin"})


def test_a_client_credential_proves_the_client_role_only() -> None:
    client = issue(KEYS, "client")
    assert auth.credentials_for(client, "client") == tuple(
        auth.credential(key, "client") for key in KEYS.accepted)
    for role, identity in (("chunkserver", SERVER), ("admin", ""), ("master", ""),
                           ("peer", "")):
        with pytest.raises(AuthenticationFailed, match="client credential, which cannot"
                           f" act as {'chunkserver ' + SERVER if identity else role}"):
            auth.credentials_for(client, role, identity)
    with pytest.raises(ConfigError, match="not the cluster key file, which a master needs"):
        auth.keys_for(client)
    held = [value for values in client.secrets.values() for value in values]
    assert not set(KEYS.accepted) & set(held), "a client's file holds a cluster key"


def test_a_chunkserver_credential_proves_itself_its_peers_and_clients_never_a_master(
        ) -> None:
    server = issue(KEYS, "chunkserver", SERVER)
    assert auth.credentials_for(server, "chunkserver", SERVER)[0] == auth.credential(
        KEYS.current, "chunkserver", SERVER)
    assert auth.credentials_for(server, "peer")[0] == auth.credential(KEYS.current, "peer")
    assert auth.credentials_for(server, "client")[0] == auth.credential(KEYS.current,
                                                                        "client")
    assert server.secrets[auth.CAPABILITY_SECRET] == tuple(
        capability_key(key) for key in KEYS.accepted)
    for role, identity in (("chunkserver", str(uuid.uuid4())), ("admin", ""),
                           ("master", "")):
        with pytest.raises(AuthenticationFailed, match="cannot act as"):
            auth.credentials_for(server, role, identity)
    with pytest.raises(ConfigError, match="must name its uuid"):
        issue(KEYS, "chunkserver")


def test_a_credential_file_round_trips_and_is_no_key_file(tmp_path: Path) -> None:
    path = tmp_path / "client.credential"
    write_credentials(path, issue(KEYS, "chunkserver", SERVER))
    assert path.stat().st_mode & 0o077 == 0
    assert auth.load_material(path) == issue(KEYS, "chunkserver", SERVER)
    with pytest.raises(ConfigError, match="is a chunkserver credential of .*, not the"
                       " cluster key file"):
        auth.load_keys(path)
    path.write_text(path.read_text().replace("kind chunkserver", "kind master"))
    with pytest.raises(ConfigError, match="second line"):
        auth.load_material(path)


async def test_the_acceptor_refuses_a_client_credential_acting_as_an_admin(
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    client = issue(KEYS, "client")
    # What a client host could make of its file: the client secret offered as an admin's.
    forged = auth.RoleCredentials(kind="admin", identity="",
                                  secrets={"admin": client.secrets["client"]})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_connections, "127.0.0.1", 0, KEYS, MASTER_ROLES,
                                   echo_handler)
        with pytest.raises(AuthenticationFailed, match="cannot act as admin"):
            async with open_connection("127.0.0.1", port, client, "admin"):
                pass
        with pytest.raises(AuthenticationFailed):
            async with open_connection("127.0.0.1", port, forged, "admin"):
                pass
        async with open_connection("127.0.0.1", port, client, "client") as connection:
            reply, _ = await connection.call(ClientToMasterGetAttr(inode=7),
                                             reply_type=AttrsReply)
            assert reply.attrs.inode == 7
        nursery.cancel_scope.cancel()
