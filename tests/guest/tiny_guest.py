"""A tiny bootable test guest that writes checked records to its disk, and its checker.

Promises:

* ``build_guest()`` returns a Debian kernel and an initramfs (gzip'd cpio
  "newc", written by this module in Python: no `cpio` tool needed) that boots
  under TCG in seconds. The initramfs holds busybox-static, the virtio block
  modules with their dependencies from ``modules.dep``, an ``/init`` script and
  ``disk_writer`` (``disk_writer.c`` here, built with ``gcc -static -O2``).
  The files live in a cache directory (env ``VMSTORE_TEST_GUEST_CACHE``,
  default ``/var/cache/vmstore-tests/guest``) and are rebuilt only when
  missing or when an input changed (kernel package, busybox, the C source,
  the init script, this builder's version).
* ``domain_xml(...)`` is a libvirt domain for it: TCG (``type='qemu'``,
  CPU ``qemu64``), direct kernel boot, one raw virtio disk with
  ``cache='none'`` and ``<seclabel model='dac' relabel='no'/>``, the serial
  console appended to a file, no network, no graphics.
* ``check_records(read, console_text)`` proves that no acknowledged write was
  lost: every ``ACK n`` on the console is on disk, records 0..max on disk are
  gap-free and every record is valid (magic, number, CRC-32). See
  ``disk_writer.c`` for the record layout.

Caveats: the first build downloads the kernel package (~70 MB) from the
Debian archive with ``apt-get download``; ``apt-get update`` (root) runs only
if that fails for lack of lists. Tools used: apt-get, dpkg, depmod (kmod),
gcc with static glibc, and zstd only for zstd-compressed modules (Debian 12's
are uncompressed; xz and gzip are decompressed in Python). Virtio drivers the
kernel has built in are simply not loaded. The writer writes no record twice,
so the disk must outlast the run (64 MiB holds 16384 records; the guest
writes ~40-150 a second).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

CACHE_ENV = "VMSTORE_TEST_GUEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/vmstore-tests/guest")
BUILDER_VERSION = 1  # bump when the initramfs layout changes in a way the inputs do not show
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
WRITER_SOURCE = Path(__file__).with_name("disk_writer.c")
VIRTIO_MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                  "virtio_pci", "virtio_blk")
BUSYBOX_APPLETS = ("sh", "mount", "insmod", "sleep", "cat", "echo", "ls", "dmesg")
APT_TIMEOUT_S = 600
TOOL_TIMEOUT_S = 300

RECORD_BYTES = 4096
RECORD_MAGIC = b"VMSTREC1"
RECORD_HEADER = struct.Struct("<8sQQ")  # magic, record number, writer's monotonic ns
RECORD_CRC = struct.Struct("<I")  # CRC-32 of the first RECORD_BYTES - 4 bytes, at the end
CRC_OFFSET = RECORD_BYTES - RECORD_CRC.size
ACK_LINE = re.compile(rb"^ACK (\d+)\r?$", re.MULTILINE)
ZERO_RECORD = bytes(RECORD_BYTES)
READ_BATCH_RECORDS = 256  # 1 MiB per read while scanning a disk

INIT_SCRIPT = """#!/bin/sh
# PID 1 of the tiny test guest: load the virtio block driver, run the writer.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    insmod "/lib/modules/$module.ko" || echo "INSMOD_FAILED $module"
done < /lib/modules/load-order
echo "GUEST_UP"
/bin/disk_writer
echo "WRITER_EXITED $?"
while true; do sleep 3600; done
"""


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class RecordCheck:
    highest_ack: int  # -1: no ACK on the console
    highest_record: int  # -1: no record on disk
    acks: int  # ACK lines seen


# --- building -------------------------------------------------------------------------------

def cache_directory() -> Path:
    return Path(os.environ.get(CACHE_ENV, str(DEFAULT_CACHE)))


def build_guest() -> GuestFiles:
    """The guest's kernel and initramfs, built into the cache unless already there."""
    cache = cache_directory()
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".lock"):
        kernel_dir = _kernel(cache)
        inputs = {
            "builder": BUILDER_VERSION,
            "kernel": kernel_dir.name,
            "busybox_sha256": _sha256(BUSYBOX.read_bytes()),
            "writer_sha256": _sha256(WRITER_SOURCE.read_bytes()),
            "init_sha256": _sha256(INIT_SCRIPT.encode()),
            "modules": list(VIRTIO_MODULES),
        }
        initrd = cache / "initrd.gz"
        recorded = cache / "initrd.inputs.json"
        if not initrd.exists() or not recorded.exists() or json.loads(
                recorded.read_text()) != inputs:
            _atomic_write(initrd, _initramfs(kernel_dir))
            _atomic_write(recorded, json.dumps(inputs, indent=1).encode())
        return GuestFiles(kernel=kernel_dir / "vmlinuz", initrd=initrd)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs building at once
        yield


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _run(command: list[str], cwd: Path | None = None,
         timeout_s: float = TOOL_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): "
                           f"{result.stderr.strip()[-2000:]}")
    return result


