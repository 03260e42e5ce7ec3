"""Reading a libvirt domain's XML for the coordinator, and naming hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmstore.cli.config import load_config
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.migration.domain import parse_domain
from vmstore.dfs.migration.hosts import Fleet, MigrationHost, UnknownHost

DOMAIN = """
<domain type='qemu'>
  <name>web1</name>
  <memory unit='MiB'>256</memory>
  <cpu mode='custom'><model>qemu64</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='/var/lib/vmstore/web1.img'><seclabel model='dac' relabel='no'/></source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='export'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
  </devices>
</domain>
"""


def test_disks_memory_cpu_and_networks_are_read() -> None:
    guest = parse_domain(DOMAIN)
    assert (guest.name, guest.virt_type, guest.memory_kib) == ("web1", "qemu", 256 * 1024)
    assert (guest.cpu_mode, guest.cpu_model) == ("custom", "qemu64")
    vda, sda, vdb = guest.disks
    assert (vda.target, vda.kind, vda.source, vda.cache) == (
        "vda", "file", "/var/lib/vmstore/web1.img", "none")
    assert vda.relabel_off and not vda.read_only
    assert sda.read_only and sda.device == "cdrom" and not sda.relabel_off
    assert (vdb.kind, vdb.source) == ("network", "export")
    assert [(i.kind, i.source) for i in guest.interfaces] == [
        ("network", "default"), ("bridge", "br0")]
    assert not guest.dac_relabel_off


def test_a_domain_wide_seclabel_turns_relabelling_off() -> None:
    xml = DOMAIN.replace("<devices>", "<seclabel type='none' model='dac'/><devices>")
    assert parse_domain(xml).dac_relabel_off


def test_hosts_by_name_label_or_uri() -> None:
    host2 = MigrationHost("host2", "qemu+ssh://root@h2/system", "qemu+tcp://h2/system", "rack1")
    fleet = Fleet((host2,))
    assert fleet.host("host2") is host2
    assert fleet.host("rack1") is host2
    assert fleet.host("qemu+tcp://h2/system") is host2
    other = fleet.host("qemu+tcp://10.0.0.9/system")
    assert (other.name, other.libvirt_uri, other.migration_uri, other.label) == (
        "10.0.0.9", "qemu+tcp://10.0.0.9/system", "qemu+tcp://10.0.0.9/system", "")
    with pytest.raises(UnknownHost, match="no host 'host9'.*host2"):
        fleet.host("host9")


def test_config_hosts_sections(tmp_path: Path) -> None:
    path = tmp_path / "vmstore.toml"
    path.write_text('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "/k"\n'
                    '[client]\nmount = "/var/lib/vmstore/"\n'
                    '[hosts.host2]\nlibvirt = "qemu+ssh://root@h2/system"\n'
                    'migration = "qemu+tcp://h2/system"\n'
                    '[hosts.host3]\nlibvirt = "qemu+tcp://h3/system"\nlabel = "r2"\n')
    config = load_config(path)
    assert config.mount == "/var/lib/vmstore"
    host2, host3 = config.fleet.hosts
    assert (host2.label, host2.migration_uri) == ("host2", "qemu+tcp://h2/system")
    assert (host3.label, host3.migration_uri) == ("r2", "qemu+tcp://h3/system")


@pytest.mark.parametrize(("text", "message"), [
    ('[hosts.h2]\nlibvirt = "qemu:///system"\nport = 5\n', r"unknown key 'port' in \[hosts.h2\]"),
    ('[hosts.h2]\nmigration = "qemu+tcp://h2/system"\n', r"\[hosts.h2\] needs libvirt"),
    ('[client]\nmount = "relative"\n', r"\[client\] mount 'relative' is not an absolute"),
])
def test_config_host_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "vmstore.toml"
    path.write_text('[cluster]\nmaster = "10.0.0.1:9420"\nkey_file = "/k"\n' + text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_config(path)
    assert str(path) in raised.value.message
