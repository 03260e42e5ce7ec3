"""`vmstore status`: the lines about a metadata HA group (leader, standbys, etcd).

An embedded master has no HA group (``StatusReply.ha`` is None) and gets none
of these lines. The figures come from the leader, probed once a second
(``dfs.master.ha_status``); a standby's lag may be one report (a second) old.
"""

from __future__ import annotations

from vmstore.dfs.protocol.messages import HaStatus


def ha_degraded(ha: HaStatus | None) -> str:
    """Why the group could not survive one more fault ("" when it could)."""
    if ha is None:
        return ""
    down = sum(1 for member in ha.etcd if not member.up)
    reasons = []
    if not ha.standbys:
        reasons.append("no standby master reporting")
    if down:
        reasons.append(f"{down} of {len(ha.etcd)} etcd members DOWN")
    return ", ".join(reasons)


def ha_text(ha: HaStatus) -> list[str]:
    lines = [f"metadata HA: leader {ha.leader_address} (epoch {ha.epoch}), journal at entry"
             f" {ha.journal_position}; {len(ha.standbys)} standby(s)",
             f"  {'leader':<8} {ha.leader_address:<22} entry {ha.journal_position}"]
    for standby in ha.standbys:
        lines.append(f"  {'standby':<8} {standby.address:<22} entry {standby.position},"
                     f" {standby.lag_entries} behind")
    up = sum(1 for member in ha.etcd if member.up)
    lines.append(f"etcd: {up} of {len(ha.etcd)} members up (checked {ha.checked_age_s:.0f} s"
                 " ago)")
    for member in ha.etcd:
        if member.up:
            role = "leader" if member.leader else "follower"
            lines.append(f"  {member.endpoint:<28} up    {role:<8} db"
                         f" {_mib(member.db_size_bytes)}, raft term {member.raft_term},"
                         f" etcd {member.version}")
        else:
            lines.append(f"  {member.endpoint:<28} DOWN  {member.error}")
    degraded = ha_degraded(ha)
    if degraded:
        lines.append(f"WARNING: metadata HA degraded: {degraded}; one more fault stops"
                     " metadata changes")
    return lines


def _mib(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.1f} MiB"
