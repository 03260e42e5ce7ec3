"""`vmstore migrate`, `evacuate` and `failover` with real libvirt hosts and real guests.

One lab serves the module: hosts h1, h2, h3 (network namespaces, each with
a chunkserver), libvirtd and a vmstore mount at /var/lib/vmstore on h1 and
h2, the master with a 4 s lease expiry. The tiny guest (tests/guest) writes
numbered, checksummed records to its disk and ACKs each on its console;
every test checks that no ACKed record is missing afterwards. Guests run
under TCG; QEMU 7.2's TCG may corrupt a *dirtying* guest's RAM during a
move (see the migration notes), so the non-convergence test judges the
policy's outcome and the disk, not the guest's health.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.guest.tiny_guest import (
    RECORD_BYTES,
    build_guest,
    check_records,
    console_acks,
    domain_xml,
    file_reader,
    record_problem,
)
from tests.system.conftest import assert_no_crash
from tests.system.libvirt_lab import LibvirtLab, require_libvirt
from tests.system.network_lab import require_network_namespaces, wait_until

pytestmark = pytest.mark.system
MIB = 1024 * 1024
LEASE_EXPIRY_S = 4.0
BOOT_TIMEOUT_S = 90.0
PROGRESS_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtLab]:
    yield from migration_lab(tmp_path_factory.mktemp("migration") / "lab", ["h1", "h2", "h3"])


def migration_lab(directory: Path, hosts: list[str], masters: int = 1) -> Iterator[LibvirtLab]:
    """A lab with libvirt on h1 and h2 and the coordinator's config; checked for crashes
    once closed. ``masters`` > 1: an HA group (test_migration_ha)."""
    require_network_namespaces()
    require_libvirt()
    build_guest()
    started = LibvirtLab(directory, hosts, libvirt_hosts=["h1", "h2"], masters=masters,
                         master_flags=("--lease-expiry", str(LEASE_EXPIRY_S)))
    try:
        write_coordinator_config(started)
        yield started
    finally:
        started.close()
    assert_no_crash(started.logs())


def coordinator_config(lab: LibvirtLab) -> Path:
    return lab.directory / "coordinator.toml"


def write_coordinator_config(lab: LibvirtLab) -> None:
    network = lab.network
    text = (f'[cluster]\nmaster = "{network.master_address}"\n'
            f'key_file = "{network.key_file}"\n\n'
            '[client]\nhost_label = "coordinator"\nmount = "/var/lib/vmstore"\n')
    for host in lab.libvirt_hosts:
        text += (f'\n[hosts.{host}]\nlibvirt = "{lab.uri(host)}"\n'
                 f'migration = "{lab.migration_uri(host)}"\nlabel = "{host}"\n')
    coordinator_config(lab).write_text(text)


def vmstore(lab: LibvirtLab, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmstore.cli.main", *arguments],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                          env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))})


def libvirt_connection(lab: LibvirtLab, host: str) -> Any:
    import libvirt

    return libvirt.open(lab.uri(host))


@dataclass
class Guest:
    """A tiny guest on its own vmstore image, its console in the lab directory."""

    lab: LibvirtLab
    name: str
    image: str  # path inside the hosts
    console: Path

    def highest_ack(self) -> int:
        acks = console_acks(self.console.read_bytes()) if self.console.exists() else []
        return acks[-1] if acks else -1

    def wait_for_acks(self, count: int, timeout_s: float = PROGRESS_TIMEOUT_S) -> None:
        wait_until(lambda: self.highest_ack() >= count, timeout_s,
                   f"{count} ACKs from guest {self.name}")

    def running_on(self) -> list[str]:
        """The hosts where it runs (an aborted incoming copy may linger briefly)."""
        import libvirt

        def settled() -> bool:
            hosts.clear()
            for host in self.lab.libvirt_hosts:
                connection = libvirt_connection(self.lab, host)
                try:
                    domain = connection.lookupByName(self.name)
                    if domain.isActive() and domain.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                        hosts.append(host)
                except libvirt.libvirtError:
                    pass  # not there, or gone between the lookup and the question
                finally:
                    connection.close()
            return len(hosts) == 1

        hosts: list[str] = []
        deadline = time.monotonic() + PROGRESS_TIMEOUT_S
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        return hosts

    def stop(self) -> None:
        for host in self.lab.libvirt_hosts:
            connection = libvirt_connection(self.lab, host)
            try:
                for domain in connection.listAllDomains():
                    if domain.name() == self.name:
                        if domain.isActive():
                            domain.destroy()
                        if domain.isPersistent():
                            domain.undefine()
            finally:
                connection.close()

    def check_disk(self, host: str, records_end: int | None = None) -> Any:
        """check_records on the image; ``records_end``: where other data begins."""
        read = file_reader(self.lab.path_in(host, self.image))

        def records_only(offset: int, length: int) -> bytes:
            end = offset + length if records_end is None else min(offset + length, records_end)
            return read(offset, max(0, end - offset))

        return check_records(records_only, self.console.read_bytes())


def start_guest(lab: LibvirtLab, name: str, host: str = "h1", *, size: str = "256M",
                memory_mib: int = 128, console: Path | None = None,
                change_xml: Any = None, **writer: int) -> Guest:
    image = f"/var/lib/vmstore/{name}.img"
    lab.run_in(host, "truncate", "-s", size, image)
    guest = Guest(lab, name, image, console or lab.directory / f"{name}-console.log")
    xml = domain_xml(name, image, guest.console, memory_mib=memory_mib, **writer)
    if change_xml is not None:
        xml = change_xml(xml)
    connection = libvirt_connection(lab, host)
    try:
        connection.defineXML(xml).create()
    finally:
        connection.close()
    return guest


def wire_bytes(lab: LibvirtLab, host: str) -> int:
    """Bytes through the host's link, both ways (its veth end in the root namespace)."""
    statistics = Path("/sys/class/net") / lab.network._link(host) / "statistics"
    return sum(int((statistics / name).read_text()) for name in ("rx_bytes", "tx_bytes"))


