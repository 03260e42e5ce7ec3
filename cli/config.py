"""The configuration file: where the master is, which key, local paths.

``/etc/vmstore/vmstore.toml``, or the file named by ``VMSTORE_CONFIG``.
Every error names the file, the key and what is wrong, in one line.

    [cluster]
    master = "10.0.0.1:9420"          # host:port of the master
    key_file = "/etc/vmstore/cluster.key"

    [client]
    host_label = "rack1-host3"       # this host's failure domain
    mount = "/var/lib/vmstore"       # where every host mounts the cluster

    [hosts.host2]                    # for `vmstore migrate` and friends, one per host
    libvirt = "qemu+ssh://root@host2/system"   # how this command reaches its libvirtd
    migration = "qemu+tcp://host2/system"      # how the other libvirtd reaches it
    label = "host2"                  # its vmstore host label (default: the name)

    [mount]                          # `vmstore mount` defaults; its flags override
    short_circuit_reads = true       # read replicas on this host from their files

    [master]                         # `vmstore master` defaults; its flags override
    data_dir = "/var/lib/vmstore-master"
    listen = "0.0.0.0:9420"
    metrics = "127.0.0.1:9430"       # Prometheus endpoint
    lease_expiry = 20                # seconds; also replication_delay, startup_grace
    # new_cluster = true             # an empty data_dir starts a new cluster (first start only)
    backup_dir = "/var/backups/vmstore"  # the master backs its metadata up there
    backup_interval = 3600           # seconds between backups
    backup_keep = 48                 # the newest backups kept

    [chunkserver]                    # `vmstore chunkserver` defaults (every disk)
    replication_mib_per_s = 200
    scrub_mib_per_s = 8
    quarantine_retention_hours = 24  # replicas the master deletes are kept this long

    [tls]                            # optional; see README "TLS"
    mode = "on"                      # off | on (TLS out, both in) | required
    ca_file = "/etc/vmstore/tls/ca.crt"
    cert_file = "/etc/vmstore/tls/host1.crt"
    key_file = "/etc/vmstore/tls/host1.key"

    [logging]                        # daemons and the mount; flags override
    level = "info"                   # debug | info | warning | error
    format = "text"                  # text (people, journald) | json (log pipelines)

    [[exports]]                      # the master's per-mount rules (cli.exports_config)
    clients = ["10.77.0.0/24", "127.0.0.1"]
    directory = "/guests"
    read_only = false
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmstore.cli.exports_config import exports_from
from vmstore.cli.log_setup import LOG_FORMATS, LOG_LEVELS
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.master.exports import ExportRule
from vmstore.dfs.migration.hosts import Fleet, MigrationHost
from vmstore.dfs.protocol.tls import TLS_MODES, TlsSettings

DEFAULT_CONFIG_PATH = Path("/etc/vmstore/vmstore.toml")
DEFAULT_MASTER_PORT = 9420
DEFAULT_MOUNT = "/var/lib/vmstore"
# [master] and [chunkserver] keys: the daemon's flag names, and the type each takes.
DAEMON_OPTION_TYPES: dict[str, dict[str, type]] = {
    "master": {"data_dir": Path, "listen": str, "metrics": str, "replication_delay": float,
               "startup_grace": float, "lease_expiry": float, "new_cluster": bool,
               "etcd": str, "etcd_prefix": str, "advertise": str},
    "chunkserver": {"replication_mib_per_s": float, "scrub_mib_per_s": float,
                    "quarantine_retention_hours": float},
}
# Scheduled metadata backups (dfs.master.backups): [master] backup_dir, backup_interval
# (seconds), backup_keep (files).
DAEMON_OPTION_TYPES["master"].update(backup_dir=Path, backup_interval=float, backup_keep=float)
_KNOWN = {"cluster": {"master", "key_file"}, "client": {"host_label", "mount"},
          "mount": {"short_circuit_reads"},
          "logging": {"level", "format"}, "tls": {"mode", "cert_file", "key_file", "ca_file"},
          **{section: set(types) for section, types in DAEMON_OPTION_TYPES.items()}}
_HOST_KEYS = {"libvirt", "migration", "label"}


@dataclass(frozen=True)
class Config:
    path: Path | None
    master_host: str
    master_port: int
    key_file: Path
    host_label: str
    mount: str = DEFAULT_MOUNT
    fleet: Fleet = Fleet()
    log_level: str = "info"
    log_format: str = "text"
    daemon_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: tuple[ExportRule, ...] = ()  # the master's rules; () lets everyone in read-write
    short_circuit_reads: bool = True  # [mount]: read replicas on this host from their files
    # [cluster] master may list an HA group's masters: the first is master_host:port.
    other_masters: tuple[tuple[str, int], ...] = ()


def add_master_argument(parser: argparse.ArgumentParser) -> None:
    """The --master flag every command that talks to a cluster takes."""
    parser.add_argument("--master", metavar="HOST:PORT",
                        help="the master, or an HA group's masters as HOST:PORT,HOST:PORT,..."
                        " (default: from the config file)")


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    # isdigit() alone lets "²" (int() refuses it) and other scripts' digits through.
    if (not sep or not host or "\0" in host or not (port_text.isascii() and port_text.isdigit())
            or not 0 <= int(port_text) <= 65535):
        raise ConfigError(f"{what}: {text!r} is not host:port")
    return host.strip("[]"), int(port_text)


def config_path() -> Path:
    return Path(os.environ.get("VMSTORE_CONFIG", DEFAULT_CONFIG_PATH))


def load_config(path: Path | None = None, *, master: str | None = None,
                key_file: str | None = None, need_master: bool = True) -> Config:
    """The config file with command-line overrides; the file may be absent if flags suffice."""
    path = path or config_path()
    data = _read(path)
    cluster = data.get("cluster", {})
    master_text = master or _text(path, cluster, "cluster", "master")
    host, port = "", 0
    other_masters: tuple[tuple[str, int], ...] = ()
    if master_text:
        # An HA group: "host:port,host:port,...", tried in turn.
        masters = [parse_address(text.strip(), f"{path} [cluster] master")
                   for text in master_text.split(",") if text.strip()]
        (host, port), other_masters = masters[0], tuple(masters[1:])
    elif need_master:
        raise ConfigError(f"no master address: pass --master or set [cluster] master in {path}")
    key_text = key_file or _text(path, cluster, "cluster", "key_file")
    if not key_text:
        raise ConfigError(f"no key file: pass --key-file or set [cluster] key_file in {path}")
    client = data.get("client", {})
    label = _text(path, client, "client", "host_label") or socket.gethostname()
    mount = _text(path, client, "client", "mount") if "mount" in client else DEFAULT_MOUNT
    if not mount.startswith("/"):
        raise ConfigError(f"{path}: [client] mount {mount!r} is not an absolute path")
    logging_section = data.get("logging", {})
    return Config(path if path.exists() else None, host, port, Path(key_text), str(label),
                  mount.rstrip("/") or "/", Fleet(_hosts(path, data.get("hosts", {}))),
                  log_level=_choice(path, logging_section, "level", LOG_LEVELS, "info"),
                  log_format=_choice(path, logging_section, "format", LOG_FORMATS, "text"),
                  daemon_options={section: _daemon_options(path, section, data.get(section, {}))
                                  for section in DAEMON_OPTION_TYPES},
                  exports=exports_from(path, data.get("exports", [])),
                  short_circuit_reads=_flag(path, data.get("mount", {}), "mount",
                                            "short_circuit_reads", True),
                  other_masters=other_masters)


def master_data_dir(path: Path | None = None) -> Path | None:
    """[master] data_dir of the config file (None if unset), for commands that read the
    master's files on its host; unlike ``load_config`` it needs no [cluster] key."""
    path = path or config_path()
    options = _daemon_options(path, "master", _read(path).get("master", {}))
    data_dir: Path | None = options.get("data_dir")
    return data_dir


