"""`vmstore status` shows a metadata HA group: leader, standbys with their lag, etcd members."""

from __future__ import annotations

import msgspec

from vmstore.cli.status import status_json, status_text
from vmstore.dfs.protocol import messages as m


def reply(ha: m.HaStatus | None) -> m.StatusReply:
    return m.StatusReply(master_address="10.0.0.1:9420", chunkservers=[],
                         chunks=m.ChunkHealth(total=0, ok=0, undergoal=0, endangered=0, lost=0),
                         clients=[], inodes=1, ha=ha)


def member(endpoint: str, *, up: bool = True, leader: bool = False) -> m.EtcdMemberStatus:
    return m.EtcdMemberStatus(endpoint=endpoint, up=up, leader=leader,
                              db_size_bytes=3 * 2**20 if up else 0, raft_term=4 if up else 0,
                              version="3.4.23" if up else "",
                              error="" if up else "no answer within 1 s")


def group(standbys: list[m.StandbyStatus], members: list[m.EtcdMemberStatus]) -> m.HaStatus:
    return m.HaStatus(leader_address="10.0.0.1:9420", epoch=812, journal_position=5000,
                      standbys=standbys, etcd=members, checked_age_s=0.4)


def test_a_healthy_group_shows_leader_standby_lag_and_etcd() -> None:
    text = status_text(reply(group(
        [m.StandbyStatus(address="10.0.0.2:9420", position=4993, lag_entries=7)],
        [member("http://10.0.0.1:2379", leader=True), member("http://10.0.0.2:2379"),
         member("http://10.0.0.3:2379")])))
    assert "master 10.0.0.1:9420: healthy\n" in text
    assert "leader 10.0.0.1:9420 (epoch 812), journal at entry 5000; 1 standby" in text
    assert "standby  10.0.0.2:9420          entry 4993, 7 behind" in text
    assert "etcd: 3 of 3 members up" in text
    assert "http://10.0.0.1:2379         up    leader   db 3.0 MiB, raft term 4" in text
    assert "WARNING" not in text


def test_an_etcd_member_down_and_no_standby_show_as_degraded() -> None:
    text = status_text(reply(group([], [member("http://10.0.0.1:2379", leader=True),
                                        member("http://10.0.0.3:2379", up=False)])))
    assert "metadata HA DEGRADED" in text.splitlines()[0]
    assert "http://10.0.0.3:2379         DOWN  no answer within 1 s" in text
    assert ("WARNING: metadata HA degraded: no standby master reporting, 1 of 2 etcd members"
            " DOWN") in text


def test_an_embedded_master_shows_no_ha_lines() -> None:
    text = status_text(reply(None))
    assert "HA" not in text and "etcd" not in text
    assert status_json(reply(None))["ha"] is None


def test_the_group_travels_in_the_status_reply_and_its_json() -> None:
    ha = group([m.StandbyStatus(address="10.0.0.2:9420", position=4990, lag_entries=10)],
               [member("http://10.0.0.1:2379", leader=True)])
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(reply(ha)), type=m.StatusReply)
    assert decoded.ha == ha
    document = status_json(decoded)["ha"]
    assert document["standbys"] == [{"address": "10.0.0.2:9420", "position": 4990,
                                     "lag_entries": 10}]
    assert document["etcd"][0]["leader"] is True and document["epoch"] == 812
