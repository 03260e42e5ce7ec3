"""`vmstore metadata backup|inspect|restore`: the master's metadata file, on its host.

None of them talks to the master: backup and inspect read its database file
directly, read-only, while it runs (``dfs.metadata.backup``,
``dfs.metadata.inspection``); restore writes one while no master runs on it
(``dfs.metadata.restore``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vmstore.cli.config import master_data_dir
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.metadata.backup import backup_metadata
from vmstore.dfs.metadata.inspection import MetadataSummary, inspect_metadata
from vmstore.dfs.metadata.restore import METADATA_FILE_NAME, restore_metadata


def master_metadata(data_dir: Path | None) -> Path:
    """The master's database: --data-dir, else [master] data_dir of the config file."""
    directory = data_dir or master_data_dir()
    if directory is None:
        raise ConfigError("where is the master's metadata? pass --data-dir (or set [master]"
                          " data_dir in the config file)")
    return directory / METADATA_FILE_NAME


def summary_text(summary: MetadataSummary) -> str:
    generation = "?" if summary.generation is None else str(summary.generation)
    lines = [f"{summary.path}: {summary.size_bytes:,} bytes",
             f"  schema version  {summary.schema_version or '?'}",
             f"  cluster id      {summary.cluster_id or '?'}",
             f"  generation      {generation}",
             "  rows:"]
    width = max((len(name) for name in summary.table_rows), default=0)
    lines.extend(f"    {name:<{width}}  {rows:>12,}" for name, rows in summary.table_rows.items())
    lines.extend(f"  SCHEMA  {difference}" for difference in summary.schema_differences)
    return "\n".join(lines)


def _show(summary: MetadataSummary, as_json: bool) -> None:
    print(json.dumps(asdict(summary), indent=2) if as_json else summary_text(summary))


def run_backup(args: argparse.Namespace) -> int:
    summary = backup_metadata(master_metadata(args.data_dir), Path(args.to))
    if args.json:
        _show(summary, as_json=True)
    else:
        print(f"backed up metadata of cluster {summary.cluster_id} (generation"
              f" {summary.generation}, {summary.table_rows.get('inodes', 0):,} inodes)"
              f" to {summary.path}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else master_metadata(args.data_dir)
    summary = inspect_metadata(path)
    _show(summary, args.json)
    return 1 if summary.schema_differences else 0


def run_restore(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or master_data_dir()
    if data_dir is None:
        raise ConfigError("restore where? pass --data-dir (or set [master] data_dir in the"
                          " config file)")
    result = restore_metadata(Path(args.source), data_dir, force=args.force)
    backup = result.backup
    print(f"restored metadata of cluster {backup.cluster_id} from {backup.path}"
          f" ({backup.table_rows.get('inodes', 0):,} inodes, backup generation"
          f" {backup.generation}) to {result.database} at generation {result.generation}")
    if result.replaced is not None:
        print(f"the metadata it replaced is kept as {result.replaced}")
    print("start the master on it; changes made after the backup are lost")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "metadata", help="back up, inspect or restore the master's metadata (on its host)",
        description="Read the master's metadata database directly, read-only, while the"
        " master runs. The master's data dir is --data-dir, or [master] data_dir in the"
        " config file.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    backup = actions.add_parser(
        "backup", help="a consistent copy of the running master's metadata",
        description="Copy the metadata through SQLite's online backup API: one snapshot of"
        " every committed change, taken without stopping the master. The copy is checked,"
        " fsynced and renamed into place, so FILE is never half written.",
        epilog="example: vmstore metadata backup --to /backup/metadata-$(date +%F).db")
    backup.add_argument("--to", required=True, metavar="FILE", help="where the copy goes"
                        " (replaced if it exists)")
    backup.add_argument("--data-dir", type=Path, help="the master's data dir")
    backup.add_argument("--json", action="store_true", help="the copy's summary as JSON")
    backup.set_defaults(handler=run_backup)

    inspect = actions.add_parser(
        "inspect", help="what a metadata file holds: schema, cluster id, generation, rows",
        description="Show a metadata file's schema version, cluster id, generation and"
        " row counts, opened read-only (a live master's file is never changed). Exit code 1"
        " if its tables differ from this vmstore's schema.",
        epilog="examples: vmstore metadata inspect;"
        " vmstore metadata inspect /backup/metadata.db --json | jq .table_rows")
    source = inspect.add_mutually_exclusive_group()
    source.add_argument("file", nargs="?", metavar="FILE",
                        help="a metadata file, such as a backup")
    source.add_argument("--data-dir", type=Path, help="the master's data dir")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=run_inspect)

    restore = actions.add_parser(
        "restore", help="put a backup back as the master's metadata (master stopped)",
        description="Check a backup (integrity_check, schema, cluster id), then make it the"
        " metadata of the master's data dir, with its generation moved past any the"
        " chunkservers have seen (so they accept the master) and its id counters skipped"
        " forward. Refused while a process holds the data dir's database open (a master"
        " running), and where metadata exists unless --force (the old file is kept,"
        " renamed). Every change made after the backup is lost.",
        epilog="example: vmstore metadata restore --from /backup/metadata-20261203T0400Z.db"
        " --data-dir /var/lib/vmstore-master")
    restore.add_argument("--from", dest="source", required=True, metavar="FILE",
                         help="the backup (vmstore metadata backup, or a scheduled one)")
    restore.add_argument("--data-dir", type=Path, help="the master's data dir")
    restore.add_argument("--force", action="store_true",
                         help="replace metadata already there (kept beside it, renamed)")
    restore.set_defaults(handler=run_restore)
