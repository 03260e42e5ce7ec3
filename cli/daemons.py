"""`vmstore master` and `vmstore chunkserver`: run a daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import Any

import trio

from vmstore.cli.config import (
    DEFAULT_MASTER_PORT,
    Config,
    add_master_argument,
    load_config,
    parse_address,
)
from vmstore.cli.log_setup import add_logging_arguments, setup_logging_from
from vmstore.dfs.chunkserver.main import ChunkserverSettings, run_chunkserver
from vmstore.dfs.constants import (
    BACKUP_INTERVAL_S,
    BACKUPS_KEPT,
    CLOCK_SKEW_S_MAX,
    DRAIN_POLL_INTERVAL_S,
    LEASE_EXPIRY_S,
    LEASE_EXPIRY_S_MIN,
    QUARANTINE_RETENTION_S,
    REPLICATION_BANDWIDTH_BYTES_PER_S,
    REPLICATION_DELAY_S,
    SCRUB_RATE_BYTES_PER_S,
)
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.master.backups import BackupSchedule
from vmstore.dfs.master.ha import run_ha_master
from vmstore.dfs.master.main import MasterSettings, run_master, run_until_signal
from vmstore.dfs.master.registry import STARTUP_GRACE_S
from vmstore.dfs.metrics import serve
from vmstore.dfs.protocol.auth import use_key_file

log = logging.getLogger(__name__)
# What a flag not given takes when the config's [master] / [chunkserver] has no value.
MASTER_DEFAULTS: dict[str, Any] = {
    "data_dir": None, "listen": f"0.0.0.0:{DEFAULT_MASTER_PORT}", "metrics": None,
    "replication_delay": REPLICATION_DELAY_S, "startup_grace": STARTUP_GRACE_S,
    "lease_expiry": LEASE_EXPIRY_S, "new_cluster": False, "etcd": None,
    "etcd_prefix": "/vmstore/", "advertise": None}
MASTER_DEFAULTS.update(backup_dir=None, backup_interval=BACKUP_INTERVAL_S,
                       backup_keep=BACKUPS_KEPT)
CHUNKSERVER_DEFAULTS: dict[str, Any] = {
    "replication_mib_per_s": REPLICATION_BANDWIDTH_BYTES_PER_S / 2**20,
    "scrub_mib_per_s": SCRUB_RATE_BYTES_PER_S / 2**20,
    "quarantine_retention_hours": QUARANTINE_RETENTION_S / 3600}


def fill_from_config(args: argparse.Namespace, config: Config, section: str,
                     defaults: dict[str, Any]) -> None:
    """Flags not given take the config file's [section] value, else the built-in default."""
    from_file = config.daemon_options.get(section, {})
    for name, default in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, from_file.get(name, default))


def _write_ready_file(path: str | None, host: str, fixed_port: int | None = None) -> Any:
    def on_started(started_port: int | None) -> None:
        port = fixed_port if fixed_port is not None else started_port
        if path:
            temporary = Path(path + ".tmp")
            temporary.write_text(f"{host}:{port}\n")
            temporary.rename(path)  # readers never see half a line

    return on_started


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any"
                        " free port, logged); off unless given")


def serve_metrics(address: str | None) -> None:
    """Start the /metrics endpoint if asked; the address bound goes to the log."""
    if address:
        host, port = parse_address(address, "--metrics")
        bound = serve(host, port)
        log.info("serving metrics at http://%s:%d/metrics", host, bound)


def add_daemon_arguments(parser: argparse.ArgumentParser) -> None:
    add_metrics_argument(parser)
    parser.add_argument("--data-dir", type=Path, help="where this daemon keeps its data")
    parser.add_argument("--key-file", help="cluster key file (default: from the config file)")
    parser.add_argument("--ready-file", help="write HOST:PORT here once serving (for scripts)")
    add_logging_arguments(parser)


