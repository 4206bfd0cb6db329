"""`plan --replicas N` and `doctor --replicas N`: the memory checks of a replica split, each
naming what it checks (all replicas at once, or one replica on its own nodes)."""

from __future__ import annotations

from dataclasses import replace

from kthybrid_serve.host.host import HostFacts
from kthybrid_serve.plan.replicas import Replica, ReplicaPlan, ReplicaSet
from kthybrid_serve.settings import Settings
from kthybrid_serve.validate import Check, plan_checks


def _prefixed(checks: list[Check], prefix: str) -> list[Check]:
    """A replica's checks, each message (and the refusal it carries) naming the replica."""
    out = []
    for c in checks:
        error = type(c.error)(prefix + c.error.message) if c.error is not None else None
        out.append(replace(c, message=prefix + c.message, error=error))
    return out


def all_replicas_checks(host: HostFacts, replicas: ReplicaSet, settings: Settings) -> list[Check]:
    """The host holding every replica's CPU experts and runtime at once."""
    count = len(replicas.plans)
    total = f"--replicas {count} ({count} copies of the CPU experts and runtime): "
    return _prefixed(plan_checks(host, replicas.combined(), settings), total)


def replica_prefix(replica: Replica) -> str:
    return f"replica {replica.index} (NUMA node(s) {','.join(map(str, replica.nodes))}): "


def own_checks(rp: ReplicaPlan, settings: Settings) -> list[Check]:
    """A replica's own nodes holding its CPU experts."""
    return _prefixed(plan_checks(rp.host, rp.plan, settings), replica_prefix(rp.replica))
