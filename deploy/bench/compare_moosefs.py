#!/usr/bin/env python3
"""Local disk, MooseFS goal 2 and vmstore goal 2 under the same `vmstore bench`, in one run.

Run from a checkout, as root, on a Debian 12 host with fio and qemu-img
(deploy/install-deps.sh):

    python3 deploy/bench/compare_moosefs.py [--size 1G] [--runtime 10] [--repeat 3]

One after the other, so that only the system measured runs, each on a
settled disk (``mount_bench.settle``: sync, writeback done, page cache
dropped; without it the system measured last paid for the others' leftovers):

1. local disk: a directory under --dir;
2. MooseFS 3.0.117 from Debian (moosefs-master, -chunkserver, -client;
   installed with apt-get when missing — only this script needs them, so
   deploy/install-deps.sh and CI do not): a master and three chunkservers,
   each with its own config, data directory and port, in a network
   namespace ``vmsbench0`` at 10.78.0.2 (its chunkservers refuse a master
   on 127.x), reached over a veth pair from 10.78.0.1; ``mfsmount`` on the
   host with its default options, goal 2 set with ``mfssetgoal -r`` (and
   trash time 0, so deleted bench files free their chunks at once). The
   daemons run with their shipped defaults (which include nice -19 and no
   fsync on a client's fsync);
3. vmstore: a local cluster (master, three chunkservers on loopback) and a
   real ``vmstore mount``, goal 2 set with ``vmstore goal`` (the same as
   deploy/bench/mount_bench.py);
4. unless --no-ceiling, the ceiling of any pyfuse3 mount on this machine: a
   trivial pass-through to local disk (deploy/bench/passthrough_fs.py, with
   vmstore's mount options, backing files opened without O_DIRECT; see
   deploy/bench/pyfuse3_ceiling.py). Where its column is below MooseFS's, no
   file system served through pyfuse3 can reach MooseFS on this machine,
   whatever it does behind the FUSE loop.

Each gets ``vmstore bench PATH --json`` as a subprocess; the script prints a
markdown table of every figure (mean ±stdev over --repeat rounds) with the
ratios vmstore / local disk, vmstore / MooseFS and pass-through / MooseFS. ↓ marks rows where lower
is better: there a ratio above 1 means vmstore is slower. Everything is torn
down on exit, on failure and on Ctrl-C (daemons killed, mounts unmounted,
the namespace deleted, --dir removed if the script made it), unless --keep.

Names and addresses (``vmsbench*``, 10.78.0.0/24) stay clear of the system
tests' ``vmslab*`` namespaces on 10.77.0.0/24.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mount_bench import add_bench_options, markdown_table, settle, vmstore_mount  # noqa: E402

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


def start_daemon(stack: ExitStack, name: str, command: list[str], log: Path) -> None:
    """A MooseFS daemon in the foreground (so we hold its pid), stopped when ``stack`` closes."""
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


def start_master(stack: ExitStack, directory: Path) -> None:
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
        "MATOCL_LISTEN_HOST": MASTER_ADDRESS})
    start_daemon(stack, "mfsmaster", ["ip", "netns", "exec", NETNS, "mfsmaster", "-f", "-c",
                                      str(config), "start"], data / "mfsmaster.log")


def start_chunkserver(stack: ExitStack, directory: Path, index: int) -> Path:
    data = directory / f"chunkserver{index}"
    (data / "hdd").mkdir(parents=True)
    hdd = data / "mfshdd.cfg"
    hdd.write_text(f"{data / 'hdd'}\n")
    config = write_config(data / "mfschunkserver.cfg", {
        "WORKING_USER": "root", "WORKING_GROUP": "root",
        "SYSLOG_IDENT": f"vmsbench-mfschunkserver{index}", "DATA_PATH": data,
        "HDD_CONF_FILENAME": hdd, "BIND_HOST": MASTER_ADDRESS, "MASTER_HOST": MASTER_ADDRESS,
        "CSSERV_LISTEN_HOST": MASTER_ADDRESS,
        "CSSERV_LISTEN_PORT": CHUNKSERVER_PORT_BASE + 10 * index})
    log = data / "mfschunkserver.log"
    start_daemon(stack, f"mfschunkserver{index}", ["ip", "netns", "exec", NETNS,
                                                   "mfschunkserver", "-f", "-c", str(config),
                                                   "start"], log)
    return log


def is_mounted(path: Path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def registered(log: Path) -> bool:
    return "connected to Master" in log.read_text(errors="replace")


@contextmanager
def moosefs_mount(directory: Path) -> Iterator[Path]:
    """MooseFS goal 2 on three chunkservers in ``vmsbench0``, mounted at ``directory``/mnt."""
    with ExitStack() as stack:
        stack.enter_context(namespace())
        start_master(stack, directory)
        logs = [start_chunkserver(stack, directory, index) for index in range(CHUNKSERVERS)]
        wait_for("chunkservers' registration", lambda: all(registered(log) for log in logs))
        mount_point = directory / "mnt"
        mount_point.mkdir()
        log = directory / "mfsmount.log"
        start_daemon(stack, "mfsmount", ["mfsmount", "-f", "-H", MASTER_ADDRESS,
                                         str(mount_point)], log)
        stack.callback(run, "umount", "-l", str(mount_point), check=False)
        wait_for("mfsmount", lambda: is_mounted(mount_point))
        run("mfssetgoal", "-r", str(GOAL), str(mount_point))
        # No trash: deleted bench files would otherwise keep their chunks for a day.
        run("mfssettrashtime", "-r", "0", str(mount_point))
        yield mount_point


def bench(label: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    say(f"letting the disk settle, then vmstore bench on {label} ({path})")
    settle()
    command = [sys.executable, "-m", "vmstore.cli.main", "bench", str(path), "--json",
               "--size", str(args.size), "--runtime", str(args.runtime),
               "--repeat", str(args.repeat)]
    if args.workloads:
        command += ["--workloads", args.workloads]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            output, _ = process.communicate()
        except KeyboardInterrupt:
            # Ctrl-C reached it too: let it stop fio and delete its files while
            # the file system under it is still up.
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    report: dict[str, Any] = json.loads(output)
    return report


def measure_all(directory: Path, args: argparse.Namespace,
                keep: ExitStack) -> dict[str, dict[str, Any]]:
    local = directory / "local"
    local.mkdir()
    reports = {"local disk": bench("local disk", local, args)}
    with ExitStack() as stack:
        mounted = stack.enter_context(moosefs_mount(directory / "moosefs"))
        reports["MooseFS"] = bench("MooseFS goal 2", mounted, args)
        if args.keep:
            keep.push(stack.pop_all())
    with ExitStack() as stack:
        mounted = stack.enter_context(vmstore_mount(directory / "vmstore"))
        reports["vmstore"] = bench("vmstore goal 2", mounted, args)
        if args.keep:
            keep.push(stack.pop_all())
    if not args.no_ceiling:
        from pyfuse3_ceiling import PASSTHROUGH, passthrough_mount  # it imports this module

        ceiling = directory / "pyfuse3"
        for path in (ceiling / "backing", ceiling / "mnt"):
            path.mkdir(parents=True)
        with passthrough_mount(ceiling / "backing", ceiling / "mnt",
                               ceiling / "passthrough_fs.log", direct_backing=False):
            reports[PASSTHROUGH] = bench(PASSTHROUGH, ceiling / "mnt", args)
    return reports


def print_report(reports: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(reports, indent=2))
        return
    tools = ", ".join(reports["vmstore"]["tools"].values())
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, kernel"
          f" {reports['vmstore']['kernel']}; {tools}; {args.size / 2**20:,.0f} MiB file;"
          f" timed jobs {args.runtime:g} s; mean ±stdev of {args.repeat} round(s);"
          " ↓ lower is better\n")
    ratios = [("vmstore", "local disk"), ("vmstore", "MooseFS")]
    ratios += [(name, "MooseFS") for name in reports if name.startswith("pass-through")]
    print(markdown_table(reports, tuple(ratios)))


def terminate(signal_number: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every teardown, as Ctrl-C does


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python3 deploy/bench/compare_moosefs.py --size 256M --runtime 3"
        " --repeat 1")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new one under"
                        " /var/tmp, removed after)")
    add_bench_options(parser, repeat=3)
    parser.add_argument("--keep", action="store_true", help="leave everything up and in place")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the pyfuse3"
                        " pass-through (the ceiling of any Python FUSE mount here)")
    parser.add_argument("--json", action="store_true", help="the reports as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: network namespace, FUSE mounts, apt-get")
    signal.signal(signal.SIGTERM, terminate)
    install_moosefs()
    directory = (args.dir or Path(tempfile.mkdtemp(prefix="vmstore-compare-",
                                                   dir="/var/tmp"))).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    keep = ExitStack()
    status = 0
    try:
        print_report(measure_all(directory, args, keep), args)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
        say(f"error: {error}")
        status = 1
    except KeyboardInterrupt:
        say("interrupted: tearing down")
        status = 130
    finally:
        if args.keep:
            say(f"--keep: left up under {directory}; tear down with: umount -l"
                f" {directory}/moosefs/mnt; kill $(cat {directory}/moosefs/*.pid"
                f" {directory}/moosefs/*/*.pid); ip netns delete {NETNS};"
                f" vmstore local down --dir {directory}/vmstore")
            sys.stdout.flush()
            os._exit(status)  # no interpreter shutdown: it would close the kept teardowns
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
