"""MooseFS goal 2 for compare_moosefs.py: a master and three chunkservers in a namespace, mounted.

MooseFS 3.0.117 from Debian (moosefs-master, -chunkserver, -client;
installed with apt-get when missing: only the comparison needs them, so
deploy/install-deps.sh and CI do not): a master and three chunkservers,
each with its own config, data directory and port, in a network namespace
``vmsbench0`` at 10.78.0.2 (its chunkservers refuse a master on 127.x),
reached over a veth pair from 10.78.0.1; ``mfsmount`` on the host with its
default options, goal 2 set with ``mfssetgoal -r`` (and trash time 0, so
deleted bench files free their chunks at once). The daemons run with their
shipped defaults (no fsync on a client's fsync among them), but for their
priority: they renice themselves to -19 unless told otherwise, which on a
machine busy with other work hands them the CPU before any other process
(vmstore's daemons run at nice 0, as its systemd units start them), so
``moosefs_mount`` takes the nice level to give them (``None``: -19).
``moosefs_mount`` yields the mount point and the pids of every daemon
(``ip netns exec`` execs its command, so each pid is the daemon's own), for
CPU accounting. Everything is stopped in order when it exits, however.

Names and addresses (``vmsbench*``, 10.78.0.0/24) stay clear of the system
tests' ``vmslab*`` namespaces on 10.77.0.0/24.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PACKAGES = ("moosefs-master", "moosefs-chunkserver", "moosefs-client")
NETNS = "vmsbench0"
HOST_VETH, NETNS_VETH = "vmsbench-h", "vmsbench-n"
HOST_ADDRESS, MASTER_ADDRESS = "10.78.0.1", "10.78.0.2"
PREFIX_LENGTH = 24
CHUNKSERVER_PORT_BASE = 9422  # chunkserver i listens on 9422 + 10 i
CHUNKSERVERS = 3
GOAL = 2
EMPTY_METADATA = Path("/var/lib/mfs/metadata.mfs.empty")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.2


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)


def say(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr, flush=True)


def install_moosefs() -> None:
    missing = [p for p in PACKAGES if run("dpkg-query", "-W", "-f=${db:Status-Status}", p,
                                          check=False).stdout != "installed"]
    if missing:
        say(f"apt-get install {' '.join(missing)}")
        run("apt-get", "update")
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       check=True, capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@contextmanager
def namespace() -> Iterator[None]:
    """``vmsbench0`` with 10.78.0.2, linked to the host's 10.78.0.1 by a veth pair."""
    run("ip", "netns", "delete", NETNS, check=False)  # a leftover of a killed run
    run("ip", "link", "delete", HOST_VETH, check=False)
    try:
        run("ip", "netns", "add", NETNS)
        run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", NETNS_VETH)
        run("ip", "link", "set", NETNS_VETH, "netns", NETNS)
        run("ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX_LENGTH}", "dev", HOST_VETH)
        run("ip", "link", "set", HOST_VETH, "up")
        inside = ("ip", "netns", "exec", NETNS, "ip")
        run(*inside, "addr", "add", f"{MASTER_ADDRESS}/{PREFIX_LENGTH}", "dev", NETNS_VETH)
        run(*inside, "link", "set", NETNS_VETH, "up")
        run(*inside, "link", "set", "lo", "up")
        yield
    finally:
        run("ip", "netns", "delete", NETNS, check=False)  # takes the veth pair with it
        run("ip", "link", "delete", HOST_VETH, check=False)


def write_config(path: Path, settings: dict[str, object]) -> Path:
    path.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
    return path


def start_daemon(stack: ExitStack, name: str, command: list[str], log: Path) -> int:
    """A MooseFS daemon in the foreground (so we hold its pid), stopped when ``stack`` closes;
    its pid."""
    # A session of its own: Ctrl-C reaches the bench, while MooseFS stays up to
    # serve its last I/O and its clean-up; the teardown stops it in order.
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    stack.callback(stop_process, process, name)
    log.with_suffix(".pid").write_text(f"{process.pid}\n")  # for a --keep run's cleanup
    time.sleep(POLL_S)
    if process.poll() is not None:
        raise RuntimeError(f"{name} exited at once ({process.returncode}): "
                           f"{log.read_text(errors='replace')[-2000:]}")
    return process.pid