def test_migrate_moves_memory_and_leaves_the_disk(lab: LibvirtLab) -> None:
    guest = start_guest(lab, "mover", size="1G", memory_mib=128)
    try:
        # 256 MiB of data far past the records: a disk copy would have to send it
        with open(lab.path_in("h1", guest.image), "r+b") as image:
            image.seek(512 * MIB)
            for _ in range(256):
                image.write(os.urandom(MIB))
        guest.wait_for_acks(20, BOOT_TIMEOUT_S)
        before = wire_bytes(lab, "h1")
        result = vmstore(lab, "migrate", "mover", "--to", "h2", "--json")
        wire = wire_bytes(lab, "h1") - before
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["outcome"], report["source"], report["destination"]) == (
            "moved", "h1", "h2")
        assert report["disk_bytes_not_moved"] >= 256 * MIB
        assert 0 < report["memory_bytes"] <= 128 * MIB * 2
        assert wire < 200 * MIB, f"{wire / MIB:.0f} MiB crossed h1's link"
        assert guest.running_on() == ["h2"]
        moved_at = guest.highest_ack()
        guest.wait_for_acks(moved_at + 20)
        lease = subprocess.run(
            [sys.executable, "-m", "vmstore.cli.main", "lease",
             str(lab.path_in("h2", guest.image)), "--json"], capture_output=True, text=True,
            timeout=60, env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))})
        assert json.loads(lease.stdout)["holder_host"] == "h2", lease.stdout + lease.stderr
        print(f"moved in {report['total_s']:.1f} s, downtime {report['downtime_ms']} ms,"
              f" memory {report['memory_bytes'] / MIB:.0f} MiB, {wire / MIB:.0f} MiB on h1's"
              " link")
    finally:
        guest.stop()
    assert guest.check_disk("h2", records_end=512 * MIB).highest_ack >= moved_at + 20


def test_preflight_refuses_and_names_each_unsafe_disk(lab: LibvirtLab) -> None:
    lab.run_in("h1", "mkdir", "-p", "/var/lib/libvirt/images")
    lab.run_in("h1", "truncate", "-s", "16M", "/var/lib/libvirt/images/local.img")

    def unsafe(xml: str) -> str:
        local_disk = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                      "<source file='/var/lib/libvirt/images/local.img'/>"
                      "<target dev='vdb' bus='virtio'/></disk>")
        return xml.replace('cache="none"', 'cache="writeback"').replace(
            "</devices>", local_disk + "</devices>")

    guest = start_guest(lab, "unsafe", change_xml=unsafe)
    try:
        result = vmstore(lab, "migrate", "unsafe", "--to", "h2")
        assert result.returncode == 1
        assert "disk vda (/var/lib/vmstore/unsafe.img) has cache mode writeback" in result.stderr
        assert ("disk vdb (/var/lib/libvirt/images/local.img) is not a file on the vmstore"
                " mount" in result.stderr)
        assert guest.running_on() == ["h1"]
    finally:
        guest.stop()


