"""Every test module's file name is unique across tests/.

The test folders are not packages, so pytest imports each test module by its
file name: a second module of the same name anywhere under tests/ fails the
collection, and so the whole suite ("import file mismatch"), as three did when
in-process and real-process tests of one feature were given the same name.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).parent


def test_no_two_test_modules_share_a_file_name() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        by_name[path.name].append(str(path.relative_to(TESTS)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"rename one of each: {shared}"
