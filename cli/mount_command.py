"""`vmstore mount` / `vmstore umount`: the FUSE mount, in the background by default."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from vmstore.cli.config import add_master_argument, load_config, load_tls_settings
from vmstore.cli.daemons import add_metrics_argument, serve_metrics
from vmstore.cli.log_setup import add_logging_arguments, logging_flags, setup_logging_from
from vmstore.dfs.constants import MOUNT_READY_TIMEOUT_S, UNMOUNT_TIMEOUT_S
from vmstore.dfs.errors import Busy, ConfigError, DfsError
from vmstore.dfs.protocol import tls
from vmstore.dfs.protocol.auth import use_key_file

FS_TYPE = "fuse.vmstore"


def absolute(path: str) -> Path:
    """Absolute without touching the filesystem: a wedged mount must not hang us."""
    return Path(os.path.abspath(path))


def is_mounted(mountpoint: Path) -> bool:
    target = str(mountpoint)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[1] == target and fields[2] == FS_TYPE:
                return True
    return False


def mount_in_foreground(args: argparse.Namespace) -> int:
    from vmstore.fuse.mount import MountSettings, run_mount  # pyfuse3 only where needed

    config = load_config(master=args.master, key_file=args.key_file)
    setup_logging_from(args, config.log_level, config.log_format)
    serve_metrics(args.metrics)
    settings = MountSettings(mountpoint=absolute(args.mountpoint),
                             master_host=config.master_host, master_port=config.master_port,
                             other_masters=config.other_masters,
                             key=use_key_file(config.key_file),
                             host_label=args.host_label or config.host_label,
                             read_only=args.read_only,
                             writeback_cache=args.writeback_cache,
                             short_circuit_reads=(config.short_circuit_reads
                                                  and not args.no_short_circuit),
                             reload=lambda: tls.configure(load_tls_settings()))
    async def mount_and_report() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_mount, settings)
            if args.ready_file:
                Path(args.ready_file).write_text(f"{settings.mountpoint}\n")

    trio.run(mount_and_report)
    return 0


def mount_in_background(args: argparse.Namespace) -> int:
    """Start the mount as its own process; return once the kernel shows it."""
    mountpoint = absolute(args.mountpoint)
    if not mountpoint.is_dir():
        raise ConfigError(f"mount point {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise Busy(f"{mountpoint} is already a vmstore mount")
    load_config(master=args.master, key_file=args.key_file)  # fail here, not in the child
    command = [sys.executable, "-m", "vmstore.cli.main", "mount", "--foreground",
               *logging_flags(args), str(mountpoint)]
    for flag, value in (("--master", args.master), ("--key-file", args.key_file),
                        ("--host-label", args.host_label)):
        if value:
            command += [flag, value]
    if args.metrics:
        command += ["--metrics", args.metrics]
    if args.read_only:
        command.append("--read-only")
    if args.writeback_cache:
        command.append("--writeback-cache")
    if args.no_short_circuit:
        command.append("--no-short-circuit")
    log_path = Path(args.log_file or f"/var/log/vmstore-mount-{mountpoint.name or 'root'}.log")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + MOUNT_READY_TIMEOUT_S
    while not is_mounted(mountpoint):
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-1500:]
            raise ConfigError(f"the mount process exited; {log_path} ends:\n{tail}")
        if time.monotonic() > deadline:
            process.terminate()
            raise ConfigError(f"{mountpoint} was not mounted within {MOUNT_READY_TIMEOUT_S} s")
        time.sleep(0.05)
    print(f"vmstore mounted at {mountpoint} (pid {process.pid}, log {log_path})")
    return 0


IGNORED_MOUNT_OPTIONS = {"defaults", "rw", "_netdev", "nofail", "auto", "noauto", "user",
                         "users", "nouser", "exec", "noexec", "suid", "nosuid", "dev", "nodev"}


def apply_mount_options(args: argparse.Namespace) -> None:
    """Fold `-o a,b=c` (from mount(8) and fstab) and the source into the flags."""
    if args.source and args.source != "vmstore" and not args.master:
        args.master = args.source  # `mount -t fuse.vmstore HOST:PORT /mnt`
    for option in filter(None, (args.options or "").split(",")):
        name, _, value = option.partition("=")
        if name == "ro":
            args.read_only = True
        elif name == "no_short_circuit":
            args.no_short_circuit = True
        elif name == "config":
            os.environ["VMSTORE_CONFIG"] = value
        elif name in ("master", "key_file", "host_label", "metrics") and value:
            setattr(args, name, value)
        elif name in IGNORED_MOUNT_OPTIONS or name.startswith("x-"):
            continue
        else:
            raise ConfigError(f"unknown mount option {option!r}")


def run_mount_command(args: argparse.Namespace) -> int:
    apply_mount_options(args)
    return mount_in_foreground(args) if args.foreground else mount_in_background(args)


def unmount(mountpoint: Path) -> None:
    """Unmount; a busy mount is an error that says so and leaves it mounted."""
    if not is_mounted(mountpoint):
        raise ConfigError(f"{mountpoint} is not a vmstore mount")
    result = subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True,
                            text=True, timeout=UNMOUNT_TIMEOUT_S)
    if result.returncode != 0:
        if "busy" in result.stderr.lower():
            raise Busy(f"{mountpoint} is busy: files are open on it"
                       f" (see: fuser -vm {mountpoint}); close them and retry")
        raise DfsError(f"unmounting {mountpoint} failed: {result.stderr.strip()}")
    deadline = time.monotonic() + MOUNT_READY_TIMEOUT_S
    while is_mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)


def run_umount_command(args: argparse.Namespace) -> int:
    unmount(absolute(args.mountpoint))
    print(f"unmounted {absolute(args.mountpoint)}")
    return 0


def register(subparsers: Any) -> None:
    mount = subparsers.add_parser(
        "mount", help="mount the cluster (FUSE)",
        description="Mount the cluster at MOUNTPOINT; it shows as fuse.vmstore in /proc/mounts."
        " Runs in the background unless --foreground (for systemd).",
        epilog="example: vmstore mount /var/lib/vmstore")
    mount.add_argument("mountpoint")
    add_master_argument(mount)
    mount.add_argument("--key-file", dest="key_file",
                       help="cluster key file (default: from the config file)")
    mount.add_argument("--host-label", dest="host_label",
                       help="this host's failure domain (default: hostname)")
    mount.add_argument("--source", help="mount(8)'s SOURCE: 'vmstore' or HOST:PORT")
    mount.add_argument("--options", "-o", help="mount(8) options: config=F, master=A,"
                       " key_file=F, host_label=L, ro, no_short_circuit")
    mount.add_argument("--foreground", action="store_true", help="stay in the foreground")
    add_metrics_argument(mount)
    mount.add_argument("--read-only", action="store_true", help="mount read-only")
    mount.add_argument("--writeback-cache", action="store_true",
                       help="kernel writeback cache: faster buffered writes, but other"
                       " hosts' size changes stay hidden (single-host use only)")
    mount.add_argument("--no-short-circuit", dest="no_short_circuit", action="store_true",
                       help="read replicas on this host over TCP like remote ones, not"
                       " from their files (default: [mount] short_circuit_reads, true)")
    mount.add_argument("--log-file", help="background mode: log here"
                       " (default /var/log/vmstore-mount-NAME.log)")
    add_logging_arguments(mount)
    mount.add_argument("--ready-file", help="foreground mode: write the mount point here"
                       " once mounted (for scripts)")
    mount.set_defaults(handler=run_mount_command)
    umount = subparsers.add_parser("umount", help="unmount a vmstore mount",
                                   epilog="example: vmstore umount /var/lib/vmstore")
    umount.add_argument("mountpoint")
    umount.set_defaults(handler=run_umount_command)
