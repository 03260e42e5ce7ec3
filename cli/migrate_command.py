"""`vmstore migrate`, `evacuate`, `failover` and `guests`: moving guests between hosts."""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import asdict
from typing import Any

from vmstore.cli.config import Config, add_master_argument, load_config
from vmstore.dfs.constants import FAILOVER_COMMAND_WAIT_S
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.migration.hosts import ClusterAccess
from vmstore.dfs.protocol.auth import use_key_file


def _access(config: Config) -> ClusterAccess:
    return ClusterAccess(config.master_host, config.master_port, use_key_file(config.key_file),
                         config.mount, config.host_label, config.other_masters)


def _options(args: argparse.Namespace) -> Any:
    from vmstore.dfs.migration.coordinator import MigrationOptions

    return MigrationOptions(max_downtime_ms=args.max_downtime, bandwidth_mib_per_s=args.bandwidth,
                            on_stall=args.on_stall, stall_after_s=args.stall_after,
                            offline=args.offline, copy_storage=args.copy_storage,
                            trust_ownership=args.trust_ownership)


def _require_libvirt() -> None:
    """The coordinator's modules import libvirt; say how to get it rather than crash."""
    if importlib.util.find_spec("libvirt") is None:
        raise ConfigError("libvirt-python is not installed: pip install 'vmstore[migration]'"
                          " (it needs libvirt-dev and pkg-config to build)")


def run_migrate(args: argparse.Namespace) -> int:
    config = load_config(master=args.master)
    _require_libvirt()
    from vmstore.dfs.migration.coordinator import migrate
    report = migrate(_access(config), config.fleet, args.guest, args.to, args.source,
                     _options(args))
    print(json.dumps(asdict(report), indent=2) if args.json else report.text())
    return 0 if report.outcome == "moved" else 1


def run_evacuate(args: argparse.Namespace) -> int:
    config = load_config(master=args.master)
    _require_libvirt()
    from vmstore.dfs.migration.fleet import evacuate
    from vmstore.dfs.progress import ProgressDisplay
    reports = evacuate(_access(config), config.fleet, args.host, _options(args),
                       ProgressDisplay())
    moved = sum(1 for report in reports if report.outcome == "moved")
    if args.json:
        print(json.dumps([asdict(report) for report in reports], indent=2))
    else:
        print(f"{args.host}: {moved} of {len(reports)} guests moved")
    return 0 if moved == len(reports) else 1


def run_failover(args: argparse.Namespace) -> int:
    config = load_config(master=args.master)
    _require_libvirt()
    from vmstore.dfs.migration.fleet import failover
    from vmstore.dfs.progress import ProgressDisplay
    results = failover(_access(config), config.fleet, args.host, fenced=args.fenced,
                       wait_s=args.wait, display=ProgressDisplay())
    restarted = sum(1 for result in results if result.destination)
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
    else:
        print(f"{args.host}: {restarted} of {len(results)} guests restarted elsewhere")
    return 0 if restarted == len(results) else 1


def run_guests(args: argparse.Namespace) -> int:
    config = load_config(master=args.master)
    _require_libvirt()
    from vmstore.dfs.migration.cluster_view import GuestRecords
    from vmstore.dfs.migration.fleet import record
    from vmstore.dfs.progress import ProgressDisplay
    if args.action == "record":
        records = record(_access(config), config.fleet, ProgressDisplay())
    else:
        records = GuestRecords(_access(config)).load()
    if args.json:
        print(json.dumps([{"name": r.name, "host": r.host, "running": r.running}
                          for r in records], indent=2))
    else:
        for r in sorted(records, key=lambda r: (r.host, r.name)):
            print(f"{r.name:<24} {r.host:<16} {'running' if r.running else 'defined'}")
    return 0


