#!/usr/bin/env python3
"""`vmstore migrate` against `virsh migrate --copy-storage-all`, same guest, one run.

Run from a checkout, as root, after deploy/install-deps.sh:

    python3 deploy/bench/migration_bench.py [--sizes 1,8] [--fill 0.5] [--dir DIR]

It stands up the test suite's libvirt lab (tests/system/libvirt_lab.py):
hosts h1, h2, h3 as network namespaces with a chunkserver each, libvirtd
and a vmstore mount at /var/lib/vmstore on h1 and h2, QEMU under TCG. For
each disk size it boots the tiny test guest (256 MiB of RAM, writing a
record to its disk every 50 ms) twice on h1:

* with its disk on vmstore, moved by ``vmstore migrate --to h2``;
* with its disk on h1's local disk (/var/lib/libvirt/images), moved by
  ``virsh migrate --live --p2p --copy-storage-all`` to a sparse file of the
  same size that h2 has in the same place.

Each disk gets ``--fill`` of its size in random data first (a disk copy has
to send it; holes it skips). The table has total time (wall clock of the
command), downtime (libvirt's completed-job statistics), and bytes on h1's
link (its veth counters, both ways: memory, disk, and vmstore's own
replication traffic of the guest's writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import libvirt  # noqa: E402

from tests.guest.tiny_guest import build_guest, console_acks, domain_xml  # noqa: E402
from tests.system.libvirt_lab import LibvirtLab  # noqa: E402

GIB = 1024**3
MIB = 1024**2
GUEST_MEMORY_MIB = 256
BOOT_TIMEOUT_S = 120.0
FILL_BLOCK_BYTES = 4 * MIB


def wire_bytes(lab: LibvirtLab, host: str) -> int:
    statistics = Path("/sys/class/net") / lab.network._link(host) / "statistics"
    return sum(int((statistics / name).read_text()) for name in ("rx_bytes", "tx_bytes"))


def fill(path: Path, size_bytes: int, fraction: float) -> None:
    """Random data over ``fraction`` of the disk, past the guest's record area."""
    with open(path, "r+b") as image:
        image.seek(64 * MIB)
        remaining = int(size_bytes * fraction)
        while remaining > 0:
            block = os.urandom(min(FILL_BLOCK_BYTES, remaining))
            image.write(block)
            remaining -= len(block)


def boot(lab: LibvirtLab, name: str, image: str, console: Path) -> Any:
    connection = libvirt.open(lab.uri("h1"))
    domain = connection.defineXML(domain_xml(name, image, console, memory_mib=GUEST_MEMORY_MIB,
                                             interval_ms=50))
    domain.create()
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while len(console_acks(console.read_bytes()) if console.exists() else []) < 10:
        if time.monotonic() > deadline:
            raise RuntimeError(f"guest {name} did not start writing within {BOOT_TIMEOUT_S} s")
        time.sleep(0.2)
    connection.close()
    return domain


def completed_downtime_ms(lab: LibvirtLab, name: str) -> int:
    connection = libvirt.open(lab.uri("h2"))
    try:
        domain = connection.lookupByName(name)
        stats = domain.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        domain.destroy()
        domain.undefine()
        return int(stats.get("downtime", 0))
    finally:
        connection.close()


def vmstore_case(lab: LibvirtLab, config: Path, size_gib: int, fraction: float) -> dict[str, Any]:
    name = f"vms{size_gib}"
    image = f"/var/lib/vmstore/{name}.img"
    lab.run_in("h1", "truncate", "-s", f"{size_gib}G", image)
    fill(lab.path_in("h1", image), size_gib * GIB, fraction)
    boot(lab, name, image, lab.directory / f"{name}.console")
    before, started = wire_bytes(lab, "h1"), time.monotonic()
    result = subprocess.run([sys.executable, "-m", "vmstore.cli.main", "migrate", name,
                             "--to", "h2", "--json"], capture_output=True, text=True,
                            env={**os.environ, "VMSTORE_CONFIG": str(config)}, timeout=3600)
    total_s = time.monotonic() - started
    wire = wire_bytes(lab, "h1") - before
    if result.returncode:
        raise RuntimeError(f"vmstore migrate failed: {result.stderr}")
    report = json.loads(result.stdout)
    completed_downtime_ms(lab, name)
    lab.run_in("h2", "rm", "-f", image)
    return {"total_s": total_s, "downtime_ms": report["downtime_ms"], "wire_bytes": wire}


def copy_storage_case(lab: LibvirtLab, size_gib: int, fraction: float) -> dict[str, Any]:
    name = f"copy{size_gib}"
    image = f"/var/lib/libvirt/images/{name}.img"
    for host in ("h1", "h2"):
        lab.run_in(host, "mkdir", "-p", "/var/lib/libvirt/images")
        lab.run_in(host, "truncate", "-s", f"{size_gib}G", image)
    fill(lab.path_in("h1", image), size_gib * GIB, fraction)
    boot(lab, name, image, lab.directory / f"{name}.console")
    before, started = wire_bytes(lab, "h1"), time.monotonic()
    subprocess.run(["virsh", "-c", lab.uri("h1"), "migrate", "--live", "--p2p",
                    "--copy-storage-all", "--persistent", "--undefinesource", name,
                    lab.migration_uri("h2")], check=True, capture_output=True, timeout=3600)
    total_s = time.monotonic() - started
    wire = wire_bytes(lab, "h1") - before
    downtime_ms = completed_downtime_ms(lab, name)
    for host in ("h1", "h2"):
        lab.run_in(host, "rm", "-f", image)
    return {"total_s": total_s, "downtime_ms": downtime_ms, "wire_bytes": wire}


def write_config(lab: LibvirtLab) -> Path:
    network = lab.network
    text = (f'[cluster]\nmaster = "{network.master_address}"\nkey_file = "{network.key_file}"\n'
            '[client]\nhost_label = "bench"\nmount = "/var/lib/vmstore"\n')
    for host in lab.libvirt_hosts:
        text += (f'[hosts.{host}]\nlibvirt = "{lab.uri(host)}"\n'
                 f'migration = "{lab.migration_uri(host)}"\nlabel = "{host}"\n')
    path = lab.directory / "bench.toml"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,8", help="disk sizes in GiB (default 1,8)")
    parser.add_argument("--fill", type=float, default=0.5,
                        help="fraction of each disk filled with random data (default 0.5)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="vmstore-migration-bench-"))
    build_guest()
    lab = LibvirtLab(directory / "lab", ["h1", "h2", "h3"], libvirt_hosts=["h1", "h2"])
    rows = []
    try:
        config = write_config(lab)
        for size in [int(s) for s in args.sizes.split(",")]:
            print(f"{size} GiB: vmstore migrate...", file=sys.stderr)
            rows.append((size, "vmstore migrate", vmstore_case(lab, config, size, args.fill)))
            print(f"{size} GiB: virsh migrate --copy-storage-all...", file=sys.stderr)
            rows.append((size, "virsh --copy-storage-all",
                         copy_storage_case(lab, size, args.fill)))
    finally:
        lab.close()
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"\nguest: {GUEST_MEMORY_MIB} MiB RAM, TCG, writing a 4 KiB record every 50 ms;"
          f" disks {args.fill:.0%} random data\n")
    print("| disk | method | total s | downtime ms | MiB on the wire |")
    print("|---:|---|---:|---:|---:|")
    for size, method, row in rows:
        print(f"| {size} GiB | {method} | {row['total_s']:.1f} | {row['downtime_ms']} |"
              f" {row['wire_bytes'] / MIB:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