def answer_ctrl_c() -> None:
    """In the child before exec: SIGINT back to its default, as in a terminal. A run
    started in the background (``tests/run.sh &``) ignores SIGINT, its children
    inherit that, and Python then never turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_non_converging_guest_gets_each_policy(lab: LibvirtLab) -> None:
    guest = start_guest(lab, "dirtier", memory_mib=128, dirty_mib_per_s=64, dirty_mib=64)
    slow = ("--bandwidth", "4", "--stall-after", "4", "--json")
    try:
        guest.wait_for_acks(20, BOOT_TIMEOUT_S)
        aborted = vmstore(lab, "migrate", "dirtier", "--to", "h2", "--on-stall", "abort",
                          *slow)
        assert aborted.returncode == 1, aborted.stdout + aborted.stderr
        assert guest.running_on() == ["h1"]
        ack = guest.highest_ack()
        guest.wait_for_acks(ack + 10)  # untouched on the source, writing on

        paused = vmstore(lab, "migrate", "dirtier", "--to", "h2", "--on-stall", "pause", *slow)
        assert paused.returncode == 0, paused.stderr
        report = json.loads(paused.stdout)
        assert report["stall_policy_applied"] == "pause"
        assert guest.running_on() == ["h2"]

        postcopy = vmstore(lab, "migrate", "dirtier", "--to", "h1", "--on-stall", "postcopy",
                           *slow)
        assert postcopy.returncode == 0, postcopy.stderr
        assert json.loads(postcopy.stdout)["stall_policy_applied"] == "postcopy"
        assert guest.running_on() == ["h1"]

        # Ctrl-C during the copy: it stops, and the guest stays where it was.
        interrupted = subprocess.Popen(
            [sys.executable, "-m", "vmstore.cli.main", "migrate", "dirtier", "--to", "h2",
             "--bandwidth", "4", "--stall-after", "600"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))},
            preexec_fn=answer_ctrl_c)
        wait_until(lambda: "MiB sent" in (interrupted.stderr.readline() if interrupted.stderr
                                          else ""), 60, "the copy to start")
        interrupted.send_signal(signal.SIGINT)
        output, errors = interrupted.communicate(timeout=COMMAND_TIMEOUT_S)
        assert interrupted.returncode == 1, output + errors
        assert "aborted; it keeps running on h1" in errors
        assert guest.running_on() == ["h1"]

        offline = vmstore(lab, "migrate", "dirtier", "--to", "h2", "--offline", "--json")
        assert offline.returncode == 0, offline.stderr
        report = json.loads(offline.stdout)
        assert (report["outcome"], report["stall_policy_applied"]) == ("moved", "")
        assert guest.running_on() == ["h2"]
    finally:
        guest.stop()
    guest.check_disk("h2")


def test_evacuate_moves_every_guest(lab: LibvirtLab) -> None:
    guests = [start_guest(lab, f"evac{number}", memory_mib=96) for number in range(2)]
    try:
        for guest in guests:
            guest.wait_for_acks(10, BOOT_TIMEOUT_S)
        result = vmstore(lab, "evacuate", "h1", "--json")
        assert result.returncode == 0, result.stderr
        reports = json.loads(result.stdout)
        assert sorted(r["guest"] for r in reports) == ["evac0", "evac1"]
        assert {(r["outcome"], r["destination"]) for r in reports} == {("moved", "h2")}
        for guest in guests:
            assert guest.running_on() == ["h2"]
            guest.wait_for_acks(guest.highest_ack() + 10)
    finally:
        for guest in guests:
            guest.stop()
    for guest in guests:
        guest.check_disk("h2")


def test_failover_restarts_a_cut_off_hosts_guest_and_fences_the_old_copy(
        lab: LibvirtLab) -> None:
    # Each host's QEMU logs this guest's console in its own /var/log/libvirt.
    console_in_host = "/var/log/libvirt/qemu/failover-console.log"
    for host in lab.libvirt_hosts:
        lab.run_in(host, "mkdir", "-p", "/var/log/libvirt/qemu")
    guest = start_guest(lab, "phoenix", console=Path(console_in_host))
    old_console = lab.state("h1") / "log" / "qemu" / "failover-console.log"
    new_console = lab.state("h2") / "log" / "qemu" / "failover-console.log"

    def acks(console: Path) -> list[int]:
        return console_acks(console.read_bytes()) if console.exists() else []

    try:
        wait_until(lambda: len(acks(old_console)) >= 200, BOOT_TIMEOUT_S,
                   "200 ACKs from the guest on h1")
        recorded = vmstore(lab, "guests", "record")
        assert recorded.returncode == 0, recorded.stderr
        lab.network.cut("h1")
        cut_at = time.monotonic()
        time.sleep(1)  # a write in flight at the cut may still have been ACKed
        last_old_ack = acks(old_console)[-1]
        result = vmstore(lab, "failover", "h1", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        (restarted,) = json.loads(result.stdout)
        assert restarted["destination"] == "h2"
        # Not before the master expired h1's session: its tokens were dead by then.
        restarted_after_s = time.monotonic() - cut_at
        assert restarted_after_s >= LEASE_EXPIRY_S, result.stderr
        print(f"restarted {restarted_after_s:.1f} s after the cut")
        wait_until(lambda: len(acks(new_console)) >= 20, BOOT_TIMEOUT_S,
                   "20 ACKs from the restarted guest on h2")
        lab.network.reconnect("h1")
        # The old copy is fenced: its stalled write fails, and so does every retry
        # of it (the writer retries every 5 ms): it never ACKs again.
        wait_until(lambda: b"WRITE_ERROR" in old_console.read_bytes(), PROGRESS_TIMEOUT_S,
                   "the old copy's write to fail")
        time.sleep(2)
        assert acks(old_console)[-1] == last_old_ack
        connection = libvirt_connection(lab, "h2")
        try:
            connection.lookupByName("phoenix").destroy()  # before reading its last ACK
        finally:
            connection.close()
        new_highest = acks(new_console)[-1]
    finally:
        lab.network.reconnect("h1")
        guest.stop()
    read = file_reader(lab.path_in("h2", guest.image))
    for number in range(new_highest + 1):  # the new copy's ACKed records
        problem = record_problem(read(number * RECORD_BYTES, RECORD_BYTES), number)
        assert problem is None, f"record {number}: {problem}"
    # Past both copies' last records (+1: a write whose ACK was not printed), nothing.
    tail_start = max(new_highest, last_old_ack) + 2
    tail = read(tail_start * RECORD_BYTES, 64 * RECORD_BYTES)
    assert tail == bytes(len(tail)), f"records past {tail_start - 1} reached the disk"


def test_qemu_image_locks_still_work_on_one_host(lab: LibvirtLab) -> None:
    """Two guests on one host with one image: QEMU's own OFD lock refuses the second."""
    import libvirt

    guest = start_guest(lab, "locked")
    connection = libvirt_connection(lab, "h1")
    try:
        twin = connection.defineXML(domain_xml("locked-twin", guest.image,
                                               lab.directory / "twin-console.log"))
        with pytest.raises(libvirt.libvirtError, match='Failed to get "write" lock'):
            twin.create()
        twin.undefine()
    finally:
        connection.close()
        guest.stop()


