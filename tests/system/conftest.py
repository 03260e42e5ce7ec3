"""A real cluster for system tests: daemons as separate processes on loopback.

The ``cluster`` fixture starts a master and three chunkservers with
``vmstore local up`` machinery, lets a test kill (-9) and restart any of
them, and at teardown stops everything and fails the test if a daemon
logged a traceback (a crash is never an expected outcome).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from vmstore.cli.config import load_tls_settings, parse_address
from vmstore.cli.local_cluster import local_down, local_up, spawn, wait_ready
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.protocol import tls
from vmstore.dfs.protocol.auth import load_key

DEATH_TIMEOUT_S = 10.0
HEAL_TIMEOUT_S = 180.0


class Cluster:
    def __init__(self, directory: Path, chunkservers: int,
                 master_flags: tuple[str, ...] = (),
                 chunkserver_flags: tuple[str, ...] = (), tls: bool = False,
                 masters: int = 1) -> None:
        self.directory = directory
        self.master_address = local_up(directory, chunkservers, None, master_flags,
                                       chunkserver_flags, tls=tls, masters=masters)
        self.tls = load_tls_settings(self.config_path)
        # An HA group's address is a list: the first master stands for it here.
        self.master_host, self.master_port = parse_address(
            self.master_address.split(",")[0], "master")
        self.key = load_key(directory / "cluster.key")
        self.chunkserver_names = [f"chunkserver{i}" for i in range(chunkservers)]

    @property
    def config_path(self) -> Path:
        return self.directory / "vmstore.toml"

    def pid(self, name: str) -> int:
        return int((self.directory / "run" / f"{name}.pid").read_text())

    def kill(self, name: str, signal_number: int = signal.SIGKILL) -> None:
        """Kill a daemon and wait until it is gone (reaped)."""
        pid = self.pid(name)
        os.kill(pid, signal_number)
        deadline = time.monotonic() + DEATH_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if waited == pid:
                return
            time.sleep(0.01)
        raise AssertionError(f"{name} (pid {pid}) survived signal {signal_number}")

    def restart(self, name: str) -> str:
        ready = spawn(self.directory, name)
        return wait_ready(ready, name, self.directory)

    def restart_when_healthy(self, name: str, signal_number: int = signal.SIGTERM) -> None:
        """Stop and restart one daemon, then wait until no chunk is under goal: a rolling
        restart must never take down the last current replica of anything."""
        self.kill(name, signal_number)
        self.restart(name)
        healthy = vmstore_command("status", "--wait-healthy", config=self.config_path,
                                  timeout_s=HEAL_TIMEOUT_S)
        assert healthy.returncode == 0, (f"after restarting {name}: {healthy.stdout}"
                                         f" {healthy.stderr}")

    def address_of(self, name: str) -> str:
        return (self.directory / "run" / f"{name}.addr").read_text().strip()

    def logs(self) -> dict[str, str]:
        return {path.stem: path.read_text(errors="replace")
                for path in (self.directory / "logs").glob("*.log")}

    @asynccontextmanager
    async def client(self, host_label: str = "local0",
                     reconnect_timeout_s: float = 60.0) -> AsyncIterator[Client]:
        before = tls.current()
        tls.configure(self.tls)  # this test process connects as the cluster's hosts do
        try:
            async with open_client(self.master_host, self.master_port, self.key,
                                   ClientIdentity(host_label=host_label),
                                   reconnect_timeout_s=reconnect_timeout_s) as client:
                yield client
        finally:
            tls.restore(before)


def vmstore_command(*arguments: str, config: Path,
                    timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the real `vmstore` command against a cluster's config."""
    return subprocess.run([sys.executable, "-m", "vmstore.cli.main", *arguments],
                          capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, "VMSTORE_CONFIG": str(config)})


# The writer runs in a process of its own: a pytest process holding a file of
# the mount open would pass it to every daemon it forks, and the child's close
# of it (a FUSE flush) may wait for the very master the child is to become.
_WRITER_SCRIPT = """
import hashlib, os, sys
path, progress, block_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "wb") as image, open(progress, "a") as log:
    index = 0
    while True:
        image.write(hashlib.sha256(b"%d" % index).digest() * (block_bytes // 32))
        image.flush()
        os.fsync(image.fileno())
        log.write("%d\\n" % index)
        log.flush()
        index += 1
"""


