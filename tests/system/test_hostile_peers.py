"""Peers that do not belong: wrong keys and garbage against real daemons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command
from vmstore.cli.config import parse_address
from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.errors import AuthenticationFailed, PeerUnavailable
from vmstore.dfs.protocol import auth, codec, messages
from vmstore.dfs.protocol.rpc import open_connection

pytestmark = pytest.mark.system


vmstore = vmstore_command


def test_wrong_key_is_refused_before_anything_is_read(cluster: Cluster, tmp_path: Path) -> None:
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(os.urandom(32).hex())
    wrong_key.chmod(0o600)
    config = tmp_path / "wrong.toml"
    config.write_text(f'[cluster]\nmaster = "{cluster.master_address}"\n'
                      f'key_file = "{wrong_key}"\n')
    result = vmstore("status", config=config)
    assert result.returncode == 1
    assert "does not hold the cluster key" in result.stderr
    assert "Traceback" not in result.stderr
    good = vmstore("status", "--json", config=cluster.config_path)
    assert good.returncode == 0, good.stderr


def test_world_readable_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    key = tmp_path / "open.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o644)
    config = tmp_path / "open.toml"
    config.write_text(f'[cluster]\nmaster = "{cluster.master_address}"\nkey_file = "{key}"\n')
    result = vmstore("status", config=config)
    assert result.returncode == 1
    assert "readable by group or others" in result.stderr


async def test_wrong_key_against_a_chunkserver(cluster: Cluster) -> None:
    host, port = parse_address(cluster.address_of("chunkserver1"), "chunkserver")
    with pytest.raises(AuthenticationFailed):
        async with open_connection(host, port, os.urandom(32), "client") as connection:
            await connection.call(messages.ToChunkserverReadChunk(
                chunk_id=1, version=1, offset_bytes=0, length_bytes=4096))


async def test_garbage_on_every_port_leaves_daemons_serving(cluster: Cluster) -> None:
    targets = [cluster.master_address] + [cluster.address_of(n) for n in
                                          cluster.chunkserver_names]
    garbage = [
        os.urandom(4096),
        b"GET / HTTP/1.0\r\n\r\n",
        codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 2**31, 0),
        codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 40, 0) + os.urandom(40),
        codec.HEADER.pack(b"VMS1", 1, 0, 10, 0, 100, 0) + b"truncated",
    ]
    for target in targets:
        host, port = parse_address(target, "target")
        for data in garbage:
            stream = await trio.open_tcp_stream(host, port)
            # A daemon answers garbage by closing at once; a truncated frame
            # waits for its bytes, so do not wait for the handshake timeout.
            with trio.move_on_after(0.5):
                try:
                    await stream.send_all(data)
                    while await stream.receive_some(65536):
                        pass
                except (trio.BrokenResourceError, OSError):
                    pass
            await stream.aclose()
    async with cluster.client() as client:
        attrs = await client.create_file("/after-garbage")
        await client.write(attrs.inode, 0, b"still here" * 1000)
        await client.fsync(attrs.inode)
        status = await client.status()
        assert all(s.state == "up" for s in status.chunkservers)
        assert await client.read(attrs.inode, 0, 10, 10) == b"still here"


async def test_unreachable_master_gives_a_clear_error() -> None:
    with pytest.raises(PeerUnavailable, match="unavailable"):
        async with open_client("127.0.0.1", 1, os.urandom(32), ClientIdentity("x"),
                               reconnect_timeout_s=0.5):
            pass


def test_status_json_lists_the_cluster_and_not_itself(cluster: Cluster) -> None:


    result = vmstore("status", "--json", config=cluster.config_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["master"]["address"] == cluster.master_address
    assert [s["state"] for s in document["chunkservers"]] == ["up"] * 3
    assert {"id", "address", "host", "state", "pid", "bytes_total", "bytes_used"} <= set(
        document["chunkservers"][0])
    assert document["chunks"] == {"total": 0, "ok": 0, "undergoal": 0, "endangered": 0,
                                  "lost": 0}
    assert document["clients"] == []  # the status command itself is not a client


def test_a_chunkserver_with_the_wrong_key_never_joins(cluster: Cluster, tmp_path: Path) -> None:
    """A real chunkserver process holding another key: it finds the master's proof
    wrong and says so, it never registers, and it still stops when told to."""
    wrong_key = tmp_path / "wrong.key"
    wrong_key.write_text(os.urandom(32).hex())
    wrong_key.chmod(0o600)
    log = tmp_path / "intruder.log"
    with open(log, "w") as log_file:
        intruder = subprocess.Popen(
            [sys.executable, "-m", "vmstore.cli.main", "chunkserver", "--data-dir",
             str(tmp_path / "intruder"), "--listen", "127.0.0.1:0", "--master",
             cluster.master_address, "--key-file", str(wrong_key), "--host-label",
             "intruder"], stdout=log_file, stderr=log_file,
            env={**os.environ, "VMSTORE_CONFIG": str(tmp_path / "absent.toml")})
    try:
        deadline = time.monotonic() + 30
        while "does not hold the cluster key" not in log.read_text():
            assert time.monotonic() < deadline, f"no refusal logged: {log.read_text()}"
            time.sleep(0.2)
    finally:
        intruder.terminate()
        intruder.wait(timeout=30)  # SIGTERM works before registration too
    status = json.loads(vmstore("status", "--json", config=cluster.config_path).stdout)
    assert sorted(server["host"] for server in status["chunkservers"]) == [
        "local0", "local1", "local2"]


def test_a_master_with_the_wrong_key_is_not_believed(cluster: Cluster, tmp_path: Path) -> None:
    """A fake master (a real master process with another key): a client holding the
    cluster key refuses it before sending anything but its hello."""
    fake_key = tmp_path / "fake.key"
    fake_key.write_text(os.urandom(32).hex())
    fake_key.chmod(0o600)
    ready = tmp_path / "fake.addr"
    fake = subprocess.Popen(
        [sys.executable, "-m", "vmstore.cli.main", "master", "--data-dir",
         str(tmp_path / "fake"), "--listen", "127.0.0.1:0", "--key-file", str(fake_key),
         "--new-cluster", "--ready-file", str(ready)], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "VMSTORE_CONFIG": str(tmp_path / "absent.toml")})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and fake.poll() is None, "fake master died"
            time.sleep(0.1)
        result = vmstore("status", "--master", ready.read_text().strip(),
                         config=cluster.config_path)
    finally:
        fake.terminate()
        fake.wait(timeout=30)
    assert result.returncode == 1
    assert "does not hold the cluster key" in result.stderr


async def test_a_replayed_handshake_is_refused(cluster: Cluster) -> None:
    """Record an honest client's handshake with the master, then replay its bytes on a
    new connection: the master's fresh nonce makes the recorded proof worthless."""
    host, port = parse_address(cluster.master_address, "master")

    async def receive_frame(stream: trio.SocketStream) -> messages.Message:
        data = b""
        while len(data) < codec.HEADER_BYTES:
            data += await stream.receive_some(codec.HEADER_BYTES - len(data))
        header = codec.decode_header(data)
        body = b""
        while len(body) < header.body_bytes + header.payload_bytes:
            more = await stream.receive_some()
            assert more, "the master closed the connection"
            body += more
        return codec.decode_body(header, body[:header.body_bytes])

    nonce = auth.new_nonce()
    hello = codec.encode_frame(messages.AuthHello(role="admin", nonce=nonce), 0)
    honest = await trio.open_tcp_stream(host, port)
    await honest.send_all(b"".join(hello))
    challenge = await receive_frame(honest)
    assert isinstance(challenge, messages.AuthChallenge)
    proof = codec.encode_frame(messages.AuthProof(
        proof=auth.connector_proof(auth.credential(cluster.key, "admin"), nonce,
                                   challenge.nonce)), 0)
    await honest.send_all(b"".join(proof))
    assert isinstance(await receive_frame(honest), messages.AuthAccepted)
    await honest.aclose()

    replay = await trio.open_tcp_stream(host, port)
    await replay.send_all(b"".join(hello))
    assert isinstance(await receive_frame(replay), messages.AuthChallenge)  # a new nonce
    await replay.send_all(b"".join(proof))
    with trio.fail_after(10):
        assert await replay.receive_some(100) == b""  # refused: closed without a word
    await replay.aclose()
    assert "(admin) does not hold its credential" in cluster.logs()["master"]