# --- a silent peer during a move (issue 16) ---------------------------------------------
# The cut stays in place this long at least: the command must be done before it ends.
CUT_HELD_S = 20.0


def cut_during_a_move(lab: LibvirtLab, guest: Guest, cut: str) -> subprocess.Popen[str]:
    """`vmstore migrate` of ``guest`` from h1 to h2 at 3 MiB/s, with ``cut``'s link taken
    down once the copy is under way (the caller reconnects it)."""
    guest.wait_for_acks(20, BOOT_TIMEOUT_S)
    mover = subprocess.Popen(
        [sys.executable, "-m", "vmstore.cli.main", "migrate", guest.name, "--to", "h2",
         "--bandwidth", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))})
    assert mover.stderr is not None
    wait_until(lambda: "MiB sent" in mover.stderr.readline(), 60, "the copy to start")
    lab.network.cut(cut)
    return mover


def defined_on_host(lab: LibvirtLab, host: str, name: str) -> bool:
    import libvirt

    connection = libvirt_connection(lab, host)
    try:
        return name in {domain.name() for domain in connection.listAllDomains()}
    except libvirt.libvirtError:
        return False
    finally:
        connection.close()


def test_a_cut_destination_aborts_the_move_and_the_guest_writes_on(lab: LibvirtLab) -> None:
    """h2's link goes down (no reset) during the copy: the move is aborted rather than
    the guest paused for the stall policy (before: ~20 s of downtime for a 15 s cut),
    `migrate` ends while the cut holds, the guest writes on on h1 only, and h2 keeps no
    definition of it. (The copy has 64 MiB of dirtied memory to send at 3 MiB/s.)"""
    guest = start_guest(lab, "cutdest", memory_mib=128, dirty_mib_per_s=1, dirty_mib=64)
    try:
        mover = cut_during_a_move(lab, guest, "h2")
        try:
            output, errors = mover.communicate(timeout=CUT_HELD_S)
            assert mover.returncode == 1, output + errors
            assert "a silent peer" in errors and "it keeps running on h1" in errors, errors
            assert "libvirt:" not in errors, errors  # libvirt's own lines stay out
            ack = guest.highest_ack()
            guest.wait_for_acks(ack + 20, CUT_HELD_S)  # on h1, during the cut
            assert not defined_on_host(lab, "h2", "cutdest"), errors
        finally:
            lab.network.reconnect("h2")
        assert guest.running_on() == ["h1"]
        guest.wait_for_acks(guest.highest_ack() + 10)
        assert not defined_on_host(lab, "h2", "cutdest")
        print(errors.strip().splitlines()[-3:])
    finally:
        guest.stop()
    guest.check_disk("h1")