def kernel_package() -> str | None:
    """The versioned kernel package linux-image-amd64 depends on, as apt knows it."""
    result = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE], capture_output=True,
                            text=True, timeout=TOOL_TIMEOUT_S)
    found = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", result.stdout)
    return found.group(1) if found else None


def _kernel(cache: Path) -> Path:
    """cache/kernel-PACKAGE: vmlinuz, the needed modules (uncompressed) and load-order."""
    package = kernel_package()
    if package is None:
        # No apt lists (or no archive): a kernel built before still does.
        built = sorted(cache.glob("kernel-*/load-order"))
        if built:
            return built[-1].parent
        _run(["apt-get", "update"], timeout_s=APT_TIMEOUT_S)
        package = kernel_package()
        if package is None:
            raise RuntimeError(f"apt knows no {KERNEL_META_PACKAGE}: cannot build the guest")
    kernel_dir = cache / f"kernel-{package}"
    if (kernel_dir / "load-order").exists():
        return kernel_dir
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as scratch:
        work = Path(scratch)
        _download(package, work)
        tree = work / "tree"
        _run(["dpkg", "-x", str(next(work.glob("*.deb"))), str(tree)])
        staged = work / "kernel"
        (staged / "modules").mkdir(parents=True)
        vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
        shutil.copyfile(vmlinuz, staged / "vmlinuz")
        order = _copy_modules(tree, vmlinuz.name.removeprefix("vmlinuz-"), staged / "modules")
        (staged / "load-order").write_text("".join(f"{name}\n" for name in order))
        shutil.rmtree(kernel_dir, ignore_errors=True)
        os.replace(staged, kernel_dir)
    for older in cache.glob("kernel-*"):  # superseded by a kernel update
        if older != kernel_dir:
            shutil.rmtree(older)
    return kernel_dir


def _download(package: str, directory: Path) -> None:
    command = ["apt-get", "download", package]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True,
                            timeout=APT_TIMEOUT_S)
    if result.returncode != 0:  # stale or missing lists: refresh once
        _run(["apt-get", "update"], timeout_s=APT_TIMEOUT_S)
        _run(command, cwd=directory, timeout_s=APT_TIMEOUT_S)


def _copy_modules(tree: Path, version: str, target: Path) -> list[str]:
    """Copy VIRTIO_MODULES and their dependencies, decompressed; the order to load them."""
    modules_dir = next(path for path in (tree / "lib" / "modules" / version,
                                         tree / "usr" / "lib" / "modules" / version)
                       if path.is_dir())
    if not (modules_dir / "modules.dep").exists():  # the package leaves it to depmod
        _run(["depmod", "-b", str(modules_dir.parent.parent.parent), version])
    dependencies: dict[str, tuple[str, list[str]]] = {}  # name: (path, dependency paths)
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        dependencies[_module_name(path)] = (path, needs.split())
    builtin = {_module_name(line) for line in
               (modules_dir / "modules.builtin").read_text().splitlines()}
    order: list[str] = []

    def visit(name: str, depth: int) -> None:
        assert depth < 32, f"module dependency loop at {name}"
        if name in order:
            return
        path, needs = dependencies[name]
        for need in reversed(needs):  # modules.dep lists the deepest dependency last
            visit(_module_name(need), depth + 1)
        (target / f"{name}.ko").write_bytes(_decompressed(modules_dir / path))
        order.append(name)

    for module in VIRTIO_MODULES:
        name = module.replace("-", "_")
        if name in dependencies:
            visit(name, 0)
        elif name not in builtin:
            raise RuntimeError(f"kernel {version} has no module {module}")
    return order


