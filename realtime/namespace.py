"""The gateway's Redis namespace: the name of every key and channel it owns, in one place.

`REALTIME_NAMESPACE=<N>` prefixes all of them, so two deployments on one
Redis need one knob each (docs/redis.md lists every key and channel). Unset,
the names are those the gateway always used, derived from the older knobs:
the state lives under `REALTIME_MANAGER_CHANNEL`, the restart offsets under
`REALTIME_PRICE_CHANNEL`, the demand signal under `REALTIME_DEMAND_KEY`.
An explicitly set `REALTIME_MANAGER_CHANNEL` or `REALTIME_DEMAND_KEY` is
always honoured. The feed's channels (`REALTIME_PRICE_CHANNEL`) and the
events stream (`REALTIME_EVENTS_STREAM`) are inputs that publishers and back
ends write: they keep their own names.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.config import Settings


@dataclass(frozen=True, slots=True)
class Namespace:
    state: str  # the event log, its rooms, the router's lease and group, sessions, presence
    manager_channel: str  # python-socketio's pub/sub channel between pods and write-only back ends
    restarts: str  # the hash of seq offsets chosen at feed restarts
    demand: str  # the demand signal's key prefix and channel

    @property
    def presence(self) -> str:
        """The prefix of the per-user connection slots (one Redis Cluster slot: `{<state>:presence}`)."""
        return f"{{{self.state}:presence}}:"


def namespace(settings: Settings) -> Namespace:
    """The Redis names of this deployment."""
    name = settings.namespace
    if name is None:
        return Namespace(state=settings.manager_channel, manager_channel=settings.manager_channel,
                         restarts=f"{settings.price_channel}:seq-offsets", demand=settings.demand_key)
    chosen = settings.model_fields_set
    return Namespace(
        state=name,
        manager_channel=settings.manager_channel if "manager_channel" in chosen else f"{name}:socketio",
        restarts=f"{name}:seq-offsets",
        demand=settings.demand_key if "demand_key" in chosen else f"{name}:demand",
    )
