"""What a bench run can be asked for: its targets, scenarios and sizes.

Only the standard library: `realtime --help` builds the bench's flags from
these without importing the bench itself (psutil comes with `realtime[bench]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TARGETS = ("gateway", "stock", "node")
SCENARIOS = ("capacity", "latency", "connections", "assets", "recovery", "books", "rates", "overload", "state")
# What a bench run without --scenario runs (`assets` and `overload` start pods of their own, `recovery` drops
# every connection it makes, `books` and `state` are the gateway's alone, `rates` is issue 23's: ask for them).
DEFAULT_SCENARIOS = ("capacity", "latency", "connections")
# What only the bench needs; installed by the `bench` extra.
REQUIRES = ("psutil",)


@dataclass
class Options:
    """Sizes, rates and durations, all from `realtime bench` flags."""

    capacity_clients: int = 2000
    capacity_rates: list[int] = field(default_factory=lambda: [
        10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 125_000, 150_000, 200_000, 250_000, 300_000,
        400_000, 500_000, 640_000])
    latency_clients: int = 1000
    latency_per_client: int = 3
    latency_tick_rates: list[float] = field(default_factory=lambda: [10.0, 5.0])
    connections: list[int] = field(default_factory=lambda: [2000, 5000, 10_000])
    recovery_clients: int = 2000
    # The connections scenario's reconnect storm, once this many clients are open (0: none).
    storm_clients: int = 10_000
    storm_concurrency: int = 1000
    step_seconds: float = 5.0
    latency_seconds: float = 10.0
    drain_seconds: float = 3.0
    connect_concurrency: int = 200
    generator_cpus: int = 1
    # CPUs a started server may use (a CFS quota, as Kubernetes' limits.cpu); None: its whole core.
    server_cpu_limit: float | None = None
    # The `assets` scenario: this many assets over this many pods, ticks per second over all assets.
    spread_assets: int = 1000
    spread_pods: int = 4
    spread_rate: float = 5000.0
    spread_seconds: float = 10.0
    # The `books` scenario: clients with 2 books each; level changes per second per asset, over this many levels.
    book_clients: int = 2000
    book_changes: float = 5000.0
    book_levels: int = 50
    book_per_message: int = 25
    book_seconds: float = 10.0
    # The `rates` scenario (issue 23): clients on assets at a tick rate, all unthrottled then half at maxRate.
    rates_clients: int = 2000
    rates_per_client: int = 10
    rates_tick_rate: float = 100.0
    rates_max_rate: float = 2.0
    # The `overload` scenario: the fan-out ladder (offered deliveries/s) with overload mode off and on; empty:
    # 0.5, 1, 1.5 and 2 times the ceiling the pod with overload off finds first.
    overload_rates: list[int] = field(default_factory=list)
    # The `state` scenario (keyed state and channels): seconds of portfolio changes, 10 a second.
    state_seconds: float = 10.0
