"""`vmstore import SRC DEST`: a guest image onto a vmstore mount, zeros skipped, with progress.

qemu-img does the conversion (any format it reads; the output format is the
source's unless --format says otherwise) with O_DIRECT on the destination;
zero blocks are never written (qemu-img detects them, and a zero write into
a hole costs vmstore nothing anyway). Its progress becomes a line with rate
and time left.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vmstore.cli.mount_command import FS_TYPE
from vmstore.dfs.constants import IMPORT_PROGRESS_READ_BYTES
from vmstore.dfs.errors import ConfigError, ImportFailed
from vmstore.dfs.progress import ProgressDisplay

PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def vmstore_mount_of(path: Path) -> str | None:
    """The vmstore mount point ``path`` is under, or None."""
    best = None
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == FS_TYPE:
                point = fields[1].replace("\\040", " ")
                if (str(path) + "/").startswith(point.rstrip("/") + "/"):
                    best = point if best is None or len(point) > len(best) else best
    return best


def image_info(path: Path) -> dict[str, Any]:
    result = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise ImportFailed(f"{path}: {result.stderr.strip() or 'qemu-img info failed'}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def _time(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def run_import(args: argparse.Namespace) -> int:
    source = Path(args.source).absolute()
    destination = Path(args.destination).absolute()
    if vmstore_mount_of(destination.parent) is None:
        raise ConfigError(f"{destination}: not on a vmstore mount (see vmstore mount)")
    if destination.exists() and not args.force:
        raise ConfigError(f"{destination} exists; pass --force to overwrite it")
    info = image_info(source)
    output_format = args.format or info["format"]
    virtual_bytes = int(info["virtual-size"])
    command = ["qemu-img", "convert", "-p", "-O", output_format, "-t", "none",
               str(source), str(destination)]
    display = ProgressDisplay()
    started = time.monotonic()
    errors_file = tempfile.TemporaryFile()  # a pipe could fill and stall qemu-img
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors_file)
    assert process.stdout is not None
    buffer = b""
    while chunk := os.read(process.stdout.fileno(), IMPORT_PROGRESS_READ_BYTES):
        buffer = (buffer + chunk)[-IMPORT_PROGRESS_READ_BYTES:]
        found = PERCENT.findall(buffer)
        if found:
            fraction = float(found[-1]) / 100
            elapsed = time.monotonic() - started
            rate = fraction * virtual_bytes / elapsed if elapsed else 0.0
            left = (1 - fraction) * virtual_bytes / rate if rate else 0.0
            display.show(f"{fraction:6.1%} of {virtual_bytes / 2**30:,.2f} GiB,"
                         f" {rate / 2**20:,.0f} MiB/s, {_time(left)} left")
    process.wait()
    errors_file.seek(0)
    errors = errors_file.read().decode(errors="replace")
    errors_file.close()
    if process.returncode:
        display.finish()
        raise ImportFailed(f"qemu-img convert failed: {errors.strip()}")
    elapsed = time.monotonic() - started
    display.finish()
    stored = os.stat(destination).st_blocks * 512
    print(f"{source} -> {destination}: {output_format}, {virtual_bytes / 2**30:,.2f} GiB"
          f" virtual, {stored / 2**20:,.1f} MiB stored, in {elapsed:.1f} s"
          f" ({virtual_bytes / 2**20 / max(elapsed, 1e-6):,.0f} MiB/s of image)")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "import", help="copy a guest image onto a vmstore mount (qemu-img, zeros skipped)",
        description="Convert SRC (any format qemu-img reads) into DEST on a vmstore mount,"
        " with a progress line (rate, time left). Zero blocks are not written.",
        epilog="example: vmstore import debian.qcow2 /var/lib/vmstore/images/web1.qcow2\n"
        "exit status: 0 done, 1 refused or failed",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="an image file qemu-img can read")
    parser.add_argument("destination", help="the new image's path on a vmstore mount")
    parser.add_argument("--format", "-O", help="output format (default: the source's)")
    parser.add_argument("--force", action="store_true", help="overwrite DEST")
    parser.set_defaults(handler=run_import)