def run_master_command(args: argparse.Namespace) -> int:
    config = load_config(key_file=args.key_file, need_master=False)
    fill_from_config(args, config, "master", MASTER_DEFAULTS)
    if args.data_dir is None:
        raise ConfigError("vmstore master needs --data-dir (or [master] data_dir in the"
                          " config file)")
    if args.lease_expiry < LEASE_EXPIRY_S_MIN:
        raise ConfigError(f"lease expiry {args.lease_expiry:g}: at least"
                          f" {LEASE_EXPIRY_S_MIN:g} s (write tokens live"
                          f" {CLOCK_SKEW_S_MAX:g} s less)")
    setup_logging_from(args, config.log_level, config.log_format)
    host, port = parse_address(args.listen, "--listen")
    endpoints = tuple(url.strip() for url in (args.etcd or "").split(",") if url.strip())
    if endpoints and port == 0:
        raise ConfigError("an HA master (--etcd) needs a fixed --listen port: clients and"
                          " chunkservers find it in their list of masters")
    advertise = args.advertise or f"{host}:{port}"
    settings = MasterSettings(data_dir=args.data_dir, listen_host=host, port=port,
                              key=use_key_file(config.key_file),
                              replication_delay_s=args.replication_delay,
                              startup_grace_s=args.startup_grace,
                              lease_expiry_s=args.lease_expiry, exports=config.exports,
                              backups=backup_schedule(args),
                              new_cluster=args.new_cluster, etcd_endpoints=endpoints,
                              etcd_prefix=args.etcd_prefix, advertise=advertise)
    serve_metrics(args.metrics)
    if endpoints:
        # A standby has no port to report: the ready file says it joined the group.
        trio.run(lambda: run_until_signal(run_ha_master, settings,
                                          on_started=_write_ready_file(args.ready_file, host,
                                                                       port)))
        return 0
    trio.run(lambda: run_until_signal(run_master, settings,
                                      on_started=_write_ready_file(args.ready_file, host)))
    return 0


def backup_schedule(args: argparse.Namespace) -> BackupSchedule | None:
    """[master] backup_dir / --backup-dir and friends; None when no directory is given."""
    if args.backup_dir is None:
        return None
    if args.backup_interval < 1:
        raise ConfigError(f"backup interval {args.backup_interval:g}: at least 1 s")
    if args.backup_keep < 1 or args.backup_keep != int(args.backup_keep):
        raise ConfigError(f"backups to keep {args.backup_keep:g}: a whole number >= 1")
    if not Path(args.backup_dir).is_dir():
        raise ConfigError(f"backup directory {args.backup_dir} does not exist")
    return BackupSchedule(Path(args.backup_dir), float(args.backup_interval),
                          int(args.backup_keep))


def run_chunkserver_command(args: argparse.Namespace) -> int:
    if args.action is not None:
        return run_drain(args)
    if args.data_dir is None:
        raise ConfigError("vmstore chunkserver needs --data-dir (or: drain|undrain ID)")
    config = load_config(master=args.master, key_file=args.key_file)
    fill_from_config(args, config, "chunkserver", CHUNKSERVER_DEFAULTS)
    setup_logging_from(args, config.log_level, config.log_format)
    host, port = parse_address(args.listen, "--listen")
    settings = ChunkserverSettings(
        data_dir=args.data_dir, listen_host=host, port=port, master_host=config.master_host,
        master_port=config.master_port, other_masters=config.other_masters,
        key=use_key_file(config.key_file),
        host_label=args.host_label or config.host_label or socket.gethostname(),
        advertise_host=args.advertise or host,
        replication_bandwidth_bytes_per_s=args.replication_mib_per_s * 2**20,
        scrub_rate_bytes_per_s=args.scrub_mib_per_s * 2**20,
        quarantine_retention_s=args.quarantine_retention_hours * 3600)
    serve_metrics(args.metrics)
    trio.run(lambda: run_until_signal(run_chunkserver, settings,
                                      on_started=_write_ready_file(args.ready_file, host)))
    return 0


async def _wait_drained(client: Any, server_id: int) -> None:
    """Until the chunkserver holds no replica, with a progress line."""
    from vmstore.dfs.progress import ProgressDisplay

    display = ProgressDisplay()
    while True:
        status = await client.status()
        server = next((s for s in status.chunkservers if s.id == server_id), None)
        if server is None:
            raise ConfigError(f"no chunkserver {server_id}")
        if server.replicas == 0:
            display.finish()
            return
        rate = status.healing.copied_bytes_per_s if status.healing else 0.0
        display.show(f"chunkserver {server_id}: {server.replicas} replicas left,"
                     f" copying at {rate / 2**20:,.0f} MiB/s")
        await trio.sleep(DRAIN_POLL_INTERVAL_S)


def run_drain(args: argparse.Namespace) -> int:
    from vmstore.cli.cluster_client import with_client
    from vmstore.dfs.protocol import messages as m

    if args.server_id is None:
        raise ConfigError(f"vmstore chunkserver {args.action} needs a chunkserver ID")
    draining = args.action == "drain"

    async def drain(client: Any) -> None:
        await client.master.call(m.ClientToMasterDrain(server_id=args.server_id,
                                                       draining=draining),
                                 reply_type=m.EmptyReply)
        if draining and args.wait:
            await _wait_drained(client, args.server_id)

    with_client(args.master, drain, role="admin")
    if draining and args.wait:
        print(f"chunkserver {args.server_id} is drained: it holds no replica; stop it now")
    elif draining:
        print(f"chunkserver {args.server_id} is draining: its replicas are being copied to"
              " other hosts; `vmstore status` shows when it holds nothing that is needed")
    else:
        print(f"chunkserver {args.server_id} takes new chunks again")
    return 0