def test_a_source_cut_past_the_lease_expiry_is_named_fenced_and_recovers(
        lab: LibvirtLab) -> None:
    """h1 (the source) goes silent during the copy for longer than the lease expiry:
    its session expires and the guest's image has no lease holder, so its writes fail.
    `migrate` says so (before: "it keeps running on h1") and names the commands that
    restart it on h1; run, they bring the guest back writing there."""
    guest = start_guest(lab, "cutsource", memory_mib=128, dirty_mib_per_s=1, dirty_mib=64)
    try:
        mover = cut_during_a_move(lab, guest, "h1")
        try:
            output, errors = mover.communicate(timeout=CUT_HELD_S + LEASE_EXPIRY_S)
        finally:
            lab.network.reconnect("h1")
        assert mover.returncode == 1, output + errors
        assert "FENCED" in errors and "nobody holds the write lease" in errors, errors
        assert "libvirt:" not in errors, errors
        assert guest.running_on() == ["h1"]
        wait_until(lambda: b"WRITE_ERROR" in guest.console.read_bytes(), PROGRESS_TIMEOUT_S,
                   "the fenced guest's writes to fail")
        (recovery,) = [line.split("take the lease back: ", 1)[1] for line in
                       errors.splitlines() if "take the lease back: " in line]
        restarted_at = len(guest.console.read_bytes())
        subprocess.run(recovery, shell=True, check=True, timeout=60, capture_output=True)

        def new_acks() -> list[int]:
            return console_acks(guest.console.read_bytes()[restarted_at:])

        wait_until(lambda: len(new_acks()) >= 20, BOOT_TIMEOUT_S,
                   "20 ACKs from the guest restarted on h1")
        assert guest.running_on() == ["h1"]
        connection = libvirt_connection(lab, "h1")
        try:
            connection.lookupByName("cutsource").destroy()  # before reading its last ACK
        finally:
            connection.close()
        highest = new_acks()[-1]
    finally:
        lab.network.reconnect("h1")
        guest.stop()
    read = file_reader(lab.path_in("h1", guest.image))
    for number in range(highest + 1):
        problem = record_problem(read(number * RECORD_BYTES, RECORD_BYTES), number)
        assert problem is None, f"record {number}: {problem}"


