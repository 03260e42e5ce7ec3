#!/usr/bin/env python3
"""Where a replicated fsync's time goes, hop by hop, through a real local cluster.

Run from a checkout, as root (FUSE):

    python3 deploy/bench/fsync_breakdown.py [--dir /var/tmp/vmstore-fsync-breakdown]
                                            [--ops 2000] [--warmup 200] [--keep]

It starts ``vmstore local up`` (master, three chunkservers on loopback, goal
2, a mount) with ``VMSTORE_HOP_TRACE`` set, so that every daemon and the
mount record monotonic timestamps at each hop of the data path
(``dfs.protocol.hop_trace``; the code costs one flag test when it is off).
Then, as a guest with ``cache=none`` does, it writes 4 KiB with O_DIRECT at a
random offset of a 16 MiB file and fsyncs it, --ops times one after the
other, timing each call itself. Every daemon's records that fall inside one
write+fsync are matched to it, and each hop of the path is the time between
two consecutive records (a send is recorded just before it, so that its
receipt in another process never comes first):

    app write -> mount's write handler -> ChunkIO sends the batch -> the head
    receives it -> sends it on to the second member -> (the head's own write
    and sync, in parallel) -> the second receives, writes, syncs, replies ->
    the head has the reply -> replies -> the mount has it -> fsync handler
    done -> app's fsync returns

The table shows each hop's median in µs, the sum of the medians of the
hops in series, and the end-to-end p50 of the same operations (write call to
fsync return), beside this machine's floors (deploy/bench/latency_floor.py:
a cross-CPU ping-pong, pwrite+fdatasync alone and two at once, measured in
the same run, before the cluster starts). Operations whose records do not
follow this path (a flush sent apart, a master call) are counted, not shown.

Caveat: the hops are measured with the tracer on, which adds a few µs per
record (a tuple appended to a list); compare the end-to-end figure with
``vmstore bench`` for the untraced cost.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import shutil
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_floor import ping_pong, synced_writes  # noqa: E402

BLOCK = 4096
FILE_BYTES = 16 * 1024 * 1024
TRACE_ENV = "VMSTORE_HOP_TRACE"  # dfs.protocol.hop_trace.TRACE_ENV (older trees lack it)
DATA_MESSAGES = {"ToChunkserverWriteChunk", "ToChunkserverFlushChunk", "EmptyReply"}

# The path of a synchronous 4 KiB write (flush=True batch) and the fsync that
# waits for it: (who, event, detail or None for any). "app.*" are ours.
PATH = (
    ("app", "write", None),
    ("mount", "client.write", None),
    ("mount", "io.send", "ToChunkserverWriteChunk"),
    ("mount", "rpc.tx_req", "ToChunkserverWriteChunk"),
    ("head", "rpc.rx_req", "ToChunkserverWriteChunk"),
    ("head", "cs.write", None),
    ("head", "rpc.tx_req", "ToChunkserverWriteChunk"),
    ("second", "rpc.rx_req", "ToChunkserverWriteChunk"),
    ("second", "cs.write", None),
    ("second", "cs.written", None),
    ("second", "cs.synced", None),
    ("second", "rpc.tx_reply", "EmptyReply"),
    ("head", "rpc.rx_reply", "EmptyReply"),
    ("head", "cs.next_replied", None),
    ("head", "rpc.tx_reply", "EmptyReply"),
    ("mount", "rpc.rx_reply", "EmptyReply"),
    ("mount", "io.reply", "ToChunkserverWriteChunk"),
    ("mount", "client.written", None),
    ("mount", "client.fsync_done", None),
    ("app", "fsync_returned", None),
)
# Beside the path: the head's own write and sync, and the app's own calls.
BRANCHES = (
    (("head", "rpc.tx_req", "ToChunkserverWriteChunk"), ("head", "cs.forwarded", None)),
    (("head", "cs.forwarded", None), ("head", "cs.written", None)),
    (("head", "cs.written", None), ("head", "cs.synced", None)),
    (("app", "write", None), ("app", "write_returned", None)),
    (("app", "fsync", None), ("mount", "client.fsync", None)),
    (("app", "fsync", None), ("app", "fsync_returned", None)),
)
ROLE_OF_REST = {1: "head", 0: "second"}  # a chunkserver's place: chain members after it


@dataclass
class Operation:
    write_ns: int
    write_returned_ns: int
    fsync_ns: int
    fsync_returned_ns: int


def run_loop(path: Path, ops: int, seed: int) -> list[Operation]:
    """4 KiB O_DIRECT pwrite + fsync at random block offsets, one after the other."""
    buffer = mmap.mmap(-1, BLOCK)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    offsets = random.Random(seed)
    done = []
    try:
        for number in range(ops):
            buffer[:8] = number.to_bytes(8, "little")
            offset = offsets.randrange(FILE_BYTES // BLOCK) * BLOCK
            write_ns = time.monotonic_ns()
            os.pwritev(fd, [buffer], offset)
            write_returned_ns = time.monotonic_ns()
            os.fsync(fd)
            done.append(Operation(write_ns, write_returned_ns, write_returned_ns,
                                  time.monotonic_ns()))
    finally:
        os.close(fd)
    return done


def read_traces(directory: Path) -> dict[str, list[tuple[int, str, str]]]:
    """Records per process: 'mount', 'master' or 'chunkserver:<pid>'."""
    traces: dict[str, list[tuple[int, str, str]]] = {}
    for file in directory.glob("*.trace"):
        lines = file.read_text().splitlines()
        argv = lines[0] if lines else ""
        if " mount" in argv:
            who = "mount"
        elif " chunkserver" in argv:
            who = f"chunkserver:{file.stem}"
        else:
            who = f"other:{file.stem}"
        records = []
        for line in lines[1:]:
            if line.startswith("#"):
                continue
            ns, event, *detail = line.split(" ", 2)
            records.append((int(ns), event, detail[0] if detail else ""))
        records.sort()
        traces.setdefault(who, []).extend(records)
    return traces


def in_window(records: list[tuple[int, str, str]], start_ns: int, end_ns: int
              ) -> list[tuple[int, str, str]]:
    import bisect
    low = bisect.bisect_left(records, (start_ns, "", ""))
    high = bisect.bisect_right(records, (end_ns, "\uffff", ""))
    return records[low:high]


def timeline(operation: Operation, traces: dict[str, list[tuple[int, str, str]]]
             ) -> dict[tuple[str, str, str | None], int] | None:
    """The operation's records by (role, event, detail); None if it left the path."""
    events: dict[str, list[tuple[int, str, str]]] = {
        "app": [(operation.write_ns, "write", ""),
                (operation.write_returned_ns, "write_returned", ""),
                (operation.fsync_ns, "fsync", ""),
                (operation.fsync_returned_ns, "fsync_returned", "")]}
    for who, records in traces.items():
        window = in_window(records, operation.write_ns, operation.fsync_returned_ns)
        if who == "mount":
            events["mount"] = window
        elif who.startswith("chunkserver:"):
            places = {int(detail) for _, event, detail in window if event == "cs.write"}
            if len(places) == 1 and places <= set(ROLE_OF_REST):
                events[ROLE_OF_REST[places.pop()]] = window
    if set(events) != {"app", "mount", "head", "second"}:
        return None
    found: dict[tuple[str, str, str | None], int] = {}
    after_ns = operation.write_ns
    for step in PATH:
        at = _first(events[step[0]], step, after_ns)
        if at is None:
            return None
        found[step] = after_ns = at
    for first, second in BRANCHES:
        for step in (first, second):
            if step not in found:
                at = _first(events[step[0]], step, operation.write_ns)
                if at is None:
                    return None
                found[step] = at
    return found


