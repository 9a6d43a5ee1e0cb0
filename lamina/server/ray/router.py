"""The replicas' request router: Ray Serve's extension point, driving a policy from ``routing``.

Ray Serve runs one instance of this class in each process holding a handle to the replica
deployment (the ingress). For every request it asks :meth:`choose_replicas` for replicas in
order of preference; the first that has room (``max_ongoing_requests``) gets the request.
The policy needs each replica's load: this router counts the requests it has in flight on
each one, from the moment it prefers a replica (so a burst of requests arriving together
spreads out instead of all seeing the same idle replica) until Ray reports the request
finished.

The ingress also asks it how many replicas are running (:func:`running_replicas`), to answer
503 at once rather than queue a request while every replica is being replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .routing import Policy, make_policy

#: the router of each replica deployment in this process, by (application, deployment) name
_ROUTERS: dict[tuple[str, str], LaminaRequestRouter] = {}
#: a preference never confirmed by Ray (the request was cancelled while waiting) stops counting after this
TENTATIVE_SECONDS = 30.0


def running_replicas(app_name: str, deployment: str) -> int | None:
    """How many replicas the router in this process can send to; None before its first request."""
    router = _ROUTERS.get((app_name, deployment))
    return None if router is None else len(router.curr_replicas)


@dataclass
class _InFlight:
    replica: str
    confirmed: bool
    since: float


class LaminaRequestRouter(RequestRouter):
    """Prefix-aware (or round-robin) routing to lamina replicas; see ``lamina.server.ray.routing``."""

    def initialize_state(self, policy: str = "prefix", slots: int = 4) -> None:
        self._policy: Policy = make_policy(policy, slots)
        self._in_flight: dict[str, _InFlight] = {}  # by Ray's internal request id
        _ROUTERS[(self._deployment_id.app_name, self._deployment_id.name)] = self

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        order = self._policy.rank(_key_of(pending_request), list(by_id), self._loads())
        if not order:
            return []
        if pending_request is not None:
            self._in_flight[pending_request.metadata.internal_request_id] = _InFlight(order[0], False, time.monotonic())
        return [[by_id[order[0]]], [by_id[r] for r in order[1:]]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result) -> None:
        replica = replica_id.unique_id
        self._in_flight[pending_request.metadata.internal_request_id] = _InFlight(replica, True, time.monotonic())
        self._policy.record(replica, _key_of(pending_request))

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._in_flight.pop(internal_request_id, None)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._policy.forget(replica_id.unique_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        gone = {r.unique_id for r in self._replica_id_set} - {r.replica_id.unique_id for r in replicas}
        super().update_replicas(replicas)
        for replica in gone:
            self._policy.forget(replica)

    def _loads(self) -> dict[str, int]:
        now = time.monotonic()
        stale = [rid for rid, f in self._in_flight.items() if not f.confirmed and now - f.since > TENTATIVE_SECONDS]
        for rid in stale:
            del self._in_flight[rid]
        loads: dict[str, int] = {}
        for f in self._in_flight.values():
            loads[f.replica] = loads.get(f.replica, 0) + 1
        return loads


def _key_of(pending_request: PendingRequest | None) -> str | None:
    """The routing key the ingress put on the forwarded request (its first argument)."""
    if pending_request is None or not pending_request.args:
        return None
    return getattr(pending_request.args[0], "routing_key", None)
