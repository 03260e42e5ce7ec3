"""Seeded in-process runs (dfs.testing): the seed fixture, and the seed in a failure's report.

Every test that takes ``sim_seed`` runs on one seed: ``VMSTORE_SIM_SEED``
if set, else a fresh one. A failing test prints its seed, and
``VMSTORE_SIM_SEED=<seed> pytest <test>`` runs it again.

A conftest.py of a layer that runs in-process clusters (tests/sim,
tests/fuse) takes these by importing them: pytest finds fixtures and hooks
by name in a conftest's namespace.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator

import pytest
import trio.testing

from vmstore.dfs.testing import cluster


def seed_from_environment() -> int:
    text = os.environ.get("VMSTORE_SIM_SEED")
    return int(text) if text else random.SystemRandom().getrandbits(32)


@pytest.fixture
def sim_seed() -> int:
    return seed_from_environment()


@pytest.fixture
def sim_clock() -> trio.testing.MockClock:
    """Virtual time for in-process clusters (pytest-trio runs the test on it)."""
    return cluster.sim_clock()


@pytest.fixture
def sim_logs(expected_logs):  # type: ignore[no-untyped-def]
    """What every in-process cluster may log at WARNING while nodes come and go."""
    expected_logs.allow("vmstore.dfs.protocol.rpc", "closing connection|refused")
    return expected_logs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    seed = getattr(item, "funcargs", {}).get("sim_seed")
    if report.failed and seed is not None:
        report.sections.append(
            ("simulation seed", f"seed {seed}: replay with VMSTORE_SIM_SEED={seed}"
                                f" pytest '{item.nodeid}'"))