def _first(records: list[tuple[int, str, str]], step: tuple[str, str, str | None],
           after_ns: int) -> int | None:
    _, event, detail = step
    for ns, name, what in records:
        if ns >= after_ns and name == event and (detail is None or what == detail):
            return ns
    return None


def label(step: tuple[str, str, str | None]) -> str:
    who, event, _ = step
    return f"{who} {event}"


def floors(directory: Path, rounds: int) -> tuple[float, float, float]:
    """p50 µs: a cross-CPU round trip, pwrite+fdatasync alone, and two at once."""
    with Pool(2) as pool:
        both = pool.starmap(synced_writes, [(str(directory), rounds)] * 2)
    return (statistics.median(ping_pong(rounds * 5, None)) * 1e6,
            statistics.median(synced_writes(str(directory), rounds)) * 1e6,
            statistics.median(both[0] + both[1]) * 1e6)


def report(operations: list[Operation], traces: dict[str, list[tuple[int, str, str]]]
           ) -> str:
    lines: list[str] = []
    timelines = [found for found in (timeline(op, traces) for op in operations) if found]
    if not timelines:
        return "no operation followed the traced path (is VMSTORE_HOP_TRACE honoured?)"
    hops: dict[str, list[float]] = defaultdict(list)
    for found in timelines:
        for first, second in zip(PATH, PATH[1:], strict=False):
            hops[f"{label(first)} -> {label(second)}"].append((found[second] - found[first]) / 1e3)
        for first, second in BRANCHES:
            hops[f"({label(first)} -> {label(second)})"].append(
                (found[second] - found[first]) / 1e3)
    lines.append(f"{'hop':72} {'p50 µs':>8}")
    series = 0.0
    for name, values in hops.items():
        median = statistics.median(values)
        if not name.startswith("("):
            series += median
        lines.append(f"{name:72} {median:>8.0f}")
    end_to_end = statistics.median((op.fsync_returned_ns - op.write_ns) / 1e3 for op in operations)
    fsync_only = statistics.median((op.fsync_returned_ns - op.fsync_ns) / 1e3
                                   for op in operations)
    lines.append(f"{'sum of the hops in series (medians)':72} {series:>8.0f}")
    lines.append(f"{'end to end, write call to fsync return, p50 (all ops)':72} {end_to_end:>8.0f}")
    lines.append(f"{'fsync call to return, p50 (all ops)':72} {fsync_only:>8.0f}")
    lines.append(f"operations on the path: {len(timelines)} of {len(operations)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/vmstore-fsync-breakdown"))
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the traces and data")
    arguments = parser.parse_args()
    from vmstore.cli.local_cluster import local_down, local_up

    directory = arguments.dir
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    trace_dir = directory / "trace"
    floor = floors(directory, 400)
    os.environ[TRACE_ENV] = str(trace_dir)
    mount = directory / "mnt"
    local_up(directory, 3, mount)
    try:
        image = mount / "fsync.img"
        with open(image, "wb") as file:
            file.write(os.urandom(FILE_BYTES))
            file.flush()
            os.fsync(file.fileno())
        run_loop(image, arguments.warmup, arguments.seed + 1)
        operations = run_loop(image, arguments.ops, arguments.seed)
        time.sleep(1.0)
        run_loop(image, 1, arguments.seed + 2)  # every tracer's records to its file
        time.sleep(0.2)
    finally:
        local_down(directory)
        del os.environ[TRACE_ENV]
    traces = read_traces(trace_dir)
    print(f"floors (latency_floor.py): cross-CPU round trip p50 {floor[0]:.0f} µs,"
          f" pwrite+fdatasync p50 {floor[1]:.0f} µs alone, {floor[2]:.0f} µs two at once")
    print(report(operations, traces))
    pairs = len(operations) / ((operations[-1].fsync_returned_ns - operations[0].write_ns) / 1e9)
    print(f"write+fsync pairs/s (traced): {pairs:.0f}")
    if not arguments.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