def _add_move_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-downtime", type=int, metavar="MS",
                        help="longest pause allowed at the switch-over (libvirt's default"
                        " otherwise)")
    parser.add_argument("--bandwidth", type=int, metavar="MIB_PER_S",
                        help="cap on the memory copy rate")
    parser.add_argument("--on-stall", default="pause",
                        choices=["pause", "postcopy", "auto-converge", "abort"],
                        help="when the guest dirties memory faster than it moves: pause it"
                        " and finish offline (default), switch to post-copy, throttle its"
                        " CPUs from the start, or give up and leave it on the source")
    parser.add_argument("--stall-after", type=float, default=30.0, metavar="SECONDS",
                        help="how long a live copy may run before --on-stall applies"
                        " (default 30)")
    parser.add_argument("--offline", action="store_true",
                        help="pause the guest first and move it paused (resumed after)")
    parser.add_argument("--copy-storage", action="store_true",
                        help="copy disks that are not on vmstore (vmstore disks never are)")
    parser.add_argument("--trust-ownership", action="store_true",
                        help="the hosts' libvirt does not chown images (dynamic_ownership=0"
                        " or shared_filesystems): skip that check")
    parser.add_argument("--json", action="store_true")
    add_master_argument(parser)


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "migrate", help="live-migrate a guest; only its memory crosses the wire",
        description="Move a running guest to another host that mounts the same vmstore"
        " cluster at the same path. Its disks stay where they are; the destination's first"
        " write takes each image's write lease, which fences the source. Hosts are names"
        " from [hosts.NAME] in the config, or libvirt URIs. Ctrl-C aborts and leaves the"
        " guest running on the source.",
        epilog="examples:\n  vmstore migrate web1 --to host2\n"
        "  vmstore migrate web1 --to qemu+ssh://root@host2/system --max-downtime 300\n"
        "exit status: 0 moved, 1 refused or failed (the guest keeps running on the source)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    migrate.add_argument("guest", help="libvirt domain name")
    migrate.add_argument("--to", required=True, metavar="DEST", help="destination host")
    migrate.add_argument("--from", dest="source", metavar="SRC",
                         help="source host (default: the configured host running it)")
    _add_move_options(migrate)
    migrate.set_defaults(handler=run_migrate)

    evacuate = subparsers.add_parser(
        "evacuate", help="live-migrate every guest off a host (maintenance)",
        description="Move every running guest of HOST, biggest first, each to the"
        " configured host with the most free memory that passes the checks.",
        epilog="example: vmstore evacuate host1\nexit status: 0 all moved, 1 some stayed",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    evacuate.add_argument("host")
    _add_move_options(evacuate)
    evacuate.set_defaults(handler=run_evacuate)

    failover = subparsers.add_parser(
        "failover", help="restart a dead host's guests elsewhere, once it is fenced",
        description="For a host that died or was cut off: wait until the master has"
        " expired its write leases (so a copy still running there can write nothing), then"
        " start its recorded guests (vmstore guests record) on the other hosts.",
        epilog="examples:\n  vmstore failover host1\n  vmstore failover host1 --fenced"
        "    # it is powered off: do not wait\nexit status: 0 all restarted, 1 otherwise",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    failover.add_argument("host")
    failover.add_argument("--fenced", action="store_true",
                          help="the host is powered off: break its leases now")
    failover.add_argument("--wait", type=float, default=FAILOVER_COMMAND_WAIT_S, metavar="SECONDS",
                          help="give up if its leases are still held after this long"
                          f" (default {FAILOVER_COMMAND_WAIT_S:g})")
    failover.add_argument("--json", action="store_true")
    add_master_argument(failover)
    failover.set_defaults(handler=run_failover)

    guests = subparsers.add_parser(
        "guests", help="record or list the guests of every configured host",
        description="`record` saves every configured host's guest definitions and where"
        " they run on the cluster itself (run it from a timer): failover needs them when"
        " a host is dead. `list` shows the records.",
        epilog="example: vmstore guests record")
    guests.add_argument("action", choices=["record", "list"])
    guests.add_argument("--json", action="store_true")
    add_master_argument(guests)
    guests.set_defaults(handler=run_guests)
