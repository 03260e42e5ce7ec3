"""The deployment files are valid: systemd units verify, the example config loads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmstore.cli.config import load_config
from vmstore.dfs.constants import JOURNAL_ENTRY_BYTES_MAX, LOCAL_ETCD_REQUEST_BYTES_MAX

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def verify(name: str, text: str, directory: Path) -> list[str]:
    """Problems systemd-analyze finds in a unit (empty: it verifies)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # ExecStart must name an existing binary; the installed vmstore may not be there.
    text = text.replace("/usr/local/bin/vmstore", shutil.which("true") or "/bin/true")
    if not Path("/usr/bin/etcd").exists():  # etcd-server is not installed here
        text = text.replace("/usr/bin/etcd", shutil.which("true") or "/bin/true")
    (directory / name).write_text(text)
    result = subprocess.run([analyze, "verify", "--man=no", str(directory / name)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if name in line]
    if result.returncode != 0 and not problems:
        problems = [result.stderr.strip()]
    return problems


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_systemd_unit_verifies(unit: Path, tmp_path: Path) -> None:
    name = unit.name.replace("@.service", "@disk1.service")  # templates verify as instances
    assert verify(name, unit.read_text(), tmp_path) == []


def test_verification_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = "[Unit]\nDescription=x\n[Service]\nExecStart=relative/vmstore\nBogusKey=1\n"
    assert verify("broken.service", broken, tmp_path)


def test_example_config_loads() -> None:
    config = load_config(DEPLOY / "config" / "vmstore.toml")
    assert (config.master_host, config.master_port) == ("10.0.0.1", 9420)
    assert config.host_label == "rack1-host3"


def exec_start(unit: str) -> list[str]:
    text = (DEPLOY / "systemd" / unit).read_text()
    return next(line for line in text.splitlines()
                if line.startswith("ExecStart="))[len("ExecStart="):].split()


def test_the_etcd_unit_runs_etcd_as_metadata_ha_needs() -> None:
    command = exec_start("vmstore-etcd.service")
    assert command[0] == "/usr/bin/etcd"
    request_bytes = int(command[command.index("--max-request-bytes") + 1])
    # One group commit is one journal entry; the local cluster's etcd says the same.
    assert request_bytes == LOCAL_ETCD_REQUEST_BYTES_MAX > JOURNAL_ENTRY_BYTES_MAX
    assert command[command.index("--auto-compaction-mode") + 1] == "periodic"
    assert "--auto-compaction-retention" in command


def test_the_ha_master_unit_joins_a_group() -> None:
    command = exec_start("vmstore-master-ha.service")
    assert command[:2] == ["/usr/local/bin/vmstore", "master"]
    for flag in ("--etcd", "--advertise", "--listen", "--data-dir"):
        assert flag in command, flag
    listen = command[command.index("--listen") + 1]
    assert not listen.endswith(":0"), "an HA master needs a fixed port"
