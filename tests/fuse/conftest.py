"""The mount's handlers in process (t3): ``VmstoreOperations`` over an in-process cluster.

As S3QL's tests/t3_fs_api.py drives its ``Operations``: no kernel, no
/dev/fuse; a test awaits the handlers as pyfuse3 would, and gets pyfuse3's
own ``EntryAttributes`` and ``FileInfo`` back. The handlers are built by
``vmstore.fuse.mount.open_operations``, the very code a mount runs, on a
client host ``client1`` of a ``dfs.testing`` cluster; tests/fuse/kernel.py
holds what stands in for the kernel, and why.

Seeds: ``sim_seed`` (tests/sim_seed.py) seeds the cluster; a failure
prints it, and ``VMSTORE_SIM_SEED=<seed>`` replays it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

from tests.fuse.kernel import CLIENT, Kernel
from tests.sim_seed import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    pytest_runtest_makereport,
    sim_clock,
    sim_logs,
    sim_seed,
)
from vmstore.dfs.protocol import network
from vmstore.dfs.testing.cluster import MASTER, SimCluster, open_cluster
from vmstore.fuse.mount import MountSettings, open_operations
from vmstore.fuse.operations import VmstoreOperations


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    stand_in = Kernel()
    monkeypatch.setattr(pyfuse3, "readdir_reply", stand_in.readdir_reply)
    monkeypatch.setattr(pyfuse3, "invalidate_inode", stand_in.invalidate_inode)
    monkeypatch.setattr(pyfuse3, "invalidate_entry", stand_in.invalidate_entry)
    return stand_in


@pytest.fixture
async def cluster(tmp_path: Path, sim_seed: int,  # noqa: F811  (the fixtures imported above)
                  sim_logs: Any) -> AsyncIterator[SimCluster]:  # noqa: F811
    async with open_cluster(tmp_path, seed=sim_seed) as running:
        yield running


@pytest.fixture
async def operations(cluster: SimCluster, kernel: Kernel) -> AsyncIterator[VmstoreOperations]:
    """The handlers of a mount of ``cluster`` on host ``client1``, as ``run_mount`` builds them."""
    settings = MountSettings(mountpoint=Path(f"/sim/{CLIENT}"), master_host=MASTER,
                             master_port=cluster.master_port, key=cluster.key,
                             host_label=CLIENT, short_circuit_reads=False)
    # pytest-trio runs fixtures and the test in one context: the test's own
    # calls (which may open connections) stay on the simulated host too.
    with network.using(cluster.network.host(CLIENT)):
        async with open_operations(settings) as handlers:
            yield handlers
