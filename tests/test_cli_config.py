"""The `vmstore` command's configuration: `init`, and errors that name file, key and fault."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmstore.cli.config import load_config
from vmstore.dfs.protocol.auth import load_key


def vmstore(*arguments: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmstore.cli.main", *arguments],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "VMSTORE_CONFIG": str(config)})


def test_init_writes_a_private_key_and_a_config_that_loads(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "vmstore.toml"
    result = vmstore("init", "--master", "10.0.0.1:9420", "--host-label", "h7", config=config)
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "etc" / "cluster.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(load_key(key_file)) >= 32
    loaded = load_config(config)
    assert (loaded.master_host, loaded.master_port, loaded.host_label, loaded.key_file) == (
        "10.0.0.1", 9420, "h7", key_file)
    again = vmstore("init", "--master", "10.0.0.1:9420", config=config)
    assert again.returncode == 1
    assert again.stderr.strip() == (f"vmstore init: {config} exists; pass --force to replace"
                                    " it (a new key locks every host with the old one out)")


@pytest.mark.parametrize(("text", "expected"), [
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{missing}"\n',
     "cannot read cluster key file {missing}: No such file or directory"),
    ('[cluster]\nmaster = "10.0.0.1"\nkey_file = "{key}"\n',
     "{config} [cluster] master: '10.0.0.1' is not host:port"),
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{key}"\nmastr = "x"\n',
     "{config}: unknown key 'mastr' in [cluster]"),
    ('[clustr]\n', "{config}: unknown section [clustr]"),
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{key}"\n[master]\nlease_expiry = "soon"\n',
     "{config}: [master] lease_expiry 'soon' is not a number >= 0"),
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{key}"\n[master]\nlisten = "nowhere"\n',
     "{config}: [master] listen: 'nowhere' is not host:port"),
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{key}"\n[logging]\nformat = "xml"\n',
     "{config}: [logging] format 'xml' is not one of text, json"),
    ('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "{key}"\n[mount]\n'
     'short_circuit_reads = "no"\n',
     "{config}: [mount] short_circuit_reads 'no' is not true or false"),
    ('[cluster\n', "{config}: Expected ']' at the end of a table declaration (at line 1,"
     " column 9)"),
])
def test_config_errors_are_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    key = tmp_path / "cluster.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    config = tmp_path / "vmstore.toml"
    values = {"missing": tmp_path / "nope.key", "key": key, "config": config}
    config.write_text(text.format(**values))
    result = vmstore("status", config=config)
    assert result.returncode == 1
    assert result.stderr == f"vmstore status: {expected.format(**values)}\n"
    assert result.stdout == ""


def test_json_logs_carry_the_fields_of_what_failed(tmp_path: Path) -> None:
    """A chunkserver whose master is not there logs, as JSON, which master and why."""
    key = tmp_path / "cluster.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    config = tmp_path / "vmstore.toml"
    config.write_text(f'[cluster]\nmaster = "127.0.0.1:1"\nkey_file = "{key}"\n'
                      '[logging]\nformat = "json"\n')
    chunkserver = subprocess.Popen(
        [sys.executable, "-m", "vmstore.cli.main", "chunkserver", "--data-dir",
         str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "VMSTORE_CONFIG": str(config)})
    try:
        assert chunkserver.stderr is not None
        line = chunkserver.stderr.readline()
        while '"master_link_down"' not in line:
            assert line, "the chunkserver stopped without logging the dead master"
            json.loads(line)  # every line is one JSON object
            line = chunkserver.stderr.readline()
    finally:
        chunkserver.kill()
        chunkserver.wait()
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["logger"] == "vmstore.dfs.chunkserver.master_link"
    assert record["peer"] == "127.0.0.1:1"
    assert record["error"].startswith("cannot connect to 127.0.0.1:1")
    assert record["message"].startswith("link to master 127.0.0.1:1 down")
    assert record["time"].endswith("Z") and record["pid"] == chunkserver.pid


def test_master_takes_its_settings_from_the_config_file(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    config = tmp_path / "vmstore.toml"
    base = f'[cluster]\nkey_file = "{key}"\n[master]\ndata_dir = "{tmp_path / "meta"}"\n'
    config.write_text(base + 'listen = "127.0.0.1:0"\nlease_expiry = 2\n')
    too_short = vmstore("master", config=config)
    assert (too_short.returncode, too_short.stderr) == (
        1, "vmstore master: lease expiry 2: at least 4 s (write tokens live 2 s less)\n")
    assert vmstore("master", "--lease-expiry", "1", config=config).returncode == 1
    config.write_text(base + 'listen = "127.0.0.1:0"\nlease_expiry = 6\n')
    empty = vmstore("master", config=config)
    assert empty.returncode == 1
    assert f"no metadata in {tmp_path / 'meta'}" in empty.stderr
    assert "--new-cluster" in empty.stderr
    config.write_text(base + 'listen = "127.0.0.1:0"\nlease_expiry = 6\nnew_cluster = "yes"\n')
    assert "is not true or false" in vmstore("master", config=config).stderr
    config.write_text(base + 'listen = "127.0.0.1:0"\nlease_expiry = 6\nnew_cluster = true\n')
    ready = tmp_path / "ready"
    master = subprocess.Popen(
        [sys.executable, "-m", "vmstore.cli.main", "master", "--ready-file", str(ready)],
        env={**os.environ, "VMSTORE_CONFIG": str(config)})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and master.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.read_text().startswith("127.0.0.1:")
        assert any((tmp_path / "meta").iterdir())
    finally:
        master.terminate()
        master.wait(timeout=30)


def test_mount_short_circuit_reads_default_on_and_can_be_turned_off(tmp_path: Path) -> None:
    config = tmp_path / "vmstore.toml"
    config.write_text('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "k"\n')
    assert load_config(config).short_circuit_reads is True
    config.write_text('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "k"\n'
                      '[mount]\nshort_circuit_reads = false\n')
    assert load_config(config).short_circuit_reads is False