def _module_name(path: str) -> str:
    base = Path(path).name
    for suffix in (".xz", ".zst", ".gz", ".ko"):
        base = base.removesuffix(suffix)
    return base.replace("-", "_")


def _decompressed(path: Path) -> bytes:
    """A module as busybox insmod can load it (it does not decompress)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):  # no zstd in the standard library before 3.14
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True,
                              timeout=TOOL_TIMEOUT_S).stdout
    return data


def _compile_writer(directory: Path) -> bytes:
    output = directory / "disk_writer"
    _run(["gcc", "-static", "-O2", "-Wall", "-o", str(output), str(WRITER_SOURCE)])
    return output.read_bytes()


def _initramfs(kernel_dir: Path) -> bytes:
    archive = CpioWriter()
    for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules"):
        archive.directory(directory)
    archive.device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    with tempfile.TemporaryDirectory() as scratch:
        archive.file("bin/disk_writer", _compile_writer(Path(scratch)), 0o755)
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    for module in (kernel_dir / "modules").iterdir():
        archive.file(f"lib/modules/{module.name}", module.read_bytes(), 0o644)
    archive.file("lib/modules/load-order", (kernel_dir / "load-order").read_bytes(), 0o644)
    return gzip.compress(archive.finish(), compresslevel=6, mtime=0)


class CpioWriter:
    """An SVR4 "newc" cpio archive (what the kernel unpacks as an initramfs), in memory."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._next_inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._next_inode, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._next_inode += 1
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self._parts.append(_padded(header + encoded))
        self._parts.append(_padded(data))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, permissions: int) -> None:
        self._entry(name, stat.S_IFREG | permissions, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


# --- running ------------------------------------------------------------------------------

def kernel_command_line(interval_ms: int, dirty_mib_per_s: int, dirty_mib: int) -> str:
    # quiet + loglevel=1: kernel messages would interleave with the ACK lines.
    return (f"console=ttyS0 quiet loglevel=1 panic=0 writer.interval_ms={interval_ms}"
            f" writer.dirty_mib_per_s={dirty_mib_per_s} writer.dirty_mib={dirty_mib}")


def domain_xml(name: str, disk_path: Path | str, console_log: Path | str, memory_mib: int = 256,
               interval_ms: int = 5, dirty_mib_per_s: int = 0, dirty_mib: int = 0) -> str:
    """A libvirt domain booting the tiny guest (``build_guest()``) on ``disk_path``.

    The console is appended to, so after a migration the destination's QEMU
    continues the source's log when both see ``console_log`` at the same path.
    """
    assert dirty_mib < memory_mib, "the dirtied buffer must fit in the guest"
    guest = build_guest()
    domain = ElementTree.Element("domain", type="qemu")
    ElementTree.SubElement(domain, "name").text = name
    ElementTree.SubElement(domain, "memory", unit="MiB").text = str(memory_mib)
    ElementTree.SubElement(domain, "vcpu").text = "1"
    os_element = ElementTree.SubElement(domain, "os")
    ElementTree.SubElement(os_element, "type", arch="x86_64", machine="pc").text = "hvm"
    ElementTree.SubElement(os_element, "kernel").text = str(guest.kernel)
    ElementTree.SubElement(os_element, "initrd").text = str(guest.initrd)
    ElementTree.SubElement(os_element, "cmdline").text = kernel_command_line(
        interval_ms, dirty_mib_per_s, dirty_mib)
    cpu = ElementTree.SubElement(domain, "cpu", mode="custom", match="exact", check="none")
    ElementTree.SubElement(cpu, "model", fallback="forbid").text = "qemu64"
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        ElementTree.SubElement(domain, event).text = "destroy"  # a dead guest stays dead
    devices = ElementTree.SubElement(domain, "devices")
    ElementTree.SubElement(devices, "emulator").text = "/usr/bin/qemu-system-x86_64"
    disk = ElementTree.SubElement(devices, "disk", type="file", device="disk")
    ElementTree.SubElement(disk, "driver", name="qemu", type="raw", cache="none")
    source = ElementTree.SubElement(disk, "source", file=str(disk_path))
    # Without it, the source host chowns the image back after a migration while
    # the destination's QEMU still uses it (libvirt does not know it is shared).
    ElementTree.SubElement(source, "seclabel", model="dac", relabel="no")
    ElementTree.SubElement(disk, "target", dev="vda", bus="virtio")
    serial = ElementTree.SubElement(devices, "serial", type="file")
    ElementTree.SubElement(serial, "source", path=str(console_log), append="on")
    ElementTree.SubElement(serial, "target", port="0")
    ElementTree.SubElement(devices, "controller", type="usb", model="none")
    ElementTree.SubElement(devices, "memballoon", model="none")
    return ElementTree.tostring(domain, encoding="unicode")


# --- checking -----------------------------------------------------------------------------

DiskReader = Callable[[int, int], bytes]  # (offset, length) -> bytes, short at the disk's end


def file_reader(path: Path) -> DiskReader:
    """A DiskReader over a file (a raw image read through some mount)."""

    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as image:
            image.seek(offset)
            return image.read(length)

    return read


def console_acks(console_text: str | bytes) -> list[int]:
    data = console_text.encode() if isinstance(console_text, str) else console_text
    return [int(number) for number in ACK_LINE.findall(data)]


def record_problem(record: bytes, number: int) -> str | None:
    """Why ``record`` is not a valid record ``number``, or None if it is."""
    magic, found, _written_ns = RECORD_HEADER.unpack_from(record)
    if magic != RECORD_MAGIC:
        return f"bad magic {magic!r}"
    if found != number:
        return f"holds record {found}"
    (crc,) = RECORD_CRC.unpack_from(record, CRC_OFFSET)
    if zlib.crc32(record[:CRC_OFFSET]) != crc:
        return "CRC mismatch"
    return None


def check_records(disk_bytes_reader: DiskReader, console_text: str | bytes) -> RecordCheck:
    """Verify the disk against the console; AssertionError naming the first problem.

    Every ACKed record must be on disk and valid; the records on disk must be
    0..max without a gap, each valid; the rest of the disk must be zeros.
    """
    acks = console_acks(console_text)
    for earlier, later in zip(acks, acks[1:], strict=False):
        assert later == earlier + 1, f"console ACKs jump from {earlier} to {later}"
    highest_ack = acks[-1] if acks else -1
    highest_record = -1
    first_gap: int | None = None
    offset = 0
    while True:
        batch = disk_bytes_reader(offset, READ_BATCH_RECORDS * RECORD_BYTES)
        whole = len(batch) // RECORD_BYTES
        for index in range(whole):
            number = offset // RECORD_BYTES + index
            record = batch[index * RECORD_BYTES:(index + 1) * RECORD_BYTES]
            if record == ZERO_RECORD:
                if first_gap is None:
                    first_gap = number
                continue
            problem = record_problem(record, number)
            assert problem is None, f"record {number} (offset {number * RECORD_BYTES}): {problem}"
            assert first_gap is None, (
                f"record {first_gap} is missing (zeros) but record {number} is on disk")
            highest_record = number
        offset += whole * RECORD_BYTES
        if len(batch) < READ_BATCH_RECORDS * RECORD_BYTES:
            break
    assert highest_ack <= highest_record, (
        f"record {highest_record + 1} was ACKed (up to {highest_ack}) but is not on disk")
    return RecordCheck(highest_ack=highest_ack, highest_record=highest_record, acks=len(acks))
