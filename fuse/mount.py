"""Mount a vmstore cluster with pyfuse3 and serve it until unmounted or signalled.

Options: ``default_permissions`` (the kernel checks permissions against the
attributes we return), ``allow_other`` (libvirt runs QEMU as another user),
``fsname=vmstore`` and ``subtype=vmstore`` (so /proc/mounts says
``fuse.vmstore``, which tools and the migration preflight look for). The
daemon runs with umask 0: the kernel has already applied the caller's.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.constants import FUSE_TASKS_MAX, READ_AHEAD_KIB
from vmstore.dfs.errors import DfsError
from vmstore.fuse.operations import VmstoreOperations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountSettings:
    mountpoint: Path
    master_host: str
    master_port: int
    key: bytes
    host_label: str
    read_only: bool = False
    writeback_cache: bool = False  # see VmstoreOperations: breaks coherence across hosts
    # Read replicas on this host straight from their files (dfs.client.local_replicas).
    short_circuit_reads: bool = True
    # On SIGHUP (systemctl reload): re-read what may change live (TLS); new
    # connections use it, open ones go on until they are remade.
    reload: Callable[[], None] | None = None
    other_masters: tuple[tuple[str, int], ...] = ()  # the rest of an HA group's masters


def mount_options(settings: MountSettings) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {"allow_other", "fsname=vmstore", "subtype=vmstore", "default_permissions"}
    if settings.read_only:
        options.add("ro")
    return options


def mount_device(mountpoint: Path) -> str | None:
    """The "major:minor" of the mount at ``mountpoint``, from /proc/self/mountinfo.

    Never stat the mount point from the mount's own process: the kernel
    would ask this very process, which is busy asking the kernel.
    """
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            separator = fields.index("-")
            if fields[4] == str(mountpoint) and fields[separator + 1] == "fuse.vmstore":
                return fields[2]
    return None


async def raise_readahead(mountpoint: Path) -> None:
    """Bigger readahead for the mount's bdi; best effort (needs root and sysfs).

    The kernel sets the bdi's readahead when it processes our INIT reply,
    so this waits until the mount answers and then sets ours, a few times.
    """
    for _attempt in range(20):
        await trio.sleep(0.1)
        device = mount_device(mountpoint)
        if device is None:
            continue
        path = Path(f"/sys/class/bdi/{device}/read_ahead_kb")
        try:
            if path.read_text().strip() == str(READ_AHEAD_KIB):
                return
            path.write_text(f"{READ_AHEAD_KIB}\n")
        except OSError as error:
            log.info("could not raise readahead at %s: %s", path, error.strerror)
            return
    log.info("readahead of %s left as the kernel set it", mountpoint)


@asynccontextmanager
async def open_operations(settings: MountSettings) -> AsyncIterator[VmstoreOperations]:
    """The mount's handlers over a connected client, for the block's duration.

    Everything a mount is but the kernel's side: ``run_mount`` hands these to
    pyfuse3, and tests call them directly (tests/fuse).
    """
    identity = ClientIdentity(host_label=settings.host_label,
                              mount_point=str(settings.mountpoint))
    async with open_client(settings.master_host, settings.master_port, settings.key,
                           identity, short_circuit_reads=settings.short_circuit_reads,
                           other_masters=settings.other_masters,
                           invalidations=True) as client:
        yield VmstoreOperations(client, settings.writeback_cache)


async def run_mount(settings: MountSettings, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Mount, serve until unmounted (or SIGTERM/SIGINT), then clean up."""
    os.umask(0)
    async with open_operations(settings) as operations:
        pyfuse3.init(operations, str(settings.mountpoint), mount_options(settings))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_terminate_on_signal)
                if settings.reload is not None:
                    nursery.start_soon(_reload_on_signal, settings.reload)
                nursery.start_soon(raise_readahead, settings.mountpoint)
                log.info("mounted %s:%d at %s", settings.master_host, settings.master_port,
                         settings.mountpoint)
                task_status.started()
                await pyfuse3.main(max_tasks=FUSE_TASKS_MAX)
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", settings.mountpoint)


async def _reload_on_signal(reload: Callable[[], None]) -> None:
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            try:
                reload()
                log.info("SIGHUP: configuration reloaded")
            except DfsError as error:
                log.error("SIGHUP: configuration not reloaded, the old one stays: %s",
                          error.message)


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signal_number in signals:
            log.info("received %s; unmounting", signal.Signals(signal_number).name)
            pyfuse3.terminate()
            return