def _flag(path: Path, section: dict[str, Any], name: str, key: str, default: bool) -> bool:
    """[name] key as a boolean; ``default`` when absent; any other TOML type is refused."""
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: [{name}] {key} {value!r} is not true or false")
    return value


def _daemon_options(path: Path, section: str, values: dict[str, Any]) -> dict[str, Any]:
    """[master] or [chunkserver], each value checked against the type its flag takes."""
    options: dict[str, Any] = {}
    for key, value in values.items():
        wanted = DAEMON_OPTION_TYPES[section][key]
        where = f"{path}: [{section}] {key}"
        if wanted is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} {value!r} is not true or false")
            options[key] = value
        elif wanted is float:
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ConfigError(f"{where} {value!r} is not a number >= 0")
            options[key] = float(value)
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"{where} {value!r} is not a non-empty string")
        elif wanted is Path:
            options[key] = Path(value)
        else:
            parse_address(value, where)
            options[key] = value
    return options


def _choice(path: Path, section: dict[str, Any], key: str, choices: tuple[str, ...],
            default: str) -> str:
    """[logging] KEY: one of ``choices``; ``default`` when absent."""
    value = section.get(key, default)
    if value not in choices:
        raise ConfigError(f"{path}: [logging] {key} {value!r} is not one of"
                          f" {', '.join(choices)}")
    return str(value)


def _read(path: Path) -> dict[str, Any]:
    """The file's sections, each known and a table; {} when there is no file."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise ConfigError(f"{path}: {error}") from None
    for section, values in data.items():
        if section == "hosts" and isinstance(values, dict):
            continue
        if section == "exports":
            continue  # an array of tables: exports_from checks it
        if section not in _KNOWN or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key in values:
            if key not in _KNOWN[section]:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
    return data


def load_tls_settings(path: Path | None = None) -> TlsSettings:
    """[tls] of the config file (mode off when there is no file or no section)."""
    path = path or config_path()
    section = _read(path).get("tls", {})
    mode = _text(path, section, "tls", "mode") or "off"
    if mode not in TLS_MODES:
        raise ConfigError(f"{path}: [tls] mode {mode!r} is not one of {', '.join(TLS_MODES)}")
    files = {key: Path(value) if (value := _text(path, section, "tls", key)) else None
             for key in ("cert_file", "key_file", "ca_file")}
    return TlsSettings(mode=mode, **files)


def _text(path: Path, section: dict[str, Any], name: str, key: str) -> str:
    """[name] key as a string ("" when absent); any other TOML type, or a NUL, is refused."""
    value = section.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{path}: [{name}] {key} must be a string, not {type(value).__name__}")
    if "\0" in value:
        raise ConfigError(f"{path}: [{name}] {key} {value!r} contains NUL")
    return value


def _hosts(path: Path, sections: dict[str, Any]) -> tuple[MigrationHost, ...]:
    hosts = []
    for name, values in sections.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [hosts.{name}] must be a table")
        unknown = set(values) - _HOST_KEYS
        if unknown:
            raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r} in [hosts.{name}]")
        if not isinstance(values.get("libvirt"), str):
            raise ConfigError(f"{path}: [hosts.{name}] needs libvirt = \"URI\"")
        hosts.append(MigrationHost(name=name, libvirt_uri=values["libvirt"],
                                migration_uri=str(values.get("migration", values["libvirt"])),
                                label=str(values.get("label", name))))
    return tuple(hosts)