class FsyncingWriter:
    """A process appending blocks to a file, each fsynced; ``durable`` counts every
    block the filesystem said was durable (block i is ``block(i)``)."""

    BLOCK_BYTES = 64 * 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self._progress = Path(f"/var/tmp/vmstore-writer-{os.getpid()}-{path.name}-"
                              f"{time.monotonic_ns()}.log")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WRITER_SCRIPT, str(path), str(self._progress),
             str(self.BLOCK_BYTES)], stderr=subprocess.PIPE, text=True)
        self.failures: list[str] = []

    @classmethod
    def block(cls, index: int) -> bytes:
        return hashlib.sha256(b"%d" % index).digest() * (cls.BLOCK_BYTES // 32)

    @property
    def durable(self) -> int:
        try:
            return self._progress.read_text().count("\n")
        except FileNotFoundError:
            return 0

    def _check_alive(self) -> None:
        if not self.failures and self._process.poll() is not None:
            assert self._process.stderr is not None
            self.failures.append(f"writer exited {self._process.returncode}:"
                                 f" {self._process.stderr.read()[-2000:]}")

    def wait_for_progress(self, blocks: int, what: str, timeout_s: float = 60.0) -> None:
        wanted = self.durable + blocks
        deadline = time.monotonic() + timeout_s
        while self.durable < wanted:
            self._check_alive()
            if self.failures or time.monotonic() > deadline:
                raise AssertionError(f"no {blocks} fsynced writes {what}: {self.failures}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._check_alive()
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=120)

    def stop_and_check(self) -> None:
        """Stop; nothing failed, and the file begins with every durable block."""
        self.stop()
        assert not self.failures, self.failures
        durable = self.durable
        self._progress.unlink(missing_ok=True)
        with open(self.path, "rb") as image:
            assert image.read(durable * self.BLOCK_BYTES) == b"".join(
                self.block(index) for index in range(durable))


class Mount:
    """A real `vmstore mount` process serving ``path``."""

    def __init__(self, cluster: Cluster, path: Path, host_label: str = "local0",
                 extra_arguments: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.path = path
        self.log = cluster.directory / "logs" / f"mount-{path.name}.log"
        path.mkdir(parents=True, exist_ok=True)
        result = vmstore_command("mount", str(path), "--log-file", str(self.log),
                                 "--host-label", host_label, *extra_arguments,
                                 config=cluster.config_path)
        assert result.returncode == 0, result.stderr
        self.pid = int(result.stdout.split("(pid ")[1].split(",")[0])

    def unmount(self) -> subprocess.CompletedProcess[str]:
        return vmstore_command("umount", str(self.path), config=self.cluster.config_path)

    def force_unmount(self) -> None:
        """Teardown: never leave a mount behind, even a wedged one."""
        if self.unmount().returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path / "cluster", 3)
    try:
        yield started
    finally:
        local_down(started.directory)
    # (mount logs are under logs/ too: a mount that crashed fails the test as well)
    assert_no_crash(started.logs())


@pytest.fixture
def healing_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster that rebuilds lost replicas 2 s after a chunkserver goes, not 30 s."""
    cluster = Cluster(tmp_path / "cluster", 3, master_flags=("--replication-delay", "2",
                                                     "--startup-grace", "2"),
                      chunkserver_flags=("--scrub-mib-per-s", "2000"))
    try:
        yield cluster
    finally:
        local_down(cluster.directory)


def assert_no_crash(logs: dict[str, str]) -> None:
    """A traceback in any daemon's log fails the test: a crash is never expected."""
    crashed = {name: text for name, text in logs.items() if "Traceback" in text}
    assert not crashed, "a daemon crashed:\n" + "\n".join(
        f"--- {name}\n{text[-3000:]}" for name, text in crashed.items())


def require_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing on this machine: FUSE mount tests cannot run")


@pytest.fixture
def mount(cluster: Cluster) -> Iterator[Mount]:
    """The cluster mounted at CLUSTER_DIR/mnt by a real mount process."""
    require_fuse()
    mounted = Mount(cluster, cluster.directory / "mnt")
    try:
        yield mounted
    finally:
        mounted.force_unmount()
