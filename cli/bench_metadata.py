"""The metadata workload of `vmstore bench`: small files made and removed, one at a time.

``small-files``: one process creates a file (``O_CREAT | O_EXCL``), writes
4 KiB into it, closes it and unlinks it, then does the same with the next
name, for ``--runtime`` seconds, in a directory of its own next to the data
file. The figure is files per second: each file is one create, write, close
(a FUSE flush and release) and unlink, the cycle a mail spool, a build tree
or a stress tool's start-up probe pays per file (issue 18, part 3).

The loop runs in a child process (``python3 -m vmstore.cli.bench_metadata
DIR SECONDS``), as fio and qemu-img run theirs: a wedged mount is bounded
by a timeout, and the loop's CPU is a client's, never the bench's own.

Caveats: one file in flight at a time (no concurrency), and the names are
reused by no one, so a file system that caches negative lookups gains
nothing; the directory stays near empty throughout.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from vmstore.cli.bench_workloads import (
    TOOL_TIMEOUT_EXTRA_S,
    BenchFailed,
    Metric,
    Place,
    Workload,
    run_tool,
)

SMALL_FILE_BYTES = 4096
SMALL_FILES_MAX = 10_000_000  # a bound on the loop, far beyond any machine's minute
DIRECTORY_NAME = "small-files"


def make_and_remove(directory: Path, runtime_s: float) -> tuple[int, float]:
    """Create+write+close+unlink files in ``directory`` for ``runtime_s``: (files, seconds)."""
    payload = os.urandom(SMALL_FILE_BYTES)
    files = 0
    started_s = time.monotonic()
    elapsed_s = 0.0
    while elapsed_s < runtime_s and files < SMALL_FILES_MAX:
        path = directory / f"f{files}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            written = os.write(fd, payload)
        finally:
            os.close(fd)
        assert written == SMALL_FILE_BYTES, f"{path}: short write of {written} bytes"
        os.unlink(path)
        files += 1
        elapsed_s = time.monotonic() - started_s
    return files, elapsed_s


def _small_files(place: Place) -> dict[str, float]:
    directory = place.data_file.with_name(DIRECTORY_NAME)
    shutil.rmtree(directory, ignore_errors=True)  # a killed run's leftovers
    directory.mkdir()
    try:
        output = run_tool([sys.executable, "-m", "vmstore.cli.bench_metadata", str(directory),
                           str(place.runtime_s)], f"small files in {directory}",
                          place.runtime_s + TOOL_TIMEOUT_EXTRA_S)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    try:
        result = json.loads(output)
        files, seconds = int(result["files"]), float(result["seconds"])
    except (ValueError, KeyError, TypeError) as error:
        raise BenchFailed(f"small files in {directory}: unreadable result {output!r}"
                          f" ({error})") from None
    if files == 0 or seconds <= 0:
        raise BenchFailed(f"small files in {directory}: no file made in {seconds:.1f} s")
    return {"small_files_per_s": files / seconds}


METADATA_WORKLOADS = (
    Workload("small-files", (Metric(
        "small_files_per_s", "small files: create+write 4 KiB+close+unlink (files/s)"),),
        False, sys.executable, _small_files),
)


def main(arguments: list[str]) -> int:
    """The child: ``DIR SECONDS`` -> one JSON line {"files": N, "seconds": S} on stdout."""
    if len(arguments) != 2:
        print("usage: python3 -m vmstore.cli.bench_metadata DIR SECONDS", file=sys.stderr)
        return 2
    try:
        files, seconds = make_and_remove(Path(arguments[0]), float(arguments[1]))
    except OSError as error:
        print(f"{error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    print(json.dumps({"files": files, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
