"""What exact coherence between hosts costs metadata (issue 18 part 2), measured.

Runs a metadata loop through mount A of a local cluster while a second mount B
(another host label) is up and has looked at the same directory, once for each
code tree given (e.g. a worktree of the commit before, and this tree), in one
run, and prints the median microseconds per operation of each:

    git worktree add /tmp/before <commit>
    python3 deploy/bench/metadata_coherence_bench.py --dir /tmp/mcb \\
        --tree before=/tmp/before --tree after=/work/main

A tree is imported first on PYTHONPATH (through a vmstore/ package of
symlinks), so each cluster and its mounts run that tree's code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

LOOP = r"""
import json, os, statistics, sys, time
root, rounds = sys.argv[1], int(sys.argv[2])
times = {k: [] for k in ("create_write_close", "stat", "open_fstat_read_close", "chmod",
                         "rename", "unlink", "mkdir_rmdir")}
def timed(name, fn):
    t = time.perf_counter(); fn(); times[name].append((time.perf_counter() - t) * 1e6)
def create(path):
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
def read(path):
    with open(path, "rb") as f:
        os.fstat(f.fileno()); f.read()
for i in range(rounds):
    p, q, d = f"{root}/f{i}", f"{root}/g{i}", f"{root}/d{i}"
    timed("create_write_close", lambda: create(p))
    timed("stat", lambda: os.stat(p))
    timed("open_fstat_read_close", lambda: read(p))
    timed("chmod", lambda: os.chmod(p, 0o600))
    timed("rename", lambda: os.rename(p, q))
    timed("unlink", lambda: os.unlink(q))
    timed("mkdir_rmdir", lambda: (os.mkdir(d), os.rmdir(d)))
print(json.dumps({k: statistics.median(v) for k, v in times.items()}))
"""


def package_for(tree: Path, into: Path) -> Path:
    """A directory holding vmstore/ -> tree's dfs, fuse, cli: put first on PYTHONPATH."""
    package = into / "vmstore"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").touch()
    for part in ("dfs", "fuse", "cli"):
        link = package / part
        if not link.exists():
            link.symlink_to(tree / part)
    return into


def run_tree(name: str, tree: Path, work: Path, rounds: int) -> dict[str, float]:
    directory = work / name
    shutil.rmtree(directory, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(package_for(tree, work / f"{name}-path"))}
    cli = [sys.executable, "-m", "vmstore.cli.main"]
    subprocess.run([*cli, "local", "up", "--dir", str(directory), "--mount",
                    str(directory / "a")], check=True, env=env, capture_output=True,
                   timeout=120)
    env["VMSTORE_CONFIG"] = str(directory / "vmstore.toml")
    try:
        (directory / "b").mkdir()
        subprocess.run([*cli, "mount", str(directory / "b"), "--host-label", "local1",
                        "--log-file", str(directory / "mount-b.log")], check=True, env=env,
                       capture_output=True, timeout=120)
        (directory / "a" / "work").mkdir()
        os.listdir(directory / "b" / "work")  # B has looked at the directory
        loop = subprocess.run([sys.executable, "-c", LOOP, str(directory / "a" / "work"),
                               str(rounds)], check=True, capture_output=True, text=True,
                              timeout=600)
        result: dict[str, float] = json.loads(loop.stdout)
        return result
    finally:
        subprocess.run([*cli, "umount", str(directory / "b")], env=env, capture_output=True,
                       timeout=120)
        subprocess.run([*cli, "local", "down", "--dir", str(directory)], env=env,
                       capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="work directory")
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a source tree to measure (repeat; measured in this order)")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2, help="alternate the trees this often")
    args = parser.parse_args()
    trees = [(spec.split("=", 1)[0], Path(spec.split("=", 1)[1])) for spec in args.tree]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    started = time.monotonic()
    for _ in range(args.repeat):
        for name, tree in trees:
            results[name].append(run_tree(name, tree, args.dir, args.rounds))
    operations = list(next(iter(results.values()))[0])
    print(f"median µs per operation, {args.rounds} rounds x {args.repeat} runs"
          f" (median of the runs' medians), {time.monotonic() - started:.0f} s")
    print("| operation | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for operation in operations:
        cells = [f"{statistics.median(run[operation] for run in runs):.0f}"
                 for runs in results.values()]
        print(f"| {operation} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