# --- a qcow2 image that grows during the move (issue 18) ----------------------------------
# A qcow2 file grows as its guest writes new clusters: the source's QEMU appends
# clusters and updates the image's tables until its last moment, and the
# destination's QEMU opens the image on another host's mount, where a size or table
# cached from before the move would lose what the guest wrote last. The tiny guest
# writes a 4 KiB record every 5 ms at increasing offsets: its image gains a 64 KiB
# cluster every 16 records, through the move too.
def start_qcow2_guest(lab: LibvirtLab, name: str, host: str = "h1") -> Guest:
    image = f"/var/lib/vmstore/{name}.qcow2"
    lab.run_in(host, "qemu-img", "create", "-q", "-f", "qcow2", image, "256M")
    guest = Guest(lab, name, image, lab.directory / f"{name}-console.log")
    xml = domain_xml(name, image, guest.console, memory_mib=128)
    assert xml.count('type="raw"') == 1, "the disk's driver names its format once"
    connection = libvirt_connection(lab, host)
    try:
        connection.defineXML(xml.replace('type="raw"', 'type="qcow2"')).create()
    finally:
        connection.close()
    return guest


def test_a_growing_qcow2_image_moves_with_every_acked_record(lab: LibvirtLab) -> None:
    guest = start_qcow2_guest(lab, "qcow2mover")
    try:
        guest.wait_for_acks(40, BOOT_TIMEOUT_S)
        size_before = os.stat(lab.path_in("h1", guest.image)).st_size
        acked_before = guest.highest_ack()
        result = vmstore(lab, "migrate", "qcow2mover", "--to", "h2", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["outcome"], report["destination"]) == ("moved", "h2"), report
        assert guest.running_on() == ["h2"]
        moved_at = guest.highest_ack()
        # Written while the memory moved (the guest runs on h1 until the switch): at
        # least one new cluster, appended by h1's QEMU, opened by h2's.
        assert moved_at >= acked_before + 16, f"ACKs {acked_before} -> {moved_at} in the move"
        guest.wait_for_acks(moved_at + 100)  # 100 more records: 6 more clusters on h2
        size_after = os.stat(lab.path_in("h2", guest.image)).st_size
        assert size_after > size_before, "the image did not grow: no cluster was added"
    finally:
        guest.stop()
    check = lab.run_in("h2", "qemu-img", "check", "-f", "qcow2", guest.image, check=False)
    assert check.returncode == 0, f"qemu-img check: {check.stdout} {check.stderr}"
    raw = lab.directory / "qcow2mover.raw"
    lab.run_in("h2", "qemu-img", "convert", "-f", "qcow2", "-O", "raw", guest.image,
               str(raw))
    records = check_records(file_reader(raw), guest.console.read_bytes())
    assert records.highest_ack >= moved_at + 100
    print(f"moved in {report['total_s']:.1f} s, downtime {report['downtime_ms']} ms; image"
          f" {size_before / 2**20:.1f} -> {size_after / 2**20:.1f} MiB; ACKs up to"
          f" {records.highest_ack}, all on disk")


def test_a_move_to_a_host_whose_mount_dies_leaves_nothing_there(lab: LibvirtLab) -> None:
    """h2's vmstore mount is killed (-9) during the copy: the move fails, the guest
    writes on on h1, and h2 keeps neither a running copy nor a definition of it (before:
    the failed incoming move could leave its persistent definition on h2)."""
    from tests.system.libvirt_lab import VMSTORE_MOUNTPOINT, _pid_of

    guest = start_guest(lab, "orphan", memory_mib=128, dirty_mib_per_s=1, dirty_mib=64)
    try:
        guest.wait_for_acks(20, BOOT_TIMEOUT_S)
        mover = subprocess.Popen(
            [sys.executable, "-m", "vmstore.cli.main", "migrate", "orphan", "--to", "h2",
             "--bandwidth", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))})
        assert mover.stderr is not None
        wait_until(lambda: "MiB sent" in mover.stderr.readline(), 60, "the copy to start")
        mount_pid = _pid_of(lab.directory, "mount-h2")
        assert mount_pid is not None
        os.kill(mount_pid, signal.SIGKILL)
        output, errors = mover.communicate(timeout=COMMAND_TIMEOUT_S)
        assert mover.returncode == 1, output + errors
        assert "it keeps running on h1" in errors, errors
        assert "libvirt:" not in errors, errors
        assert guest.running_on() == ["h1"]
        assert not defined_on_host(lab, "h2", "orphan"), errors
        guest.wait_for_acks(guest.highest_ack() + 20)
    finally:
        guest.stop()
        lab.run_in("h2", "umount", "-l", str(VMSTORE_MOUNTPOINT), check=False)
        lab._stop_mount("h2")
        lab._start_mount("h2")
        wait_until(lambda: (lab.directory / "run" / "mount-h2.addr").exists(), 60,
                   "h2's mount to be back")
    guest.check_disk("h1")
