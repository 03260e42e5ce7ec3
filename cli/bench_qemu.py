"""The qemu-img workloads of `vmstore bench`: an image import and QEMU's own block I/O.

* ``qemu-img-convert``: ``qemu-img convert -f raw -O raw -t none SRC DEST``,
  the command ``vmstore import`` runs, DEST on the target. ``-t none`` is
  the destination cache mode QEMU users pick for shared storage (O_DIRECT,
  as ``cache=none``); qemu-img's defaults otherwise (8 coroutines, in-order
  writes, zero detection). SRC is a raw image of ``--size`` bytes on local
  disk (the scratch directory), built once per bench run in 4 MiB extents
  cycling random data, a hole, random data, written zeros: half data, half
  zeros, and both kinds of zeros a real guest image has. The figure is the
  wall time of the conversion (lower is better).
* ``qemu-img-bench-read`` / ``-write``: ``qemu-img bench -f raw -t none -i
  native -d 16 -s 4096`` (``-w`` to write) on the data file: 4 KiB requests
  in sequence, 16 in flight, through QEMU's block layer with the AIO engine
  ``cache=none`` guests use. Linux native AIO needs O_DIRECT, which FUSE
  mounts accept (the fio O_DIRECT jobs use libaio too); ``threads`` would
  measure QEMU's thread pool instead. qemu-img bench counts requests, not
  seconds, so a short probe sizes the count to about ``--runtime`` seconds.

Caveat: qemu-img bench prints its time in milliseconds; probes shorter than
PROBE_S_MIN are grown tenfold until they are long enough to scale from.
"""

from __future__ import annotations

import os
import re
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

EXTENT_BYTES = 4 * 2**20
SOURCE_NAME = "convert-source.raw"
DESTINATION_NAME = "vmstore-bench-convert.raw"
BENCH_REQUEST_BYTES = 4096
BENCH_DEPTH = 16
PROBE_REQUESTS = 1000
PROBE_S_MIN = 0.2
REQUESTS_MAX = 50_000_000
COMPLETED = re.compile(r"Run completed in (\d+(?:\.\d+)?) seconds")


def convert_source(place: Place) -> Path:
    """The source image on local disk, built on first use and kept for the bench run."""
    source = place.scratch / SOURCE_NAME
    if source.exists() and source.stat().st_size == place.size_bytes:
        return source
    with open(source, "wb") as image:
        image.truncate(place.size_bytes)
        for index, offset in enumerate(range(0, place.size_bytes, EXTENT_BYTES)):
            length = min(EXTENT_BYTES, place.size_bytes - offset)
            if index % 4 == 1:
                continue  # a hole
            image.seek(offset)
            image.write(bytes(length) if index % 4 == 3 else os.urandom(length))
        image.flush()
        os.fsync(image.fileno())
    return source


def _convert(place: Place) -> dict[str, float]:
    source = convert_source(place)
    destination = place.data_file.with_name(DESTINATION_NAME)
    destination.unlink(missing_ok=True)
    started_s = time.monotonic()
    run_tool(["qemu-img", "convert", "-f", "raw", "-O", "raw", "-t", "none",
              str(source), str(destination)],
             f"qemu-img convert to {destination}", TOOL_TIMEOUT_EXTRA_S)
    elapsed_s = time.monotonic() - started_s
    destination.unlink()
    return {"qemu_img_convert_s": elapsed_s}


def _bench_seconds(place: Place, requests: int, write: bool) -> float:
    command = ["qemu-img", "bench", "-f", "raw", "-t", "none", "-i", "native",
               "-d", str(BENCH_DEPTH), "-s", str(BENCH_REQUEST_BYTES), "-c", str(requests),
               *(["-w"] if write else []), str(place.data_file)]
    output = run_tool(command, f"qemu-img bench on {place.data_file}",
                      place.runtime_s + TOOL_TIMEOUT_EXTRA_S)
    found = COMPLETED.search(output)
    if found is None:
        raise BenchFailed(f"qemu-img bench: no 'Run completed' in its output: {output!r}")
    return max(float(found.group(1)), 0.001)  # it prints milliseconds; 0.000 happens


def _bench(write: bool) -> Workload:
    direction = "write" if write else "read"

    def run(place: Place) -> dict[str, float]:
        requests = PROBE_REQUESTS
        seconds = _bench_seconds(place, requests, write)
        while seconds < PROBE_S_MIN and requests < REQUESTS_MAX:
            requests *= 10
            seconds = _bench_seconds(place, requests, write)
        requests = min(REQUESTS_MAX, max(requests,
                                         int(requests * place.runtime_s / seconds)))
        seconds = _bench_seconds(place, requests, write)
        return {f"qemu_img_bench_{direction}_iops": requests / seconds}

    return Workload(f"qemu-img-bench-{direction}", (Metric(
        f"qemu_img_bench_{direction}_iops",
        f"qemu-img bench {direction} 4 KiB, cache=none aio=native, QD16 (IOPS)"),),
        True, "qemu-img", run)


QEMU_WORKLOADS = (
    Workload("qemu-img-convert", (Metric(
        "qemu_img_convert_s", "qemu-img convert raw, half zeros, -t none (s)",
        lower_is_better=True),), False, "qemu-img", _convert),
    _bench(write=False),
    _bench(write=True),
)