def register(subparsers: Any) -> None:
    master = subparsers.add_parser("master", help="run the metadata master",
                                   description="Run the metadata master in the foreground.",
                                   epilog="example: vmstore master --data-dir"
                                   " /var/lib/vmstore-master --listen 0.0.0.0:9420"
                                   " [--new-cluster: the first start only]")
    add_daemon_arguments(master)
    master.add_argument("--listen",
                        help="HOST:PORT to serve on (port 0: any free port; default"
                        f" {MASTER_DEFAULTS['listen']})")
    master.add_argument("--replication-delay", type=float,
                        metavar="SECONDS", help="rebuild the replicas of a chunkserver down"
                        f" this long (default {REPLICATION_DELAY_S:g})")
    master.add_argument("--startup-grace", type=float,
                        metavar="SECONDS", help="after a restart, time for chunkservers to"
                        f" re-register before their replicas count as missing"
                        f" (default {STARTUP_GRACE_S:g})")
    master.add_argument("--lease-expiry", type=float,
                        metavar="SECONDS", help="a client silent this long loses its write"
                        " leases, and another host may write its files; its write tokens"
                        f" expire {CLOCK_SKEW_S_MAX:g} s earlier (default {LEASE_EXPIRY_S:g})")
    master.add_argument("--etcd", metavar="URL[,URL...]",
                        help="metadata HA: etcd client URLs (e.g. http://10.0.0.1:2379,...)."
                        " Masters started with the same etcd and --etcd-prefix form one group:"
                        " one leads, the others follow its journal and take over")
    master.add_argument("--etcd-prefix", metavar="PREFIX",
                        help="this cluster's keys in etcd (default /vmstore/)")
    master.add_argument("--advertise", metavar="HOST:PORT",
                        help="HA: the address clients reach this master at (default: --listen)")
    master.add_argument("--backup-dir", type=Path, metavar="DIR",
                        help="take scheduled backups of the metadata into DIR (off unless"
                        " given); `vmstore status` warns when the newest is overdue")
    master.add_argument("--backup-interval", type=float, metavar="SECONDS",
                        help=f"time between scheduled backups (default {BACKUP_INTERVAL_S:g})")
    master.add_argument("--backup-keep", type=float, metavar="N",
                        help=f"scheduled backups kept, the newest (default {BACKUPS_KEPT})")
    master.add_argument("--new-cluster", action="store_true", default=None,
                        help="if --data-dir holds no metadata, create a new cluster there"
                        " (without it such a master refuses to start, so that a wrong path"
                        " or a lost disk never meets the chunkservers as an empty cluster);"
                        " ignored when the metadata exists")
    master.set_defaults(handler=run_master_command)

    chunkserver = subparsers.add_parser(
        "chunkserver", help="run a chunkserver for one disk, or drain one",
        description="Run a chunkserver in the foreground, storing replicas under --data-dir;"
        " or `drain ID` to copy every replica of chunkserver ID elsewhere before removing"
        " it (`undrain ID` to stop).",
        epilog="examples: vmstore chunkserver --data-dir /srv/disk1 --master 10.0.0.1:9420\n"
        "          vmstore chunkserver drain 3")
    chunkserver.add_argument("action", nargs="?", choices=["drain", "undrain"])
    chunkserver.add_argument("server_id", nargs="?", type=int, metavar="ID")
    chunkserver.add_argument("--wait", action="store_true",
                             help="drain: wait until it holds no replica, showing progress")
    add_daemon_arguments(chunkserver)
    chunkserver.add_argument("--listen", default="0.0.0.0:9422",
                             help="HOST:PORT for data traffic")
    chunkserver.add_argument("--advertise", help="address clients use to reach us"
                             " (default: the --listen host)")
    add_master_argument(chunkserver)
    chunkserver.add_argument("--host-label", help="failure domain (default: the hostname)")
    chunkserver.add_argument("--replication-mib-per-s", type=float,
                             help="bandwidth for copying chunks here (default"
                             f" {CHUNKSERVER_DEFAULTS['replication_mib_per_s']:g})")
    chunkserver.add_argument("--scrub-mib-per-s", type=float,
                             help="background checksum verification rate; 0 turns it off"
                             f" (default {CHUNKSERVER_DEFAULTS['scrub_mib_per_s']:g})")
    chunkserver.add_argument("--quarantine-retention-hours", type=float,
                             help="replicas the master deletes are kept this long in the data"
                             " directory's quarantine/ (vmstore quarantine), unless space runs"
                             " short (default"
                             f" {CHUNKSERVER_DEFAULTS['quarantine_retention_hours']:g})")
    chunkserver.set_defaults(handler=run_chunkserver_command)
