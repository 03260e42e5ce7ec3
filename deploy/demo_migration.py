#!/usr/bin/env python3
"""The quickstart's last step: a tiny guest on vmstore, live-migrated between two hosts.

Run as root from a checkout (deploy/quickstart.sh does):

    python3 deploy/demo_migration.py [DIR]

Two "hosts" on this machine are network namespaces (h1, h2, plus h3 for a
third replica host), each with a chunkserver, its own vmstore mount at
/var/lib/vmstore in its own mount namespace and its own libvirtd (the test
suite's lab, tests/system/libvirt_lab.py). A tiny guest (a Debian kernel
and a busybox initramfs, built from Debian packages on first use) boots
on h1 under QEMU/TCG with its disk on vmstore, writing numbered records to
it; `vmstore migrate` moves it to h2 while it writes, and prints its report.
Afterwards every record the guest acknowledged is checked on the disk.

Where QEMU, libvirt, FUSE or network namespaces cannot run, it says why and
exits 0 (the storage part of the quickstart stands on its own).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GUEST = "demo"
IMAGE = "/var/lib/vmstore/demo.img"
BOOT_TIMEOUT_S = 120.0


def missing_prerequisite() -> str | None:
    if os.geteuid() != 0:
        return "it needs root (network namespaces, FUSE mounts, libvirtd)"
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"),
                          ("libvirtd", "libvirt-daemon-system"), ("ip", "iproute2"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt install {package})"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "the libvirt Python module is missing (pip install libvirt-python)"
    return None


def main() -> int:
    reason = missing_prerequisite()
    if reason is not None:
        print(f"==> demo: skipping the live migration demo: {reason}")
        return 0
    import libvirt

    from tests.guest.tiny_guest import (
        build_guest,
        check_records,
        console_acks,
        domain_xml,
        file_reader,
    )
    from tests.system.libvirt_lab import LibvirtLab

    directory = Path(sys.argv[1] if len(sys.argv) > 1 else "/var/tmp/vmstore-demo").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    print("==> demo: building the tiny guest (a Debian kernel + busybox; cached after once)")
    build_guest()
    print("==> demo: two hosts h1 and h2 (network namespaces), each with a chunkserver,"
          " its own vmstore mount at /var/lib/vmstore and its own libvirtd; h3 stores too")
    lab = LibvirtLab(directory / "lab", ["h1", "h2", "h3"], libvirt_hosts=["h1", "h2"])
    try:
        config = directory / "vmstore.toml"
        network = lab.network
        config.write_text(
            f'[cluster]\nmaster = "{network.master_address}"\nkey_file = "{network.key_file}"\n'
            '[client]\nhost_label = "demo"\nmount = "/var/lib/vmstore"\n' + "".join(
                f'[hosts.{h}]\nlibvirt = "{lab.uri(h)}"\nmigration = "{lab.migration_uri(h)}"\n'
                for h in lab.libvirt_hosts))
        console = directory / "console.log"
        lab.run_in("h1", "truncate", "-s", "256M", IMAGE)
        connection = libvirt.open(lab.uri("h1"))
        connection.defineXML(domain_xml(GUEST, IMAGE, console, memory_mib=256,
                                        interval_ms=20)).create()
        connection.close()
        print(f"==> demo: guest {GUEST} booting on h1 (QEMU, TCG), disk {IMAGE} on vmstore")
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while len(console_acks(console.read_bytes()) if console.exists() else []) < 50:
            if time.monotonic() > deadline:
                print("==> demo: the guest did not start writing; giving up")
                return 1
            time.sleep(0.2)
        before = console_acks(console.read_bytes())[-1]
        print(f"==> demo: the guest has written {before + 1} records; vmstore migrate"
              f" {GUEST} --to h2")
        environment = {**os.environ, "VMSTORE_CONFIG": str(config)}
        subprocess.run([sys.executable, "-m", "vmstore.cli.main", "migrate", GUEST, "--to",
                        "h2"], check=True, env=environment)
        time.sleep(2)
        after = console_acks(console.read_bytes())[-1]
        print(f"==> demo: on h2 the guest goes on writing: record {after} so far")
        connection = libvirt.open(lab.uri("h2"))
        domain = connection.lookupByName(GUEST)
        domain.destroy()
        domain.undefine()
        connection.close()
        result = check_records(file_reader(lab.path_in("h2", IMAGE)), console.read_bytes())
        print(f"==> demo: checked on the disk: all {result.highest_ack + 1} acknowledged"
              " records present, in order, checksums good")
        return 0
    finally:
        lab.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
