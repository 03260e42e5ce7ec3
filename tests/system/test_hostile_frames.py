"""Random and mutated frames against a live master and chunkserver.

Authenticated with the right key (the real handshake), and without it, a
seeded stream of hostile frames goes to the master and to a chunkserver:
random bytes, valid frames of every message type mutated (bits flipped,
cut short, extended, lengths set absurd, msgpack markers claiming 4 GiB),
and a frame header claiming 8 MiB of body followed by silence. The
property: no daemon crashes (the cluster fixture fails on a traceback in
any log, and each daemon's pid must still be alive), none hangs (the
silent connection is closed within FRAME_RECEIVE_TIMEOUT_S), and an honest
client writes and reads files the whole time and after, and
`vmstore status --json` works. On failure the seed is in the test's name.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command
from tests.unit.test_fuzz_codec import MESSAGES, sample_message
from vmstore.cli.config import parse_address
from vmstore.dfs.constants import FRAME_BODY_BYTES_MAX, FRAME_RECEIVE_TIMEOUT_S
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol.messages import ClientToMasterGetAttr, ToChunkserverFlushChunk
from vmstore.dfs.protocol.rpc import FrameStream, _authenticate_connector
from vmstore.dfs.types import ROOT_INODE

pytestmark = pytest.mark.system

SEED = 20240917
RANDOM_FRAMES = 150  # per target
MUTATED_FRAMES = 300  # per target
UNAUTHENTICATED = 20  # connections of garbage per target
FRAMES_PER_CONNECTION = 2  # a daemon hangs up at the first bad frame: keep batches short
WORKERS = 6  # connections at once, per target
PROBE_WAIT_S = 0.3
PROBE_ID = 0xC0FFEE
UNAUTHENTICATED_WAIT_S = 0.5


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One to four hostile edits of a valid frame (test_fuzz_codec's, seeded here)."""
    buffer = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        edit = rng.choice(["flip", "cut", "extend", "length", "marker", "byte"])
        at = rng.randrange(max(len(buffer), 1))
        if edit == "flip" and buffer:
            buffer[at] ^= 1 << rng.randrange(8)
        elif edit == "cut":
            del buffer[at:]
        elif edit == "extend":
            buffer += rng.randbytes(rng.randint(1, 64))
        elif edit == "length" and len(buffer) >= codec.HEADER_BYTES:
            field_at = rng.choice([12, 16])
            value = rng.choice([0, 1, 2**31, 2**32 - 1, FRAME_BODY_BYTES_MAX + 1])
            buffer[field_at : field_at + 4] = value.to_bytes(4, "little")
        elif edit == "marker":
            buffer[at:at] = rng.choice([b"\xdd", b"\xc6", b"\xdb"]) + b"\xff\xff\xff\xf0"
        elif edit == "byte" and buffer:
            buffer[at] = rng.randrange(256)
    return bytes(buffer)


def random_frame(rng: random.Random) -> bytes:
    """A well-formed header of a random known type over a random body."""
    body = rng.randbytes(rng.randint(0, 200))
    message_type = rng.choice(MESSAGES).TYPE
    return codec.HEADER.pack(codec.MAGIC, codec.PROTOCOL_VERSION, rng.choice([0, 1, 2]),
                             message_type, rng.getrandbits(32), len(body), 0) + body


def hostile_frames(rng: random.Random) -> list[bytes]:
    frames = [random_frame(rng) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 300))
              for _ in range(RANDOM_FRAMES)]
    for _ in range(MUTATED_FRAMES):
        message = sample_message(rng.choice(MESSAGES))
        head, payload = codec.encode_frame(message, rng.getrandbits(32),
                                           payload=rng.randbytes(rng.choice([0, 0, 100])))
        frames.append(mutate(rng, head + payload))
    rng.shuffle(frames)
    return frames


async def authenticated(address: str, key: bytes) -> FrameStream:
    host, port = parse_address(address, "target")
    frames = FrameStream(await trio.open_tcp_stream(host, port))
    with trio.fail_after(10):
        await _authenticate_connector(frames, key, "client", "", address)
    return frames


async def send_batch(frames: FrameStream, batch: list[bytes], probe: bytes) -> None:
    """Send frames, then an honest request; wait for its answer or for the hang-up.

    A batch that left a frame half-sent (a length set absurd) gets neither
    before PROBE_WAIT_S: that connection is dropped from this side, and the
    daemon's frame timeout is tested by ``announce_then_fall_silent``.
    """
    received = bytearray()
    with trio.move_on_after(PROBE_WAIT_S):
        try:
            for frame in [*batch, probe]:
                await frames.stream.send_all(frame)
            # The probe's answer ends with its request id in a response header.
            while data := await frames.stream.receive_some(65536):
                received += data
                if PROBE_ID.to_bytes(4, "little") in received:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await trio.aclose_forcefully(frames.stream)