def stop_process(process: subprocess.Popen[bytes], name: str) -> None:
    if process.poll() is None:
        process.terminate()  # the master saves its metadata on SIGTERM
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: SIGKILL")
            process.kill()
            process.wait()


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"MooseFS: {what} not ready after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def niceness(nice_level: int | None) -> dict[str, object]:
    """The daemons' config setting for ``nice_level`` (none: their default, -19)."""
    return {} if nice_level is None else {"NICE_LEVEL": nice_level}


def start_master(stack: ExitStack, directory: Path, nice_level: int | None) -> int:
    data = directory / "master"
    data.mkdir(parents=True)
    shutil.copy(EMPTY_METADATA, data / "metadata.mfs")
    exports = data / "mfsexports.cfg"
    exports.write_text("*\t/\trw,alldirs,admin,maproot=0:0\n")
    (data / "mfstopology.cfg").write_text("")
    config = write_config(data / "mfsmaster.cfg", {
        "WORKING_USER": "root", "WORKING_GROUP": "root", "SYSLOG_IDENT": "vmsbench-mfsmaster",
        "DATA_PATH": data, "EXPORTS_FILENAME": exports,
        "TOPOLOGY_FILENAME": data / "mfstopology.cfg",
        "MATOML_LISTEN_HOST": MASTER_ADDRESS, "MATOCS_LISTEN_HOST": MASTER_ADDRESS,
        "MATOCL_LISTEN_HOST": MASTER_ADDRESS, **niceness(nice_level)})
    return start_daemon(stack, "mfsmaster", ["ip", "netns", "exec", NETNS, "mfsmaster", "-f",
                                             "-c", str(config), "start"], data / "mfsmaster.log")


def start_chunkserver(stack: ExitStack, directory: Path, index: int,
                      nice_level: int | None) -> tuple[Path, int]:
    """Chunkserver ``index``: its log (which says when it has registered) and its pid."""
    data = directory / f"chunkserver{index}"
    (data / "hdd").mkdir(parents=True)
    hdd = data / "mfshdd.cfg"
    hdd.write_text(f"{data / 'hdd'}\n")
    config = write_config(data / "mfschunkserver.cfg", {
        "WORKING_USER": "root", "WORKING_GROUP": "root",
        "SYSLOG_IDENT": f"vmsbench-mfschunkserver{index}", "DATA_PATH": data,
        "HDD_CONF_FILENAME": hdd, "BIND_HOST": MASTER_ADDRESS, "MASTER_HOST": MASTER_ADDRESS,
        "CSSERV_LISTEN_HOST": MASTER_ADDRESS,
        "CSSERV_LISTEN_PORT": CHUNKSERVER_PORT_BASE + 10 * index, **niceness(nice_level)})
    log = data / "mfschunkserver.log"
    pid = start_daemon(stack, f"mfschunkserver{index}", ["ip", "netns", "exec", NETNS,
                                                         "mfschunkserver", "-f", "-c",
                                                         str(config), "start"], log)
    return log, pid


def is_mounted(path: Path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def registered(log: Path) -> bool:
    return "connected to Master" in log.read_text(errors="replace")


@contextmanager
def moosefs_mount(directory: Path,
                  nice_level: int | None = None) -> Iterator[tuple[Path, tuple[int, ...]]]:
    """MooseFS goal 2 on three chunkservers in ``vmsbench0``, mounted at ``directory``/mnt:
    the mount point and the pids of mfsmaster, each mfschunkserver and mfsmount, each
    daemon at ``nice_level`` (``None``: MooseFS's default, -19)."""
    with ExitStack() as stack:
        stack.enter_context(namespace())
        pids = [start_master(stack, directory, nice_level)]
        started = [start_chunkserver(stack, directory, index, nice_level)
                   for index in range(CHUNKSERVERS)]
        pids += [pid for _, pid in started]
        wait_for("chunkservers' registration",
                 lambda: all(registered(log) for log, _ in started))
        mount_point = directory / "mnt"
        mount_point.mkdir()
        log = directory / "mfsmount.log"
        nice = [] if nice_level is None else ["-o", f"mfsnice={nice_level}"]
        pids.append(start_daemon(stack, "mfsmount", ["mfsmount", "-f", "-H", MASTER_ADDRESS,
                                                     *nice, str(mount_point)], log))
        stack.callback(run, "umount", "-l", str(mount_point), check=False)
        wait_for("mfsmount", lambda: is_mounted(mount_point))
        run("mfssetgoal", "-r", str(GOAL), str(mount_point))
        # No trash: deleted bench files would otherwise keep their chunks for a day.
        run("mfssettrashtime", "-r", "0", str(mount_point))
        yield mount_point, tuple(pids)
