"""Several "hosts" on one machine: network namespaces on one bridge.

Each host is a network namespace with one veth link to a bridge in the root
namespace; the master listens on the bridge's address in the root
namespace. A host runs its own chunkserver and its own `vmstore mount`
(started with ``nsenter --net``, so the FUSE mount itself is visible in the
root mount namespace at a path of its own). ``cut`` takes a host's link
down, which cuts it off from the master and every other host at once.

With ``masters=2`` (or 3) the master is an HA group instead (issue 15): a
three-member etcd and the masters, all in the root namespace on the bridge's
address (no host's cut takes them away from the others); every host's config,
chunkserver and mount list every master.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vmstore.cli.local_cluster import (
    forget_argument,
    free_port,
    local_down,
    spawn,
    start_etcd,
    wait_for_leader,
    wait_ready,
)
from vmstore.dfs.constants import LOCAL_ETCD_MEMBERS
from vmstore.dfs.protocol.auth import generate_key_file, load_key

SUBNET = "10.77.0"
BRIDGE = "vmslab0"
BRIDGE_ADDRESS = f"{SUBNET}.254"
NAMESPACE_PREFIX = "vmslab-"
LINK_PREFIX = "vl-"  # a host's veth end in the root namespace
UNMOUNT_TIMEOUT_S = 10.0


def require_network_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root: multi-host tests cannot run")
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        pytest.skip("iproute2 or nsenter is missing: multi-host tests cannot run")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing on this machine: FUSE mount tests cannot run")


def _ip(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(arguments)}: {result.stderr.strip()}")
    return result


def remove_leftovers() -> None:
    """A lab a killed test run left behind: its processes, namespaces and links."""
    for line in _ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NAMESPACE_PREFIX):
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "delete", name, check=False)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        link = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if link.startswith(LINK_PREFIX):
            _ip("link", "delete", link, check=False)
    _ip("link", "delete", BRIDGE, check=False)


class NetworkLab:
    """A master in the root namespace and ``hosts`` namespaces, each with a chunkserver."""

    def __init__(self, directory: Path, hosts: list[str],
                 master_flags: tuple[str, ...] = (), masters: int = 1) -> None:
        self.directory = directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hosts = hosts
        self.mountpoints: dict[str, Path] = {}
        # "master", or an HA group's "master0", "master1", ... (the first made the cluster)
        self.master_names = ["master"] if masters == 1 else [f"master{i}" for i in range(masters)]
        remove_leftovers()
        try:
            self._start(master_flags)
        except BaseException:
            self.close()
            raise

    def _start(self, master_flags: tuple[str, ...]) -> None:
        hosts = self.hosts
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for number, host in enumerate(hosts, start=1):
            namespace = NAMESPACE_PREFIX + host
            _ip("netns", "add", namespace)
            _ip("link", "add", self._link(host), "type", "veth", "peer", "name", "eth0",
                "netns", namespace)
            _ip("link", "set", self._link(host), "master", BRIDGE, "up")
            _ip("-n", namespace, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            assert number < 254
        self.key_file = self.directory / "cluster.key"
        generate_key_file(self.key_file)
        self.key = load_key(self.key_file)
        self.master_address = self._start_masters(master_flags)
        for host in hosts:
            self._write_config(host)
            name = f"chunkserver-{host}"
            spawn(self.directory, name, [
                "chunkserver", "--data-dir", str(self.directory / name),
                "--listen", f"{self.address(host)}:9422", "--master", self.master_address,
                "--key-file", str(self.key_file), "--host-label", host], self.prefix(host))
        for host in hosts:
            name = f"chunkserver-{host}"
            wait_ready(self.directory / "run" / f"{name}.addr", name, self.directory)

    def _start_masters(self, master_flags: tuple[str, ...]) -> str:
        """The master (or the HA group, once one of it leads); its address (the list)."""
        ha_flags: list[str] = []
        if len(self.master_names) > 1:
            # On the bridge's address: no host's cut takes etcd away from the other hosts.
            ha_flags = ["--etcd", ",".join(start_etcd(self.directory, LOCAL_ETCD_MEMBERS,
                                                      BRIDGE_ADDRESS))]
        addresses = []
        for index, name in enumerate(self.master_names):
            first = ["--new-cluster"] if index == 0 else []  # the others join as standbys
            ready = spawn(self.directory, name, [
                "master", "--data-dir", str(self.directory / name),
                "--listen", f"{BRIDGE_ADDRESS}:{free_port()}", "--key-file",
                str(self.key_file), *ha_flags, *first, *master_flags])
            addresses.append(wait_ready(ready, name, self.directory))
            forget_argument(self.directory, name, "--new-cluster")  # restarts find metadata
        if ha_flags:
            wait_for_leader(addresses)
        return ",".join(addresses)

    def leader(self) -> str:
        """The name of the master that leads (an HA group's only listening one)."""
        addresses = self.master_address.split(",")
        return self.master_names[addresses.index(wait_for_leader(addresses))]

    def kill(self, name: str) -> None:
        """kill -9 one of the lab's root-namespace daemons (a master) and reap it."""
        pid = int((self.directory / "run" / f"{name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)  # spawned by this process: its child

    @staticmethod
    def _link(host: str) -> str:
        return f"{LINK_PREFIX}{host}"[:15]

    def address(self, host: str) -> str:
        return f"{SUBNET}.{self.hosts.index(host) + 1}"

    def prefix(self, host: str) -> list[str]:
        """Run a command with this host's network (the mount namespace stays shared)."""
        return ["nsenter", f"--net=/run/netns/{NAMESPACE_PREFIX}{host}"]

    def address_of_master(self) -> tuple[str, int]:
        assert "," not in self.master_address, "an HA group has no one master address"
        host, _, port = self.master_address.rpartition(":")
        return host, int(port)

    def config(self, host: str) -> Path:
        return self.directory / f"{host}.toml"

    def _write_config(self, host: str) -> None:
        self.config(host).write_text(
            f'[cluster]\nmaster = "{self.master_address}"\nkey_file = "{self.key_file}"\n\n'
            f'[client]\nhost_label = "{host}"\n')

    def mount(self, host: str) -> Path:
        """This host's own `vmstore mount`, at DIR/mnt-HOST; returns the mountpoint."""
        mountpoint = self.directory / f"mnt-{host}"
        mountpoint.mkdir(exist_ok=True)
        name = f"mount-{host}"
        ready = spawn(self.directory, name, [
            "mount", "--foreground", str(mountpoint), "--master", self.master_address,
            "--key-file", str(self.key_file), "--host-label", host], self.prefix(host))
        wait_ready(ready, name, self.directory)
        self.mountpoints[host] = mountpoint
        return mountpoint

    def cut(self, host: str) -> None:
        _ip("link", "set", self._link(host), "down")

    def reconnect(self, host: str) -> None:
        _ip("link", "set", self._link(host), "up")

    def logs(self) -> dict[str, str]:
        return {path.stem: path.read_text(errors="replace")
                for path in (self.directory / "logs").glob("*.log")}

    def close(self) -> None:
        for mountpoint in self.mountpoints.values():
            unmounted = subprocess.run(["fusermount3", "-u", str(mountpoint)],
                                       capture_output=True, timeout=UNMOUNT_TIMEOUT_S)
            if unmounted.returncode:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True,
                               timeout=UNMOUNT_TIMEOUT_S)
        local_down(self.directory)
        remove_leftovers()


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
