"""Small-file metadata through a real mount (issue 18 part 3), measured.

For each code tree given, in one run (alternating ``--repeat`` times), starts
a local cluster of that tree (`vmstore local up`'s layout: master, three
chunkservers, a mount; the master serving Prometheus metrics), then runs
through the mount:

* ``create_write_close_unlink``: N x (open O_CREAT|O_WRONLY, write 4 KiB,
  close, unlink);
* ``creat_unlink``: N x (creat, close, unlink), a stress tool's start-up probe;

and prints, per workload and tree, files a second and, per file:

* the master's round trips by request (``vmstore_master_request_seconds_count``);
* its SQLite commits (``vmstore_master_commits_total``) and the fsyncs that
  made commits durable (``vmstore_master_metadata_syncs_total``; before lazy
  namespace commits, every commit was one); ``-`` for a tree without them;
* the kernel's requests to the mount by FUSE operation
  (``vmstore_mount_operation_seconds_count``);
* with each request, the milliseconds spent answering it per file (``... ms``:
  the master's time, the mount's time):

    git worktree add /tmp/before <commit>
    python3 deploy/bench/metadata_bench.py --dir /tmp/mdb \\
        --tree before=/tmp/before --tree after=/work/main

A tree is imported first on PYTHONPATH (through a vmstore/ package of
symlinks), so each cluster and its mount run that tree's code.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

# This script's folder is first on sys.path when it runs.
from metadata_coherence_bench import package_for

WRITE_BYTES = 4096
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
METRICS_ENDPOINT = re.compile(r"serving metrics at (http://\S+/metrics)")
# `vmstore local up`, with the master's and the mount's metrics served.
UP = """
import sys
from pathlib import Path
from vmstore.cli.local_cluster import local_up, spawn, wait_ready
directory = Path(sys.argv[1])
master = local_up(directory, 3, None, master_flags=("--metrics", "127.0.0.1:0"))
(directory / "mnt").mkdir()
ready = spawn(directory, "mount", ["mount", "--foreground", str(directory / "mnt"), "--master",
              master, "--key-file", str(directory / "cluster.key"), "--host-label", "local0",
              "--metrics", "127.0.0.1:0"], environment={"VMSTORE_CONFIG": str(directory /
              "vmstore.toml")})
wait_ready(ready, "mount", directory)
"""
UP_TIMEOUT_S = 180
METRICS_TIMEOUT_S = 10


def scrape(urls: dict[str, str]) -> dict[str, float]:
    """The master's request counts by request and its commit count; the mount's kernel
    requests by FUSE operation (each process registers every part's metrics: each
    is read from its own process only)."""
    return {key: value for daemon, url in urls.items()
            for key, value in _scrape(url).items() if key.startswith("kernel ")
            == (daemon == "mount")}


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT_S) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        sample = SAMPLE.match(line)
        if sample is None:
            continue
        name, value = sample["name"], float(sample["value"])
        if name.startswith("vmstore_master_request_seconds_"):
            request = re.search(r'request="([^"]*)"', sample["labels"] or "")
            if request is not None and name.endswith("_count"):
                counts[request[1]] = value
            elif request is not None and name.endswith("_sum"):
                counts[f"{request[1]} ms"] = value * 1000
        elif name.startswith("vmstore_mount_operation_seconds_"):
            operation = re.search(r'operation="([^"]*)"', sample["labels"] or "")
            if operation is not None and name.endswith("_count"):
                counts[f"kernel {operation[1]}"] = value
            elif operation is not None and name.endswith("_sum"):
                counts[f"kernel {operation[1]} ms"] = value * 1000
        elif name == "vmstore_master_commits_total":
            counts["(commits)"] = value
        elif name == "vmstore_master_metadata_syncs_total":
            counts["(metadata fsyncs)"] = value
    return counts


def create_write_close_unlink(path: str) -> None:
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(descriptor, b"x" * WRITE_BYTES)
    finally:
        os.close(descriptor)
    os.unlink(path)


def creat_unlink(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
    os.unlink(path)


WORKLOADS: dict[str, Callable[[str], None]] = {
    "create_write_close_unlink": create_write_close_unlink,
    "creat_unlink": creat_unlink,
}


def measure(work: Path, urls: dict[str, str], files: int) -> dict[str, dict[str, float]]:
    """Per workload: files/s and, per file, round trips by request and commits."""
    results: dict[str, dict[str, float]] = {}
    for name, workload in WORKLOADS.items():
        directory = work / name
        directory.mkdir()
        for index in range(min(20, files)):  # warm: connections, caches, the first chunk
            workload(f"{directory}/warm{index}")
        before = scrape(urls)
        started = time.perf_counter()
        for index in range(files):
            workload(f"{directory}/f{index}")
        elapsed_s = time.perf_counter() - started
        after = scrape(urls)
        per_file = {key: (after[key] - before.get(key, 0.0)) / files for key in after
                    if after[key] != before.get(key, 0.0)}
        results[name] = {"files/s": files / elapsed_s, **per_file}
    return results


def run_tree(name: str, tree: Path, work: Path, files: int) -> dict[str, dict[str, float]]:
    directory = work / name
    shutil.rmtree(directory, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(package_for(tree, work / f"{name}-path"))}
    subprocess.run([sys.executable, "-c", UP, str(directory)], check=True, env=env,
                   capture_output=True, timeout=UP_TIMEOUT_S)
    try:
        urls = {}
        for daemon in ("master", "mount"):
            found = METRICS_ENDPOINT.search((directory / "logs" / f"{daemon}.log").read_text())
            assert found is not None, f"{directory}/logs/{daemon}.log names no metrics endpoint"
            urls[daemon] = found[1]
        (directory / "mnt" / "work").mkdir()
        return measure(directory / "mnt" / "work", urls, files)
    finally:
        subprocess.run([sys.executable, "-m", "vmstore.cli.main", "local", "down", "--dir",
                        str(directory)], env=env, capture_output=True, timeout=UP_TIMEOUT_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="work directory")
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=PATH",
                        help="a source tree to measure (repeat; measured in this order)")
    parser.add_argument("--files", type=int, default=500, help="files per workload")
    parser.add_argument("--repeat", type=int, default=2, help="alternate the trees this often")
    args = parser.parse_args()
    trees = [(spec.split("=", 1)[0], Path(spec.split("=", 1)[1]).resolve())
             for spec in args.tree]
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name, _ in trees}
    started = time.monotonic()
    for _ in range(args.repeat):
        for name, tree in trees:
            runs[name].append(run_tree(name, tree, args.dir, args.files))
    print(f"{args.files} files per workload x {args.repeat} runs (median of the runs),"
          f" {time.monotonic() - started:.0f} s")
    for workload in WORKLOADS:
        print(f"\n{workload}\n")
        keys = sorted({key for results in runs.values() for run in results
                       for key in run[workload]}, key=lambda k: (k != "files/s", k))
        print("| per file | " + " | ".join(runs) + " |")
        print("|---|" + "---:|" * len(runs))
        for key in keys:
            cells = []
            for results in runs.values():
                values = [run[workload].get(key, 0.0) for run in results]
                if key.startswith("(") and not any(key in run[workload] for run in results):
                    cells.append("-")
                else:
                    cells.append(f"{statistics.median(values):.{0 if key == 'files/s' else 2}f}")
            print(f"| {key} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
