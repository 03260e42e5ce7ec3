"""The simulation layer: in-process clusters (dfs.testing), each run drawn from a seed.

The seed fixture and its failure report live in tests/sim_seed.py, shared
with tests/fuse.
"""

from __future__ import annotations

from tests.sim_seed import (  # noqa: F401  (pytest finds fixtures and hooks by name)
    pytest_runtest_makereport,
    seed_from_environment,
    sim_clock,
    sim_logs,
    sim_seed,
)
