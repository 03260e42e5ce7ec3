"""`vmstore bench` on a plain directory: its JSON report, its cleanup, its one-line errors.

Tiny sizes and runtimes: this checks the command, not the machine, so no
figure is compared with anything but zero.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WORKLOADS = ("seq-write", "seq-read", "randwrite-qd16", "write-fsync", "qemu-img-convert",
             "qemu-img-bench-read")
EXPECTED_METRICS = ("seq_write_mb_s", "seq_read_mb_s", "randwrite_4k_qd16_iops", "fsync_p50_us",
                    "fsync_p99_us", "write_fsync_per_s", "qemu_img_convert_s",
                    "qemu_img_bench_read_iops")
SUMMARY_FIELDS = {"workload", "label", "lower_is_better", "mean", "min", "max", "stdev", "runs"}


def bench(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmstore.cli.main", "bench", *arguments],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_bench_reports_every_chosen_figure_and_cleans_up(tmp_path: Path) -> None:
    for tool in ("fio", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (deploy/install-deps.sh installs it)")
    target = tmp_path / "target"
    scratch = tmp_path / "scratch"
    target.mkdir()
    scratch.mkdir()
    result = bench(str(target), "--size", "4M", "--runtime", "0.5", "--repeat", "1",
                   "--workloads", ",".join(WORKLOADS), "--scratch", str(scratch), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == str(target)
    assert report["size_bytes"] == 4 * 2**20
    assert report["repeat"] == 1
    assert set(report["tools"]) == {"fio", "qemu-img"}
    assert tuple(report["metrics"]) == EXPECTED_METRICS  # table order, nothing else
    for key, summary in report["metrics"].items():
        assert set(summary) == SUMMARY_FIELDS, key
        assert len(summary["runs"]) == 1, key
        assert summary["mean"] > 0, key
        assert summary["min"] <= summary["mean"] <= summary["max"], key
    assert report["metrics"]["fsync_p50_us"]["lower_is_better"]
    assert not report["metrics"]["seq_read_mb_s"]["lower_is_better"]
    assert list(target.iterdir()) == [], "bench left files on the target"
    assert list(scratch.iterdir()) == [], "bench left files in the scratch directory"


def test_bench_refuses_a_missing_target_in_one_line(tmp_path: Path) -> None:
    result = bench(str(tmp_path / "nowhere"), "--workloads", "seq-write")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"vmstore bench: {tmp_path / 'nowhere'}: not a directory"
        " (TARGET is a mount point or a directory)"]


def test_bench_names_a_missing_tool_in_one_line(tmp_path: Path) -> None:
    result = bench(str(tmp_path), "--workloads", "seq-write", env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "vmstore bench: fio is not installed (deploy/install-deps.sh installs it)"]
    assert list(tmp_path.iterdir()) == []


def test_bench_names_an_unknown_workload(tmp_path: Path) -> None:
    result = bench(str(tmp_path), "--workloads", "seq-write,warp-drive")
    assert result.returncode == 1
    assert "unknown workload 'warp-drive'" in result.stderr
    assert "randread-qd16" in result.stderr  # it lists the real ones


def test_small_files_counts_files_made_and_removed(tmp_path: Path) -> None:
    """issue 18 part 3's row: create+write 4 KiB+close+unlink, one file at a time."""
    target = tmp_path / "target"
    target.mkdir()
    result = bench(str(target), "--size", "1M", "--runtime", "0.3", "--repeat", "2",
                   "--workloads", "small-files", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert tuple(report["metrics"]) == ("small_files_per_s",)
    summary = report["metrics"]["small_files_per_s"]
    assert len(summary["runs"]) == 2
    assert min(summary["runs"]) > 0
    assert not summary["lower_is_better"]
    assert set(report["tools"]) == {sys.executable}  # the loop's interpreter
    assert list(target.iterdir()) == [], "bench left files on the target"


def test_small_files_loop_leaves_an_empty_directory(tmp_path: Path) -> None:
    from vmstore.cli.bench_metadata import make_and_remove

    files, seconds = make_and_remove(tmp_path, 0.05)
    assert files > 0
    assert seconds >= 0.05
    assert list(tmp_path.iterdir()) == []