async def attack_authenticated(address: str, key: bytes, frames: list[bytes],
                               probe: bytes) -> None:
    batches = [frames[i : i + FRAMES_PER_CONNECTION]
               for i in range(0, len(frames), FRAMES_PER_CONNECTION)]

    async def worker(mine: list[list[bytes]]) -> None:
        for batch in mine:
            await send_batch(await authenticated(address, key), batch, probe)

    async with trio.open_nursery() as nursery:
        for index in range(WORKERS):
            nursery.start_soon(worker, batches[index::WORKERS])


async def attack_unauthenticated(address: str, rng: random.Random) -> None:
    host, port = parse_address(address, "target")
    for _ in range(UNAUTHENTICATED):
        stream = await trio.open_tcp_stream(host, port)
        garbage = rng.choice([rng.randbytes(rng.randint(1, 4096)), random_frame(rng),
                              mutate(rng, random_frame(rng))])
        with trio.move_on_after(UNAUTHENTICATED_WAIT_S):
            try:
                await stream.send_all(garbage)
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)


async def announce_then_fall_silent(address: str, key: bytes) -> float:
    """Seconds until the daemon drops a connection whose frame never comes."""
    frames = await authenticated(address, key)
    await frames.stream.send_all(codec.HEADER.pack(
        codec.MAGIC, codec.PROTOCOL_VERSION, 0, MESSAGES[0].TYPE, 1, FRAME_BODY_BYTES_MAX, 0))
    started = time.monotonic()
    with trio.fail_after(FRAME_RECEIVE_TIMEOUT_S + 10):
        try:
            while await frames.stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, OSError):
            pass
    await trio.aclose_forcefully(frames.stream)
    return time.monotonic() - started


async def honest_work(cluster: Cluster, name: str, rounds: int) -> None:
    async with cluster.client() as client:
        for round_number in range(rounds):
            data = os.urandom(4096) + f"{name} {round_number}".encode() * 1000
            attrs = await client.create_file(f"/{name}-{round_number}")
            await client.write(attrs.inode, 0, data)
            await client.fsync(attrs.inode)
            assert await client.read(attrs.inode, 0, len(data), len(data)) == data


@pytest.mark.parametrize("seed", [SEED])
async def test_hostile_frames_leave_daemons_serving(cluster: Cluster, seed: int) -> None:
    rng = random.Random(seed)
    targets = {cluster.master_address: ClientToMasterGetAttr(inode=ROOT_INODE),
               cluster.address_of("chunkserver1"): ToChunkserverFlushChunk(
                   chunk_id=1, version=1, chain_rest=[])}
    pids = {name: cluster.pid(name) for name in ["master", *cluster.chunkserver_names]}
    silences: list[float] = []

    async def silent(address: str) -> None:
        silences.append(await announce_then_fall_silent(address, cluster.key))

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for address, probe in targets.items():
            nursery.start_soon(silent, address)
            nursery.start_soon(attack_authenticated, address, cluster.key, hostile_frames(rng),
                               b"".join(codec.encode_frame(probe, PROBE_ID)))
            nursery.start_soon(attack_unauthenticated, address, random.Random(rng.random()))
        nursery.start_soon(honest_work, cluster, "during", 20)
    attack_s = time.monotonic() - started

    assert len(silences) == 2
    assert all(s < FRAME_RECEIVE_TIMEOUT_S + 5 for s in silences), silences
    for name, pid in pids.items():
        os.kill(pid, 0)  # raises if the daemon is gone
        assert cluster.pid(name) == pid, f"{name} was restarted"
    await honest_work(cluster, "after", 3)
    status = vmstore_command("status", "--json", config=cluster.config_path)
    assert status.returncode == 0, status.stderr
    document = json.loads(status.stdout)
    assert [s["state"] for s in document["chunkservers"]] == ["up"] * 3
    assert document["chunks"]["lost"] == 0
    logs = cluster.logs()
    assert "closing connection" in logs["master"], "the master logged no reason for a close"
    assert "frame incomplete" in logs["master"]
    print(f"seed {seed}: {attack_s:.1f} s of attack, silent connections closed after"
          f" {[round(s, 1) for s in silences]} s")
