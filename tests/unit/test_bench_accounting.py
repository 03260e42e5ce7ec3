"""The pure parts of deploy/bench/compare_moosefs.py: CPU from /proc stat lines, the order.

deploy/bench holds scripts, not a package: the two modules are loaded from
their files.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "deploy" / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


process_cpu = load("process_cpu")
schedule = load("bench_schedule")


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int,
              cstime: int) -> str:
    """A /proc/PID/stat line as proc(5) lays it out (fields 1-52)."""
    after = ["S", ppid, pid, pid, 0, -1, 4194560, 100, 0, 0, 0, utime, stime, cutime, cstime,
             20, 0, 3, 0, 12345, 1000000, 200]
    after += [0] * (52 - 2 - len(after))
    return f"{pid} ({comm}) " + " ".join(str(field) for field in after) + "\n"


def test_stat_line_parsed_past_a_command_name_with_spaces_and_parentheses() -> None:
    times = process_cpu.parse_stat(stat_line(4242, "mfs (chunk) server", 7, 150, 50, 30, 20))
    assert times == process_cpu.ProcessTimes(4242, 7, 200, 50)


def test_our_own_stat_line_parses() -> None:
    times = process_cpu.parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert times.pid == os.getpid()
    assert times.ppid == os.getppid()
    assert times.own_ticks >= 0


def test_tree_counts_roots_and_descendants_with_their_reaped_children_only() -> None:
    table = {times.pid: times for times in map(process_cpu.parse_stat, [
        stat_line(10, "master", 1, 100, 10, 5, 0),
        stat_line(11, "dump", 10, 7, 3, 0, 0),  # the master's helper, alive
        stat_line(12, "grandchild", 11, 1, 1, 0, 0),
        stat_line(20, "chunkserver", 1, 40, 10, 0, 0),
        stat_line(30, "fio", 1, 999, 999, 0, 0),  # the client: not the system's
    ])}
    assert process_cpu.tree_ticks(table, [10, 20], "MooseFS") == 115 + 10 + 2 + 50


def test_a_helper_reaped_between_snapshots_is_counted_once() -> None:
    before = {times.pid: times for times in map(process_cpu.parse_stat, [
        stat_line(10, "master", 1, 100, 0, 0, 0), stat_line(11, "dump", 10, 30, 0, 0, 0)])}
    # The helper ran 20 more ticks, exited, and the master waited for it.
    after = {times.pid: times for times in map(process_cpu.parse_stat, [
        stat_line(10, "master", 1, 105, 0, 50, 0)])}
    spent = (process_cpu.tree_ticks(after, [10], "MooseFS")
             - process_cpu.tree_ticks(before, [10], "MooseFS"))
    assert spent == 5 + 20


def test_a_dead_root_is_an_error_naming_the_system() -> None:
    table = {10: process_cpu.parse_stat(stat_line(10, "master", 1, 1, 1, 0, 0))}
    with pytest.raises(RuntimeError, match="vmstore: process 99 is gone"):
        process_cpu.tree_ticks(table, [10, 99], "vmstore")


def test_interleaved_runs_every_system_once_per_workload_and_round_rotating() -> None:
    systems = ["MooseFS", "vmstore", "pass-through", "local disk"]
    workloads = ["seq-write", "seq-read", "small-files"]
    cells = schedule.interleaved(systems, workloads, 4)
    assert len(cells) == 4 * 3 * 4
    steps = [cells[index:index + 4] for index in range(0, len(cells), 4)]
    for step_index, step in enumerate(steps):
        round_index, workload_index = divmod(step_index, 3)
        assert {cell.round_index for cell in step} == {round_index}
        assert {cell.workload for cell in step} == {workloads[workload_index]}
        assert sorted(cell.system for cell in step) == sorted(systems)
        # rotated one place at each step
        assert step[0].system == systems[(round_index + workload_index) % 4]
    for workload in workloads:
        firsts = Counter(step[0].system for step in steps if step[0].workload == workload)
        assert firsts == Counter(systems), "over 4 rounds each system goes first once"


def test_one_after_another_finishes_a_system_before_the_next() -> None:
    cells = schedule.one_after_another(["a", "b"], ["w1", "w2"], 2)
    assert [(c.system, c.round_index, c.workload) for c in cells] == [
        ("a", 0, "w1"), ("a", 0, "w2"), ("a", 1, "w1"), ("a", 1, "w2"),
        ("b", 0, "w1"), ("b", 0, "w2"), ("b", 1, "w1"), ("b", 1, "w2")]


def test_operations_counted_from_each_kind_of_figure() -> None:
    operations = schedule.OPERATIONS
    size = 512 * 2**20
    assert operations["seq-write"].count({"seq_write_mb_s": 200.0}, size, 5.0, 9.0) == 512
    assert operations["randwrite-qd16"].count({"randwrite_4k_qd16_iops": 3000.0}, size,
                                              5.0, 5.4) == 15_000
    assert operations["randrw-64k"].count({"randrw_64k_mb_s": 65.536}, size, 5.0,
                                          5.3) == pytest.approx(5000)
    assert operations["qemu-img-bench-write"].count({"qemu_img_bench_write_iops": 1000.0},
                                                    size, 5.0, 6.5) == 6500
    assert operations["small-files"].count({"small_files_per_s": 400.0}, size, 5.0,
                                           5.1) == 2000


def test_every_bench_workload_has_an_operation_count() -> None:
    from vmstore.cli.bench import WORKLOADS

    assert {w.name for w in WORKLOADS} == set(schedule.OPERATIONS)
