"""Several libvirt "hosts" on one machine, each with its own vmstore mount.

Built on ``NetworkLab`` (a master, or an HA group with its etcd, in the root
namespace; one network namespace and chunkserver per host). Each host named in ``libvirt_hosts``
also gets:

* a holder process in the host's network namespace with its own mount and
  UTS namespace (hostname = host name), a fresh sysfs (as ``ip netns exec``
  mounts: no cgroup mounts, so libvirt runs guests without cgroups and the
  daemons never clash over them) and private bind mounts of per-host
  directories over /etc/libvirt (a copy of the real one, edited),
  /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt;
* its own ``vmstore mount`` at /var/lib/vmstore, visible only in that mount
  namespace (the session's mount point is "/var/lib/vmstore");
* its own ``libvirtd -d -l`` listening on TCP at the host's address without
  authentication, with a distinct host UUID, QEMU running as root, stdio
  logged to files and migrations sent to the host's address.

``close()`` stops guests, daemons, mounts and namespaces even after a failed
start, and ``NetworkLab.close()`` then removes the bridge.

Caveats: test use only (TCP without auth, QEMU as root). NetworkLab's fixed
bridge and subnet mean one lab per machine at a time. Mount points that do
not exist in the root file system (/var/lib/vmstore, /run/libvirt when no
libvirtd ever ran) are created as empty directories and removed again by
``close()``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.system import network_lab
from tests.system.network_lab import NetworkLab
from vmstore.cli.local_cluster import local_down, spawn, wait_ready

VMSTORE_MOUNTPOINT = Path("/var/lib/vmstore")
QEMU_BINARY = "/usr/bin/qemu-system-x86_64"
# Path inside a host: the per-host directory (under DIR/hosts/HOST/) bound over it.
PRIVATE_DIRECTORIES = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}
PIDFILE_IN_HOST = "/run/libvirt/libvirtd.pid"
SOCKET_PATH_MAX_BYTES = 107  # sockaddr_un.sun_path, less the terminating NUL
HOLDER_START_TIMEOUT_S = 30.0
LIBVIRTD_START_TIMEOUT_S = 120.0  # it probes QEMU's capabilities first: slow on a busy machine
STOP_TIMEOUT_S = 15.0
RUN_IN_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.1
# What the running lab started outside its directory ("holder PID START_TIME",
# "directory PATH"): a later lab removes it if this one was killed before close().
LEFTOVERS_RECORD = Path("/run/vmstore-test-libvirt-lab.record")

# The holder: $1 host name, $2 its state directory, $3 the file to create once set up.
# `umount -l /sys` then a fresh sysfs, as `ip netns exec` does.
HOLDER_SCRIPT = """set -eu
hostname "$1"
umount -l /sys
mount -t sysfs sysfs /sys
mount --bind "$2/etc" /etc/libvirt
mount --bind "$2/run" /run/libvirt
mount --bind "$2/lib" /var/lib/libvirt
mount --bind "$2/cache" /var/cache/libvirt
mount --bind "$2/log" /var/log/libvirt
touch "$3"
exec sleep infinity
"""


def require_libvirt() -> None:
    """Skip (printing why) unless QEMU, libvirtd and the libvirt Python module are here."""
    reason = None
    if shutil.which("qemu-system-x86_64") is None:
        reason = "qemu-system-x86_64 is missing (apt install qemu-system-x86)"
    elif shutil.which("libvirtd") is None:
        reason = "libvirtd is missing (apt install libvirt-daemon-system)"
    elif importlib.util.find_spec("libvirt") is None:
        reason = ("the libvirt Python module is missing (apt install libvirt-dev pkg-config;"
                  " pip install libvirt-python)")
    if reason is not None:
        print(f"skipping libvirt tests: {reason}")
        pytest.skip(reason)


class LibvirtLab:
    """A NetworkLab whose ``libvirt_hosts`` each run libvirtd over their own vmstore mount."""

    def __init__(self, directory: Path, hosts: list[str], libvirt_hosts: list[str],
                 master_flags: tuple[str, ...] = (), masters: int = 1) -> None:
        """``masters`` > 1: an HA group of that many with a three-member etcd (NetworkLab)."""
        assert set(libvirt_hosts) <= set(hosts), "libvirt hosts must be lab hosts"
        self.libvirt_hosts = libvirt_hosts
        self.holders: dict[str, subprocess.Popen[bytes]] = {}
        self._stack = ExitStack()
        try:
            remove_leftovers_of_killed_lab()
            self._stack.callback(LEFTOVERS_RECORD.unlink, missing_ok=True)
            # A NetworkLab that fails half-way up does not clean up after itself.
            self._stack.callback(network_lab.remove_leftovers)
            self._stack.callback(local_down, directory)
            self.network = NetworkLab(directory, hosts, master_flags, masters)
            self._stack.callback(self.network.close)
            self.directory = self.network.directory
            self._ensure_mountpoints()
            for host in libvirt_hosts:
                self._start_holder(host)
            for host in libvirt_hosts:
                self._start_mount(host)
            for host in libvirt_hosts:
                wait_ready(self.directory / "run" / f"mount-{host}.addr", f"mount-{host}",
                           self.directory)
            for host in libvirt_hosts:
                self._start_libvirtd(host)
            for host in libvirt_hosts:
                self._wait_libvirtd(host)
            self._probe_qemu()
        except BaseException:
            self._stack.close()
            raise

    # --- addresses and commands ---------------------------------------------------------

    def state(self, host: str) -> Path:
        """DIR/hosts/HOST: the directories bound over the host's libvirt paths."""
        return self.directory / "hosts" / host

    def address(self, host: str) -> str:
        return self.network.address(host)

    def uri(self, host: str) -> str:
        """For clients in the root namespace: the host's libvirtd over its unix socket."""
        socket = self.state(host) / "run" / "libvirt-sock"
        if len(os.fsencode(socket)) > SOCKET_PATH_MAX_BYTES:  # a long tmp_path
            socket = self.path_in(host, "/run/libvirt/libvirt-sock")
        return f"qemu+unix:///system?socket={socket}"

    def migration_uri(self, host: str) -> str:
        """How another host's libvirtd reaches this one (peer-to-peer migration)."""
        return f"qemu+tcp://{self.address(host)}/system"

    def path_in(self, host: str, path: str) -> Path:
        """``path`` as the host sees it (its mounts), reachable from the root namespace."""
        assert path.startswith("/"), path
        return Path(f"/proc/{self.holders[host].pid}/root{path}")

    def enter(self, host: str) -> list[str]:
        """A command prefix that runs in the host's network, mount and UTS namespaces."""
        return ["nsenter", f"--target={self.holders[host].pid}", "--net", "--mount", "--uts",
                "--"]

    def run_in(self, host: str, *command: str, check: bool = True,
               timeout_s: float = RUN_IN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the host; AssertionError with its stderr if it fails."""
        result = subprocess.run([*self.enter(host), *command], capture_output=True, text=True,
                                timeout=timeout_s, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"on {host}: {' '.join(command)} exited {result.returncode}:"
                                 f" {result.stderr.strip()}")
        return result

    def libvirtd_log(self, host: str) -> str:
        path = self.state(host) / "log" / "libvirtd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> dict[str, str]:
        return self.network.logs()

    def close(self) -> None:
        """Stop everything this lab started, in reverse order; raise the first failure."""
        self._stack.close()

    # --- starting -----------------------------------------------------------------------

    def _ensure_mountpoints(self) -> None:
        """Mount points need directories: create the missing ones; close() removes them."""
        for path in [*map(Path, PRIVATE_DIRECTORIES), VMSTORE_MOUNTPOINT]:
            if path.is_dir():
                continue
            path.mkdir(parents=True)
            _record(f"directory {path}")
            self._stack.callback(_remove_if_empty, path)

    def _start_holder(self, host: str) -> None:
        state = self.state(host)
        for name in PRIVATE_DIRECTORIES.values():
            if name != "etc":
                (state / name).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/libvirt", state / "etc", symlinks=True)
        self._configure_libvirt(host, state / "etc")
        ready = state / "holder.ready"
        with open(self.directory / "logs" / f"holder-{host}.log", "ab") as log:
            holder = subprocess.Popen(
                [*self.network.prefix(host), "unshare", "--mount", "--uts",
                 "--propagation", "private", "--", "sh", "-c", HOLDER_SCRIPT, "holder", host,
                 str(state), str(ready)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.holders[host] = holder
        self._stack.callback(self._stop_holder, host)
        _record(f"holder {holder.pid} {_start_time(holder.pid)}")
        deadline = time.monotonic() + HOLDER_START_TIMEOUT_S
        while not ready.exists():
            if holder.poll() is not None or time.monotonic() > deadline:
                log_text = (self.directory / "logs" / f"holder-{host}.log").read_text()
                raise AssertionError(f"the namespace holder of {host} did not start: {log_text}")
            time.sleep(POLL_INTERVAL_S)

    def _configure_libvirt(self, host: str, etc: Path) -> None:
        """Edit the host's copy of /etc/libvirt: settings from docs/notes on migration."""
        address = self.address(host)
        host_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"vmstore-test-lab/{host}")
        _set_options(etc / "libvirtd.conf", {
            "listen_tls": "0",
            "listen_tcp": "1",
            "listen_addr": f'"{address}"',
            "auth_tcp": '"none"',  # test only
            "auth_unix_rw": '"none"',
            "auth_unix_ro": '"none"',
            # No SMBIOS here: without it every host has the same id, and libvirt
            # refuses to "migrate guest to the same host".
            "host_uuid": f'"{host_uuid}"',
            "log_outputs": '"3:file:/var/log/libvirt/libvirtd.log"',
        })
        _set_options(etc / "qemu.conf", {
            "stdio_handler": '"file"',  # virtlogd's socket would be private to its host
            "migration_address": f'"{address}"',
            "migration_host": f'"{address}"',  # host names do not resolve here
            "user": '"root"',  # test only: console files and images without chown
            "group": '"root"',
            "remember_owner": "0",
        })
        # Nothing of the real host's: no networks (dnsmasq, bridges), no guests.
        for pattern in ("qemu/networks/autostart/*", "qemu/autostart/*", "qemu/*.xml"):
            for path in etc.glob(pattern):
                path.unlink()

    def _start_mount(self, host: str) -> None:
        name = f"mount-{host}"
        spawn(self.directory, name, [
            "mount", "--foreground", str(VMSTORE_MOUNTPOINT),
            "--master", self.network.master_address, "--key-file", str(self.network.key_file),
            "--host-label", host], self.enter(host))
        self._stack.callback(self._stop_mount, host)

    def _start_libvirtd(self, host: str) -> None:
        self._stack.callback(self._stop_libvirtd, host)
        log_path = self.directory / "logs" / f"libvirtd-{host}.log"
        with open(log_path, "ab") as log:  # not a pipe: the daemon might keep it open
            started = subprocess.run(
                [*self.enter(host), "libvirtd", "-d", "-l", "-p", PIDFILE_IN_HOST],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=LIBVIRTD_START_TIMEOUT_S)
        if started.returncode != 0:
            raise AssertionError(f"libvirtd on {host} exited {started.returncode}:"
                                 f" {log_path.read_text(errors='replace')[-2000:]}")

    def _wait_libvirtd(self, host: str) -> None:
        """Until the daemon answers (its drivers start after it forks)."""
        import libvirt

        deadline = time.monotonic() + LIBVIRTD_START_TIMEOUT_S
        while True:
            try:
                connection = libvirt.open(self.uri(host))
                try:
                    connection.getHostname()
                    return
                finally:
                    connection.close()
            except libvirt.libvirtError as error:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"libvirtd on {host} did not answer: {error}; its log ends:\n"
                        f"{self.libvirtd_log(host)[-2000:]}") from error
            time.sleep(POLL_INTERVAL_S * 5)

    def _probe_qemu(self) -> None:
        """Have every daemon probe QEMU now, all at once, rather than at its first guest.

        The probe takes seconds under TCG; left to the first define or incoming
        migration it would count in that operation's time.
        """
        probes = {host: subprocess.Popen(
            ["virsh", "-q", "-c", self.uri(host), "domcapabilities", "--virttype", "qemu",
             "--emulatorbin", QEMU_BINARY, "--arch", "x86_64", "--machine", "pc"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for host in self.libvirt_hosts}
        for host, probe in probes.items():
            _, error = probe.communicate(timeout=LIBVIRTD_START_TIMEOUT_S)
            if probe.returncode != 0:
                raise AssertionError(f"libvirtd on {host} could not probe {QEMU_BINARY}:"
                                     f" {error.decode(errors='replace').strip()}")

    # --- stopping -----------------------------------------------------------------------

    def _stop_libvirtd(self, host: str) -> None:
        try:
            self._destroy_guests(host)
        finally:
            pidfile = self.state(host) / "run" / "libvirtd.pid"
            if pidfile.exists():
                _terminate(int(pidfile.read_text()), STOP_TIMEOUT_S)
            # Whatever libvirtd left running (QEMU), but not the holder or the mount.
            keep = {self.holders[host].pid, _pid_of(self.directory, f"mount-{host}") or 0}
            for pid in self._processes_in(host) - keep:
                _terminate(pid, STOP_TIMEOUT_S)

    def _destroy_guests(self, host: str) -> None:
        import libvirt

        try:
            connection = libvirt.open(self.uri(host))
        except libvirt.libvirtError:
            return  # the daemon is gone: its guests are killed below
        try:
            for domain in connection.listAllDomains():
                persistent = domain.isPersistent()  # a transient one is gone once destroyed
                if domain.isActive():
                    domain.destroy()
                if persistent:
                    domain.undefine()
        finally:
            connection.close()

    def _stop_mount(self, host: str) -> None:
        """SIGTERM unmounts (inside the host); a wedged mount dies with its namespace."""
        name = f"mount-{host}"
        pid = _pid_of(self.directory, name)
        if pid is not None:
            _terminate(pid, STOP_TIMEOUT_S)
        for suffix in (".pid", ".addr", ".args"):
            (self.directory / "run" / f"{name}{suffix}").unlink(missing_ok=True)

    def _stop_holder(self, host: str) -> None:
        holder = self.holders[host]
        leftovers = self._processes_in(host) - {holder.pid}
        for pid in leftovers:
            _terminate(pid, STOP_TIMEOUT_S)
        holder.kill()
        holder.wait(timeout=STOP_TIMEOUT_S)

    def _processes_in(self, host: str) -> set[int]:
        holder = self.holders[host]
        return set() if holder.poll() is not None else _processes_with_uts_of(holder.pid)


def remove_leftovers_of_killed_lab() -> None:
    """What a lab killed before its close() left: holders (and all inside), directories.

    Its NetworkLab's daemons are NetworkLab's to clean up (see its
    ``remove_leftovers``).
    """
    if not LEFTOVERS_RECORD.exists():
        return
    directories = []
    for line in LEFTOVERS_RECORD.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "directory":
            directories.append(Path(rest))
            continue
        assert kind == "holder", line
        pid, start_time = (int(field) for field in rest.split())
        if _start_time(pid) != start_time:  # gone, or the pid is another process's now
            continue
        if os.readlink(f"/proc/{pid}/ns/uts") != os.readlink("/proc/self/ns/uts"):
            for inside in _processes_with_uts_of(pid) - {pid}:
                _terminate(inside, STOP_TIMEOUT_S)
        _terminate(pid, STOP_TIMEOUT_S)  # (killed before it left our namespaces: alone)
    for directory in directories:
        _remove_if_empty(directory)
    LEFTOVERS_RECORD.unlink()


def _record(line: str) -> None:
    with open(LEFTOVERS_RECORD, "a") as record:
        record.write(line + "\n")


def _remove_if_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _processes_with_uts_of(pid: int) -> set[int]:
    """Every process in ``pid``'s UTS namespace: a lab host's (only lab processes are in it)."""
    namespace = os.readlink(f"/proc/{pid}/ns/uts")
    assert namespace != os.readlink("/proc/self/ns/uts"), "not a lab host's namespace"
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/uts") == namespace:
                    found.add(int(entry))
            except OSError:  # exited meanwhile
                continue
    return found


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        return None


def _set_options(path: Path, options: dict[str, str]) -> None:
    """Comment out the file's own settings of these keys, then append ours."""
    lines = []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"# (test lab) {line}" if "=" in line and key in options else line)
    lines.append("# vmstore test lab")
    lines += [f"{key} = {value}" for key, value in options.items()]
    path.write_text("\n".join(lines) + "\n")


def _pid_of(directory: Path, name: str) -> int | None:
    path = directory / "run" / f"{name}.pid"
    return int(path.read_text()) if path.exists() else None


def _terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(POLL_INTERVAL_S / 2)
    raise AssertionError(f"process {pid} survived SIGKILL for {timeout_s} s")


def _alive(pid: int) -> bool:
    try:  # our own child (the mount): reap it
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
