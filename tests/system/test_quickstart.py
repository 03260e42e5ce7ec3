"""The README's first command, as a new user runs it: deploy/quickstart.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.libvirt_lab import require_libvirt
from tests.system.network_lab import require_network_namespaces
from vmstore.cli.local_cluster import local_down

pytestmark = pytest.mark.system
REPO = Path(__file__).resolve().parents[2]
QUICKSTART_TIMEOUT_S = 900


def test_quickstart_stores_images_and_migrates_a_guest(tmp_path: Path) -> None:
    require_network_namespaces()
    require_libvirt()
    directory = tmp_path / "quickstart"
    try:
        result = subprocess.run(["bash", str(REPO / "deploy" / "quickstart.sh"), str(directory)],
                                capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT_S,
                                env={**os.environ, "PYTHON": sys.executable})
    finally:
        local_down(directory)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for expected in ("qcow2 copy identical", "raw copy identical",
                     "vmstore local cluster up", "demo: moved from h1 to h2",
                     "acknowledged records present, in order"):
        assert expected in output, f"{expected!r} missing from:\n{output[-4000:]}"
