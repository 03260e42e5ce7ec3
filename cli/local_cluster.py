"""`vmstore local up|down`: a whole cluster on this machine, for trying it out and tests.

Each daemon is a real process on loopback with its own data directory under
DIR, its log in DIR/logs and its pid in DIR/run. ``up`` returns when every
daemon serves; ``down`` stops them (SIGTERM, then SIGKILL after a grace
period). The cluster's config, key file included, is DIR/vmstore.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from vmstore.cli.tls_command import create_ca, issue_host_certificate
from vmstore.dfs.constants import (
    LOCAL_CLUSTER_READY_TIMEOUT_S,
    LOCAL_CLUSTER_STOP_GRACE_S,
    LOCAL_ETCD_MEMBERS,
    LOCAL_ETCD_REQUEST_BYTES_MAX,
)
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.protocol.auth import generate_key_file

# Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
# default): an outgoing connection never takes one of these between our probe
# and the daemon's bind, nor while a daemon restarts on its old port.
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A port free right now on loopback (daemons keep theirs across restarts)."""
    for _attempt in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # another listener has it
            return port
    raise ConfigError(f"no free port in {_PORT_RANGE[0]}-{_PORT_RANGE[1]} on 127.0.0.1")


def spawn(directory: Path, name: str, arguments: list[str] | None = None,
          prefix: list[str] | None = None, environment: dict[str, str] | None = None,
          program: list[str] | None = None) -> Path:
    """Start one daemon detached (again, as saved if no ``arguments`` are given).

    ``prefix`` runs it through another command first, such as ``nsenter
    --net=...`` to start it inside a network namespace (a test's "host");
    ``environment`` adds to (or overrides) this process's environment.
    ``program``: another program than `vmstore` (etcd), which writes no ready file.
    """
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    (directory / "run").mkdir(parents=True, exist_ok=True)
    saved = directory / "run" / f"{name}.args"
    if arguments is None:
        arguments, prefix, environment, *rest = json.loads(saved.read_text())
        program = rest[0] if rest else None
    saved.write_text(json.dumps([arguments, prefix or [], environment or {}, program]))
    ready = directory / "run" / f"{name}.addr"
    ready.unlink(missing_ok=True)
    command = ([*program, *arguments] if program else
               [sys.executable, "-m", "vmstore.cli.main", *arguments, "--ready-file", str(ready)])
    with open(directory / "logs" / f"{name}.log", "ab") as log_file:
        process = subprocess.Popen(
            [*(prefix or []), *command],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(environment or {})})
    (directory / "run" / f"{name}.pid").write_text(f"{process.pid}\n")
    return ready


def forget_argument(directory: Path, name: str, argument: str) -> None:
    """Drop ``argument`` from the arguments a restart of daemon ``name`` uses."""
    saved = directory / "run" / f"{name}.args"
    arguments, *rest = json.loads(saved.read_text())
    saved.write_text(json.dumps([[a for a in arguments if a != argument], *rest]))


