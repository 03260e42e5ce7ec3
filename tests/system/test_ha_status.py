"""`vmstore status` and /metrics of a real HA group (a three-member etcd, two masters).

What is checked (issue 15): status names the leader and its epoch, the standby
with its lag (which reaches 0 once it has applied the journal), and each etcd
member (up, which one leads, database size); a killed etcd member shows down,
and so does the group's health line. The leader's metrics say it leads, with
the same epoch, journal appends timed; the standby's say it does not, and where
it is in the journal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.system.conftest import Cluster, assert_no_crash, vmstore_command
from tests.system.test_metadata_ha import require_etcd
from tests.system.test_metrics import endpoint, scrape, value
from vmstore.cli.local_cluster import local_down, wait_for_leader
from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity

pytestmark = pytest.mark.system
SETTLE_TIMEOUT_S = 30.0


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_etcd()
    cluster = Cluster(tmp_path / "cluster", chunkservers=1, masters=2,
                      master_flags=("--metrics", "127.0.0.1:0"))
    try:
        yield cluster
    finally:
        local_down(cluster.directory)
    assert_no_crash(cluster.logs())


def status(cluster: Cluster) -> tuple[dict[str, Any], str]:
    as_json = vmstore_command("status", "--json", config=cluster.config_path)
    assert as_json.returncode == 0, as_json.stderr
    as_text = vmstore_command("status", config=cluster.config_path)
    return json.loads(as_json.stdout), as_text.stdout


def until(what: str, check: Callable[[], tuple[bool, Any]]) -> Any:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        done, seen = check()
        if done:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SETTLE_TIMEOUT_S} s: {what}; last seen {seen}")
        time.sleep(0.5)


def test_status_and_metrics_show_the_leader_the_standby_and_etcd(
        ha_cluster: Cluster) -> None:
    masters = ha_cluster.master_address.split(",")
    leader = wait_for_leader(masters)
    standby = next(address for address in masters if address != leader)
    names = {address: f"master{index}" for index, address in enumerate(masters)}

    async def write() -> None:
        host, port = leader.rsplit(":", 1)
        async with open_client(host, int(port), ha_cluster.key,
                               ClientIdentity(host_label="local0")) as client:
            for index in range(5):
                await client.create_file(f"/file-{index}")

    trio.run(write)

    def caught_up() -> tuple[bool, Any]:
        document, text = status(ha_cluster)
        ha = document["ha"]
        return (ha["standbys"] == [{"address": standby, "position": ha["journal_position"],
                                    "lag_entries": 0}]
                and all(member["up"] for member in ha["etcd"]), (ha, text))

    ha, text = until("the standby reports that it caught up", caught_up)
    assert ha["leader_address"] == leader and ha["epoch"] > 0
    assert ha["journal_position"] >= 5  # the generation, then one entry per create at most
    assert len(ha["etcd"]) == 3
    assert sum(member["leader"] for member in ha["etcd"]) == 1
    assert all(member["db_size_bytes"] > 0 and member["version"] for member in ha["etcd"])
    assert f"metadata HA: leader {leader} (epoch {ha['epoch']})" in text
    assert f"standby  {standby:<22} entry {ha['journal_position']}, 0 behind" in text
    assert "etcd: 3 of 3 members up" in text and "DEGRADED" not in text

    logs = ha_cluster.directory / "logs"
    leading = scrape(endpoint(logs / f"{names[leader]}.log"))
    assert value(leading, "vmstore_master_is_leader") == 1
    assert value(leading, "vmstore_master_epoch") == ha["epoch"]
    assert value(leading, "vmstore_master_journal_position") >= ha["journal_position"]
    assert value(leading, "vmstore_master_journal_append_seconds_count") >= 5
    assert value(leading, "vmstore_master_standby_lag_entries", standby=standby) == 0
    following = scrape(endpoint(logs / f"{names[standby]}.log"))
    assert value(following, "vmstore_master_is_leader") == 0
    assert value(following, "vmstore_master_journal_position") == ha["journal_position"]

    ha_cluster.kill("etcd2")

    def etcd2_down() -> tuple[bool, Any]:
        document, text = status(ha_cluster)
        return sum(not member["up"] for member in document["ha"]["etcd"]) == 1, text

    text = until("a killed etcd member shows down", etcd2_down)
    assert "metadata HA DEGRADED" in text.splitlines()[0]
    assert "etcd: 2 of 3 members up" in text and " DOWN " in text
