"""A live migration while the metadata master fails over (issue 15).

The lab is test_migration's, with an HA group for a master: two masters and a
three-member etcd in the root namespace on the bridge's address; hosts h1 and
h2, each with a chunkserver, a vmstore mount and libvirtd, their configs (and
the coordinator's) listing both masters. A tiny guest writes its numbered,
checksummed records on h1; ``vmstore migrate`` to h2 runs with a low
``--bandwidth``, and once its memory copy is under way the leading master is
killed (-9). Either outcome is allowed, but it must be one of them:

* the move completes: ``migrate`` says "moved", and the guest runs on h2 only;
* or it is refused cleanly: ``migrate`` exits 1 saying it keeps running on
  h1, and the guest runs on h1 only.

Either way the guest goes on writing where it runs, every record it
acknowledged is on the disk, and the image's write lease is held by that host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.system.libvirt_lab import LibvirtLab
from tests.system.network_lab import wait_until
from tests.system.test_metadata_ha import require_etcd
from tests.system.test_migration import (
    BOOT_TIMEOUT_S,
    COMMAND_TIMEOUT_S,
    coordinator_config,
    migration_lab,
    start_guest,
    vmstore,
)

pytestmark = pytest.mark.system
# The copy of the tiny 128 MiB guest (~70 MiB) lasts ~9 s at this rate: the leader
# is killed at its start, and a new one leads ~3.5 s later.
BANDWIDTH_MIB_PER_S = 8
COPY_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtLab]:
    require_etcd()
    yield from migration_lab(tmp_path_factory.mktemp("migration-ha") / "lab", ["h1", "h2"],
                             masters=2)


def test_a_migration_across_a_master_failover_leaves_the_guest_on_one_host(
        lab: LibvirtLab) -> None:
    guest = start_guest(lab, "steady", memory_mib=128)
    try:
        guest.wait_for_acks(20, BOOT_TIMEOUT_S)
        leader = lab.network.leader()
        started = time.monotonic()
        migration = subprocess.Popen(
            [sys.executable, "-m", "vmstore.cli.main", "migrate", "steady", "--to", "h2",
             "--bandwidth", str(BANDWIDTH_MIB_PER_S), "--json"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "VMSTORE_CONFIG": str(coordinator_config(lab))})
        assert migration.stderr is not None
        wait_until(lambda: "MiB sent" in migration.stderr.readline(), COPY_START_TIMEOUT_S,
                   "the memory copy to start")
        assert migration.poll() is None, "the move ended before the master was killed"
        lab.network.kill(leader)
        killed_s = time.monotonic() - started
        output, errors = migration.communicate(timeout=COMMAND_TIMEOUT_S)
        ended_s = time.monotonic() - started
        hosts = guest.running_on()
        if migration.returncode == 0:
            report = json.loads(output)
            assert report["outcome"] == "moved", output
            print(f"moved {report['memory_bytes'] / 2**20:.0f} MiB of memory in"
                  f" {report['total_s']:.1f} s, paused {report['downtime_ms']} ms")
            assert hosts == ["h2"], f"moved, but the guest runs on {hosts}"
        else:
            assert "it keeps running on h1" in errors, errors
            assert hosts == ["h1"], f"refused, but the guest runs on {hosts}: {errors}"
        (host,) = hosts
        print(f"{leader} killed {killed_s:.1f} s into the move, which ended"
              f" {ended_s:.1f} s in: guest on {host}"
              f" ({'moved' if host == 'h2' else 'refused: ' + errors.strip()})")
        guest.wait_for_acks(guest.highest_ack() + 20)  # it goes on writing where it runs
        lease = vmstore(lab, "lease", str(lab.path_in(host, guest.image)), "--json")
        assert lease.returncode == 0, lease.stderr
        assert json.loads(lease.stdout)["holder_host"] == host, lease.stdout
    finally:
        guest.stop()
    guest.check_disk(host)