def wait_ready(ready: Path, name: str, directory: Path) -> str:
    deadline = time.monotonic() + LOCAL_CLUSTER_READY_TIMEOUT_S
    pid = int((directory / "run" / f"{name}.pid").read_text())
    while time.monotonic() < deadline:
        if ready.exists():
            return ready.read_text().strip()
        if not _alive(pid):
            log_tail = (directory / "logs" / f"{name}.log").read_text()[-2000:]
            raise ConfigError(f"{name} exited during start-up; its log ends:\n{log_tail}")
        time.sleep(0.05)
    raise ConfigError(f"{name} did not start within {LOCAL_CLUSTER_READY_TIMEOUT_S} s")


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def local_up(directory: Path, chunkservers: int, mountpoint: Path | None = None,
             master_flags: tuple[str, ...] = (), chunkserver_flags: tuple[str, ...] = (),
             tls: bool = False, masters: int = 1) -> str:
    """Start master, chunkservers and (if ``mountpoint``) the mount; the master's address
    (with ``masters`` > 1, an HA group's addresses, comma-separated).

    Every daemon reads DIR/vmstore.toml; with ``tls`` it names a CA and a
    certificate made in DIR/tls, and TLS is required on every connection. With
    ``masters`` > 1, a three-member etcd (etcd0..2) and masters master0..N-1.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if any((directory / "run").glob("*.pid")):
        raise ConfigError(f"a local cluster already runs in {directory}; "
                          f"run: vmstore local down --dir {directory}")
    key_file = directory / "cluster.key"
    if not key_file.exists():
        generate_key_file(key_file)
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(masters)]
    master = ",".join(addresses)
    config = directory / "vmstore.toml"
    config.write_text(f'[cluster]\nmaster = "{master}"\nkey_file = "{key_file}"\n\n'
                      f'[client]\nhost_label = "local0"\n' + (_tls_section(directory) if tls
                                                              else ""))
    environment = {"VMSTORE_CONFIG": str(config)}
    ha_flags: list[str] = []
    if masters > 1:
        ha_flags = ["--etcd", ",".join(start_etcd(directory, LOCAL_ETCD_MEMBERS))]
    for index, address in enumerate(addresses):
        name = "master" if masters == 1 else f"master{index}"
        # The first master makes the cluster; the others join it as standbys.
        first = ["--new-cluster"] if index == 0 else []
        ready = spawn(directory, name, ["master", "--data-dir", str(directory / name),
                                        "--listen", address, "--key-file", str(key_file),
                                        *ha_flags, *first, *master_flags],
                      environment=environment)
        wait_ready(ready, name, directory)
        # A restart (`spawn` of the saved arguments) must find its metadata, not make a
        # new cluster where it went missing.
        forget_argument(directory, name, "--new-cluster")
    if masters > 1:
        wait_for_leader(addresses)
    names = []
    for index in range(chunkservers):
        name = f"chunkserver{index}"
        spawn(directory, name, [
            "chunkserver", "--data-dir", str(directory / name),
            "--listen", f"127.0.0.1:{free_port()}",
            "--master", master, "--key-file", str(key_file), "--host-label", f"local{index}",
            *chunkserver_flags], environment=environment)
        names.append(name)
    for name in names:
        wait_ready(directory / "run" / f"{name}.addr", name, directory)
    if mountpoint is not None:
        mountpoint.mkdir(parents=True, exist_ok=True)
        ready = spawn(directory, "mount", [
            "mount", "--foreground", str(mountpoint), "--master", master,
            "--key-file", str(key_file), "--host-label", "local0"], environment=environment)
        wait_ready(ready, "mount", directory)
    return master


def start_etcd(directory: Path, members: int, host: str = "127.0.0.1") -> list[str]:
    """A new etcd cluster of ``members`` on ``host`` (etcd0..); its client URLs."""
    peers = [f"http://{host}:{free_port()}" for _ in range(members)]
    clients = [f"http://{host}:{free_port()}" for _ in range(members)]
    initial = ",".join(f"etcd{index}={peer}" for index, peer in enumerate(peers))
    token = f"vmstore-{random.getrandbits(64):016x}"
    for index, (peer, client) in enumerate(zip(peers, clients, strict=True)):
        spawn(directory, f"etcd{index}", [
            "--name", f"etcd{index}", "--data-dir", str(directory / f"etcd{index}"),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            "--max-request-bytes", str(LOCAL_ETCD_REQUEST_BYTES_MAX),
            # Old revisions of the journal's keys go; without compaction etcd keeps them all.
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m"],
            program=["etcd"])
    wait_for_etcd(clients)
    return clients


def wait_for_etcd(clients: list[str]) -> None:
    deadline = time.monotonic() + LOCAL_CLUSTER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(clients[0] + "/health", timeout=1.0) as answer:
                if json.loads(answer.read()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise ConfigError(f"etcd at {clients[0]} not healthy within {LOCAL_CLUSTER_READY_TIMEOUT_S} s")


def wait_for_leader(addresses: list[str], timeout_s: float = LOCAL_CLUSTER_READY_TIMEOUT_S) -> str:
    """The address of the master that leads (the only one that listens)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for address in addresses:
            host, port = address.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return address
            except OSError:
                continue
        time.sleep(0.1)
    raise ConfigError(f"no master of {', '.join(addresses)} leads within {timeout_s} s")


