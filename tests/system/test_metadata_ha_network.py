"""Metadata HA across a cut link: hosts as network namespaces (issue 15).

Three hosts on one bridge; etcd (three members) in the root namespace on the
bridge's address; a master on h1 and one on h2, a chunkserver on each host, and
a mount on h1 and on h2. The leader's host is cut off (its link down, no reset):

* a new leader is elected on the other side, and h2's mount works through it;
* the old leader, still running and reachable by h1's mount on its side of the
  cut, acknowledges nothing (a create through h1's mount does not return while
  the cut lasts, and its name appears only once the cut is healed, through the
  new leader);
* when the link returns, the old leader rejoins as a standby, and nothing it
  did during the cut is in the metadata.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.network_lab import (
    BRIDGE,
    BRIDGE_ADDRESS,
    LINK_PREFIX,
    NAMESPACE_PREFIX,
    SUBNET,
    _ip,
    remove_leftovers,
    require_network_namespaces,
    wait_until,
)
from tests.system.test_metadata_ha import require_etcd
from vmstore.cli.local_cluster import (
    forget_argument,
    local_down,
    spawn,
    start_etcd,
    wait_ready,
)
from vmstore.dfs.constants import LOCAL_ETCD_MEMBERS
from vmstore.dfs.protocol.auth import generate_key_file

HOSTS = ["h1", "h2", "h3"]
MASTER_HOSTS = ["h1", "h2"]
MASTER_PORT = 9420
FAILOVER_TIMEOUT_S = 60.0


class HaLab:
    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mountpoints: dict[str, Path] = {}
        remove_leftovers()
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def address(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS.index(host) + 1}"

    def prefix(self, host: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{NAMESPACE_PREFIX}{host}"]

    def _start(self) -> None:
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for host in HOSTS:
            namespace = NAMESPACE_PREFIX + host
            _ip("netns", "add", namespace)
            _ip("link", "add", LINK_PREFIX + host, "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            _ip("link", "set", LINK_PREFIX + host, "master", BRIDGE, "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        key_file = self.directory / "cluster.key"
        generate_key_file(key_file)
        # On the bridge's address, in the root namespace: no host's cut takes etcd away
        # from the other hosts.
        etcd = ",".join(start_etcd(self.directory, LOCAL_ETCD_MEMBERS, BRIDGE_ADDRESS))
        self.masters = ",".join(f"{self.address(host)}:{MASTER_PORT}" for host in MASTER_HOSTS)
        config = (f'[cluster]\nmaster = "{self.masters}"\nkey_file = "{key_file}"\n')
        for host in HOSTS:
            (self.directory / f"{host}.toml").write_text(
                config + f'\n[client]\nhost_label = "{host}"\n')
        for index, host in enumerate(MASTER_HOSTS):
            name = f"master-{host}"
            first = ["--new-cluster"] if index == 0 else []
            ready = spawn(self.directory, name, [
                "master", "--data-dir", str(self.directory / name), "--listen",
                f"{self.address(host)}:{MASTER_PORT}", "--key-file", str(key_file),
                "--etcd", etcd, *first], self.prefix(host))
            wait_ready(ready, name, self.directory)
            forget_argument(self.directory, name, "--new-cluster")
            if index == 0:
                self.wait_for_leader(host)
        for host in HOSTS:
            name = f"chunkserver-{host}"
            spawn(self.directory, name, [
                "chunkserver", "--data-dir", str(self.directory / name),
                "--listen", f"{self.address(host)}:9422", "--master", self.masters,
                "--key-file", str(key_file), "--host-label", host], self.prefix(host))
        for host in HOSTS:
            name = f"chunkserver-{host}"
            wait_ready(self.directory / "run" / f"{name}.addr", name, self.directory)
        for host in MASTER_HOSTS:
            mountpoint = self.directory / f"mnt-{host}"
            mountpoint.mkdir()
            name = f"mount-{host}"
            ready = spawn(self.directory, name, [
                "mount", "--foreground", str(mountpoint), "--master", self.masters,
                "--key-file", str(key_file), "--host-label", host], self.prefix(host))
            wait_ready(ready, name, self.directory)
            self.mountpoints[host] = mountpoint

    def serving(self, host: str) -> bool:
        """Whether host's master listens (only a leader does), seen from that host."""
        probe = subprocess.run([*self.prefix(host), "bash", "-c",
                                f"exec 3<>/dev/tcp/{self.address(host)}/{MASTER_PORT}"],
                               capture_output=True, timeout=10)
        return probe.returncode == 0

    def wait_for_leader(self, host: str) -> None:
        wait_until(lambda: self.serving(host), FAILOVER_TIMEOUT_S, f"the master on {host}"
                   " to lead")

    def cut(self, host: str) -> None:
        _ip("link", "set", LINK_PREFIX + host, "down")

    def reconnect(self, host: str) -> None:
        _ip("link", "set", LINK_PREFIX + host, "up")

    def logs(self) -> dict[str, str]:
        return {path.stem: path.read_text(errors="replace")
                for path in (self.directory / "logs").glob("*.log")}

    def close(self) -> None:
        for mountpoint in self.mountpoints.values():
            if subprocess.run(["fusermount3", "-u", str(mountpoint)],
                              capture_output=True, timeout=10).returncode:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True,
                               timeout=10)
        local_down(self.directory)
        remove_leftovers()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[HaLab]:
    require_network_namespaces()
    require_etcd()
    started = HaLab(tmp_path / "lab")
    try:
        yield started
    finally:
        started.close()


def test_a_cut_off_leader_acknowledges_nothing_and_rejoins_as_a_standby(lab: HaLab) -> None:
    h1, h2 = lab.mountpoints["h1"], lab.mountpoints["h2"]
    (h1 / "before").write_bytes(b"x" * 10_000)
    lab.cut("h1")
    # h1's mount can reach only the old leader, which loses its etcd lease and
    # stops; its create must not return while the cut lasts.
    created = threading.Event()

    def create_on_the_cut_side() -> None:
        with open(h1 / "during-cut", "wb") as file:
            file.write(b"y" * 1000)
            os.fsync(file.fileno())
        created.set()

    threading.Thread(target=create_on_the_cut_side, daemon=True).start()
    lab.wait_for_leader("h2")
    # The other side works through the new leader.
    (h2 / "after").write_bytes(b"z" * 20_000)
    assert (h2 / "before").read_bytes() == b"x" * 10_000
    time.sleep(3.0)
    assert not created.is_set(), "the cut-off leader acknowledged a create"
    assert not lab.serving("h1"), "the cut-off master still serves"
    assert not (h2 / "during-cut").exists()
    lab.reconnect("h1")
    # Healed: h1's pending create goes through the new leader; the old one follows.
    wait_until(created.is_set, FAILOVER_TIMEOUT_S, "h1's create once the link is back")
    assert (h2 / "during-cut").read_bytes() == b"y" * 1000
    assert (h1 / "after").read_bytes() == b"z" * 20_000
    assert "no longer the leader" in lab.logs()["master-h1"]
    assert not lab.serving("h1"), "two leaders after the heal"
