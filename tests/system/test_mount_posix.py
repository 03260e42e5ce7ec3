"""The POSIX battery of tests/posix.py against a real mount, and against a local directory.

One cluster and one mount serve the whole module (each behaviour gets its
own fresh subdirectory of the mount); the same battery also runs against
pytest's tmp_path on the local disk, which checks the battery itself: a
``tst_`` that fails there is a wrong test, not a filesystem bug.

Behaviours the mount gets wrong today are listed in KNOWN_BUGS and run as
strict xfails: when one is fixed, its xfail turns into a failure that says
so, and its entry must go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.posix")  # plain asserts there report their values

from tests import posix  # noqa: E402
from tests.system.conftest import Cluster, Mount, require_fuse  # noqa: E402
from vmstore.cli.local_cluster import local_down  # noqa: E402

Behaviour = Callable[[Path], None]

# tst_ name -> what the mount does wrong.
KNOWN_BUGS: dict[str, str] = {}


def battery_params(known_bugs: dict[str, str]) -> list[Any]:
    params = []
    for behaviour in posix.battery():
        reason = known_bugs.get(behaviour.__name__)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(behaviour, id=behaviour.__name__, marks=marks))
    return params


def test_known_bugs_name_real_behaviours() -> None:
    names = {behaviour.__name__ for behaviour in posix.battery()}
    assert set(KNOWN_BUGS) <= names


@pytest.fixture(scope="module")
def posix_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One cluster and mount for the module; the same teardown as ``cluster`` and ``mount``."""
    require_fuse()
    started = Cluster(tmp_path_factory.mktemp("posix") / "cluster", 3)
    try:
        mounted = Mount(started, started.directory / "mnt")
        try:
            yield mounted
        finally:
            mounted.force_unmount()
    finally:
        local_down(started.directory)
    crashed = {name: text for name, text in started.logs().items() if "Traceback" in text}
    assert not crashed, "a daemon crashed:\n" + "\n".join(
        f"--- {name}\n{text[-3000:]}" for name, text in crashed.items())


@pytest.fixture
def mount_root(posix_mount: Mount, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on the mount; a traceback any daemon logs meanwhile fails the test."""
    root = posix_mount.path / request.node.callspec.id
    root.mkdir()
    before = {name: len(text) for name, text in posix_mount.cluster.logs().items()}
    yield root
    new = {name: text[before.get(name, 0):]
           for name, text in posix_mount.cluster.logs().items()}
    crashed = {name: text for name, text in new.items() if "Traceback" in text}
    if crashed:
        pytest.fail("a daemon logged a traceback during the test:\n" + "\n".join(
            f"--- {name}\n{text[-3000:]}" for name, text in crashed.items()), pytrace=False)


@pytest.mark.system
@pytest.mark.parametrize("behaviour", battery_params(KNOWN_BUGS))
def test_posix_on_mount(mount_root: Path, behaviour: Behaviour) -> None:
    behaviour(mount_root)


@pytest.mark.parametrize("behaviour", battery_params({}))
def test_posix_on_local_directory(tmp_path: Path, behaviour: Behaviour) -> None:
    """The battery checks itself: every behaviour holds on the local disk (ext4, tmpfs)."""
    behaviour(tmp_path)