def _tls_section(directory: Path) -> str:
    """A CA and one certificate for 127.0.0.1 in DIR/tls (made once), as a [tls] section."""
    certificates = directory / "tls"
    if not (certificates / "ca.crt").exists():
        create_ca(certificates)
        issue_host_certificate(certificates, "local", ["127.0.0.1", "localhost"])
    return (f'\n[tls]\nmode = "required"\nca_file = "{certificates / "ca.crt"}"\n'
            f'cert_file = "{certificates / "local.crt"}"\n'
            f'key_file = "{certificates / "local.key"}"\n')


def local_down(directory: Path) -> int:
    """Stop every daemon of the local cluster; returns how many were running."""
    run = directory.resolve() / "run"
    mount_ready = run / "mount.addr"
    if mount_ready.exists():
        # Unmount first, so nothing writes to daemons that are going away; a
        # busy mount is detached lazily: `local down` means down.
        mountpoint = mount_ready.read_text().strip()
        unmounted = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True,
                                   timeout=LOCAL_CLUSTER_STOP_GRACE_S)
        if unmounted.returncode:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True,
                           timeout=LOCAL_CLUSTER_STOP_GRACE_S)
    pid_files = sorted(run.glob("*.pid"))
    pids = {path: int(path.read_text()) for path in pid_files}
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + LOCAL_CLUSTER_STOP_GRACE_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.05)
    for pid in pids.values():
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for path in pid_files:
        path.unlink()
        path.with_suffix(".addr").unlink(missing_ok=True)
        path.with_suffix(".args").unlink(missing_ok=True)
    return len(pids)


def run_local(args: argparse.Namespace) -> int:
    if args.action == "up":
        mountpoint = None if args.no_mount else (args.mount or args.dir / "mnt").absolute()
        master = local_up(args.dir, args.chunkservers, mountpoint, tls=args.tls,
                          masters=args.masters)
        print(f"vmstore local cluster up: master {master}, {args.chunkservers} chunkservers")
        if mountpoint is not None:
            print(f"  mounted at:    {mountpoint} (fuse.vmstore)")
        print(f"  data and logs: {args.dir.resolve()}")
        print(f"  use it:        export VMSTORE_CONFIG={args.dir.resolve() / 'vmstore.toml'}")
        return 0
    stopped = local_down(args.dir)
    print(f"vmstore local cluster in {args.dir.resolve()} stopped ({stopped} daemons)")
    return 0


def register(subparsers: Any) -> None:
    local = subparsers.add_parser(
        "local", help="a whole cluster on this machine",
        description="Start or stop a master, N chunkservers and a FUSE mount on this machine,"
        " data under DIR.",
        epilog="example: vmstore local up --dir /tmp/vms && "
               "VMSTORE_CONFIG=/tmp/vms/vmstore.toml vmstore status")
    local.add_argument("action", choices=["up", "down"])
    local.add_argument("--dir", required=True, type=Path, help="data, logs and config go here")
    local.add_argument("--chunkservers", type=int, default=3, help="how many (default 3)")
    local.add_argument("--mount", type=Path, help="mount point (default DIR/mnt)")
    local.add_argument("--no-mount", action="store_true", help="daemons only, no FUSE mount")
    local.add_argument("--masters", type=int, default=1, help="1: one master on SQLite (the"
                       " default); 2 or 3: an HA group, with a three-member etcd")
    local.add_argument("--tls", action="store_true", help="make a CA and a certificate in"
                       " DIR/tls and require TLS on every connection")
    local.set_defaults(handler=run_local)
