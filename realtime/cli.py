"""`realtime serve | feed | token | bench` (also `python -m realtime`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realtime import __version__, logs
from realtime.config import ConfigError, Settings, check_serving, flag_name, load_settings, variable_name

logger = logging.getLogger(__name__)


def _add_settings_flags(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """One flag per setting; values are parsed by the settings model, like the environment."""
    group = parser.add_argument_group("settings (each also read from its REALTIME_* variable)")
    for name, info in Settings.model_fields.items():
        if fields is not None and name not in fields:
            continue
        default = info.get_default(call_default_factory=False)
        shown = "" if default is None or callable(info.default_factory) else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": "VALUE",
                                  # argparse formats help with %: a literal one must be doubled.
                                  "help": f"{info.description}{shown} [{variable_name(name)}]".replace("%", "%%")}
        if info.annotation is bool:
            kwargs.update(nargs="?", const="true", metavar="true|false")
        group.add_argument(flag_name(name), **kwargs)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings({name: getattr(args, name, None) for name in Settings.model_fields})


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    check_serving(settings)
    logs.configure(settings)
    from realtime.server import Server  # imported late: `realtime token` needs none of it

    _install_uvloop()
    server = Server(settings)
    asyncio.run(server.serve_forever())
    return 0


def _feed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings)
    if settings.embedded:
        raise ConfigError("REALTIME_REDIS_URL (--redis-url)", "`realtime feed` publishes to Redis: set a redis:// URL")
    from realtime.feed.publisher import run_feed

    _install_uvloop()
    if args.source in ("binance", "okx"):
        from realtime.catalog import Catalog
        from realtime.feed.binance import symbols
        from realtime.feed.okx import instruments
        from realtime.feed.publisher import run_exchange_feed

        try:
            mapping = (symbols if args.source == "binance" else instruments)(Catalog(settings.catalog), args.symbols)
        except ValueError as exc:
            raise ConfigError("--symbols", str(exc)) from None
        ws_url = args.ws_url or ("wss://stream.binance.com:9443" if args.source == "binance"
                                 else "wss://ws.okx.com:8443/ws/v5/public")
        asyncio.run(run_exchange_feed(settings, source=args.source, symbols=mapping, ws_url=ws_url,
                                      rest_url=args.rest_url, trades=args.trades, per_asset=args.per_asset,
                                      metrics_port=args.metrics_port))
        return 0
    asyncio.run(run_feed(settings, rate=args.rate, count=args.count, per_asset=args.per_asset,
                         book_levels=args.book_levels))
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.jwt_secret is None:
        raise ConfigError("REALTIME_JWT_SECRET (--jwt-secret)", "`realtime token` signs with the HS256 secret: set it")
    from realtime.clients.auth import mint_token

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    assets = None if args.assets is None else [a.strip() for a in args.assets.split(",") if a.strip()]
    algorithm = settings.jwt_algorithms[0] if settings.jwt_algorithms else "HS256"
    print(mint_token(settings.jwt_secret, args.sub, roles=roles, assets=assets, ttl=args.ttl, algorithm=algorithm,
                     issuer=settings.jwt_issuer, audience=settings.jwt_audience, delay=args.delay,
                     max_rate=args.max_rate))
    return 0


def _numbers(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
    return values


def _names(choices: Sequence[str]) -> Any:
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return names
    return parse


def _cpus(text: str) -> list[int]:
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU numbers separated by commas, got {text!r}") from None


def _bench(args: argparse.Namespace) -> int:
    from realtime.bench.options import REQUIRES, Options

    try:
        from realtime.bench import runner
        from realtime.bench.targets import BenchError, default_node_dir
    except ModuleNotFoundError as error:
        if error.name not in REQUIRES:
            raise
        print(f"realtime bench: needs {error.name}, which the bench extra installs: "
              "pip install 'realtime[bench]'", file=sys.stderr)
        return 1

    settings = _settings(args) if args.url else None
    server_cpus, generator_cpus = runner.default_cpus()
    options = Options(
        capacity_clients=args.clients, capacity_rates=[int(r) for r in args.rates],
        latency_clients=args.latency_clients, latency_per_client=args.latency_per_client,
        latency_tick_rates=args.latency_rates, connections=[int(n) for n in args.connections],
        step_seconds=args.step_seconds, latency_seconds=args.latency_seconds, drain_seconds=args.drain_seconds,
        connect_concurrency=args.connect_concurrency, recovery_clients=args.recovery_clients,
        storm_clients=args.storm_clients, storm_concurrency=args.storm_concurrency,
        spread_assets=args.spread_assets, spread_pods=args.spread_pods, spread_rate=args.spread_rate,
        spread_seconds=args.spread_seconds, book_clients=args.book_clients, book_changes=args.book_changes,
        book_levels=args.book_levels, book_seconds=args.book_seconds, state_seconds=args.state_seconds,
        rates_clients=args.rates_clients, rates_per_client=args.rates_per_client,
        rates_tick_rate=args.rates_tick_rate, rates_max_rate=args.rates_max_rate,
        overload_rates=[int(r) for r in args.overload_rates], server_cpu_limit=args.server_cpu_limit,
        generator_cpus=len(args.generator_cpus or generator_cpus) or (os.cpu_count() or 1),
    )
    plan = runner.Plan(
        targets=args.target, scenarios=args.scenario, options=options, url=args.url, settings=settings,
        assets=args.asset_count, workers=args.workers or max(1, len(args.generator_cpus or generator_cpus)),
        server_cpus=args.server_cpus if args.server_cpus is not None else server_cpus,
        generator_cpus=args.generator_cpus if args.generator_cpus is not None else generator_cpus,
        json_path=args.json, node_dir=args.node_dir or default_node_dir(),
    )
    try:
        return runner.main(plan)
    except BenchError as error:
        print(f"realtime bench: {error}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("realtime bench: stopped", file=sys.stderr)
        return 130


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: the gateway runs on the default loop too
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realtime", description="Socket.IO gateway for live trading prices.")
    parser.add_argument("--version", action="version", version=f"realtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway",
                                description="Run the gateway. Without REALTIME_REDIS_URL it runs alone "
                                            "with an in-memory manager and a simulated feed.")
    _add_settings_flags(serve)
    serve.set_defaults(run=_serve)

    feed = commands.add_parser("feed", help="publish simulated prices to Redis",
                               description="Publish random-walk prices for the catalog to the price channel.")
    feed.add_argument("--rate", type=float, default=5.0, help="ticks per second per asset (default: 5)")
    feed.add_argument("--count", type=int, default=None, help="stop after this many ticks (default: run forever)")
    feed.add_argument("--per-asset", action="store_true",
                      help="publish each asset on <price channel>:<ASSET> (SPUBLISH on a Redis Cluster) instead of "
                           "the price channel; gateways need REALTIME_PRICE_CHANNELS=per-asset or both")
    feed.add_argument("--book-levels", type=int, default=60,
                      help="price levels a side of each asset's simulated order book, moved with every tick and "
                           "snapshotted when a gateway asks on <price channel>:control (0 = no books; default: 60)")
    feed.add_argument("--source", choices=["simulator", "binance", "okx"], default="simulator",
                      help="simulator (default), binance or okx: the exchange's quote, book and trade streams "
                           "normalised (docs/feed.md)")
    feed.add_argument("--symbols", default=None,
                      help="exchange symbol to catalog asset, SYMBOL=ASSET,... (default: each catalog asset's "
                           "base + USDT: BTC_USDC_PERP <- BTCUSDT on binance, BTC-USDT on okx)")
    feed.add_argument("--ws-url", default=None,
                      help="the websocket URL (default: wss://stream.binance.com:9443, "
                           "wss://ws.okx.com:8443/ws/v5/public)")
    feed.add_argument("--rest-url", default="https://api.binance.com", help="binance: the REST base URL")
    feed.add_argument("--trades", choices=["trade", "aggTrade"], default="trade", help="binance: the trade stream")
    feed.add_argument("--metrics-port", type=int, default=None,
                      help="binance, okx: serve /metrics (frames, reconnects, resyncs) on this port of 127.0.0.1")
    _add_settings_flags(feed, ["redis_url", "price_channel", "assets", "redis_timeout", "redis_retry_max",
                               "log_level", "log_format"])
    feed.set_defaults(run=_feed)

    token = commands.add_parser("token", help="mint a development JWT",
                                description="Print an HS256 token signed with REALTIME_JWT_SECRET.")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--roles", default="", help="comma-separated roles, e.g. trader,risk")
    token.add_argument("--assets", default=None, help="comma-separated assets the token may see (default: all)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default: 3600)")
    token.add_argument("--delay", type=int, default=None,
                       help="delayed-data tier in seconds, one of REALTIME_DELAY_TIERS (default: real-time)")
    token.add_argument("--max-rate", type=float, default=None,
                       help="claim maxRate: at most this many price updates per second per asset (default: none)")
    _add_settings_flags(token, ["jwt_secret", "jwt_algorithms", "jwt_issuer", "jwt_audience"])
    token.set_defaults(run=_token)
    _add_bench(commands)
    return parser


def _add_bench(commands: Any) -> None:
    # Only the flags: the bench itself (and psutil, from the bench extra) is imported when it runs.
    from realtime.bench.options import DEFAULT_SCENARIOS, SCENARIOS, TARGETS, Options

    defaults = Options()
    bench = commands.add_parser(
        "bench", help="measure fan-out, latency and connections against this gateway and Node socket.io",
        description="Start each target on its own CPU, drive it with real Engine.IO websocket clients from "
                    "load-generator processes on the other CPUs, publish ticks through Redis, and report "
                    "deliveries/s, publish-to-receive latency, CPU and RSS as a table (and JSON with --json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--target", type=_names(TARGETS), default=list(TARGETS),
                       help="servers to start and measure, comma-separated: gateway (REALTIME_FANOUT=direct), "
                            "stock (REALTIME_FANOUT=stock), node (socket.io 4.8 + redis adapter, see --node-dir)")
    bench.add_argument("--scenario", type=_names(SCENARIOS), default=list(DEFAULT_SCENARIOS),
                       help="scenarios to run, comma-separated; assets: many assets over several pods, the single "
                            "price channel against per-asset channels; recovery: fresh against recovering connects; "
                            "state: keyed state's bytes on the wire, subscribe latency with the hook, Redis bytes")
    bench.add_argument("--url", default=None,
                       help="measure a gateway that is already running (http://host:port) instead of starting "
                            "targets; it needs --redis-url, --price-channel, --jwt-secret and --assets to match it")
    bench.add_argument("--clients", type=int, default=defaults.capacity_clients,
                       help="capacity: clients, each subscribed to every asset")
    bench.add_argument("--rates", type=_numbers, default=defaults.capacity_rates,
                       help="capacity: the ladder of offered deliveries/s, comma-separated")
    bench.add_argument("--latency-clients", type=int, default=defaults.latency_clients,
                       help="latency: clients")
    bench.add_argument("--latency-per-client", type=int, default=defaults.latency_per_client,
                       help="latency: assets each client subscribes to")
    bench.add_argument("--latency-rates", type=_numbers, default=defaults.latency_tick_rates,
                       help="latency: ticks per second per asset, one step each, comma-separated")
    bench.add_argument("--connections", type=_numbers, default=defaults.connections,
                       help="connections: connection counts to measure RSS at, comma-separated")
    bench.add_argument("--recovery-clients", type=int, default=defaults.recovery_clients,
                       help="recovery: clients that connect, drop and recover at once")
    bench.add_argument("--asset-count", type=int, default=10, help="assets in the started targets' catalog")
    bench.add_argument("--spread-assets", type=int, default=defaults.spread_assets,
                       help="assets: catalog size, spread over the pods (each pod's client watches its slice)")
    bench.add_argument("--spread-pods", type=int, default=defaults.spread_pods, help="assets: gateway pods")
    bench.add_argument("--spread-rate", type=float, default=defaults.spread_rate,
                       help="assets: ticks per second over all assets")
    bench.add_argument("--spread-seconds", type=float, default=defaults.spread_seconds,
                       help="assets: seconds of publishing per channel layout")
    bench.add_argument("--book-clients", type=int, default=defaults.book_clients,
                       help="books: clients, each with 2 books (depth 10 or 20)")
    bench.add_argument("--book-changes", type=float, default=defaults.book_changes,
                       help="books: level changes per second per asset")
    bench.add_argument("--book-levels", type=int, default=defaults.book_levels, help="books: price levels a side")
    bench.add_argument("--book-seconds", type=float, default=defaults.book_seconds,
                       help="books: seconds of books, then as long of quotes")
    bench.add_argument("--state-seconds", type=float, default=defaults.state_seconds,
                       help="state: seconds of portfolio changes (10 a second) per way of sending them")
    bench.add_argument("--step-seconds", type=float, default=defaults.step_seconds,
                       help="capacity: seconds of publishing per step")
    bench.add_argument("--latency-seconds", type=float, default=defaults.latency_seconds,
                       help="latency: seconds of publishing per step")
    bench.add_argument("--drain-seconds", type=float, default=defaults.drain_seconds,
                       help="longest wait after a step for late deliveries (later ones count as lost)")
    bench.add_argument("--connect-concurrency", type=int, default=defaults.connect_concurrency,
                       help="connections being opened at once")
    bench.add_argument("--storm-clients", type=int, default=defaults.storm_clients,
                       help="connections: once this many clients are open they all lose their transport at once "
                            "and reconnect (the reconnect storm); 0 = no storm")
    bench.add_argument("--storm-concurrency", type=int, default=defaults.storm_concurrency,
                       help="connections being reopened at once in the reconnect storm")
    bench.add_argument("--workers", type=int, default=None,
                       help="load-generator processes (default: one per generator CPU)")
    bench.add_argument("--server-cpus", type=_cpus, default=None,
                       help="CPUs the server is pinned to (default: the first)")
    bench.add_argument("--server-cpu-limit", type=float, default=None,
                       help="hold each started server to this many CPUs with a cgroup quota, as Kubernetes' "
                            "limits.cpu does (e.g. 0.4; root); the overload scenario needs it on a machine whose "
                            "load generator has one core")
    bench.add_argument("--generator-cpus", type=_cpus, default=None,
                       help="CPUs for the load generator, ticker and Redis (default: the others)")
    bench.add_argument("--rates-clients", type=int, default=defaults.rates_clients,
                       help="rates: clients, all unthrottled then half at --rates-max-rate")
    bench.add_argument("--rates-per-client", type=int, default=defaults.rates_per_client,
                       help="rates: assets per client")
    bench.add_argument("--rates-tick-rate", type=float, default=defaults.rates_tick_rate,
                       help="rates: ticks per second per asset")
    bench.add_argument("--rates-max-rate", type=float, default=defaults.rates_max_rate,
                       help="rates: the throttled half's maxRate")
    bench.add_argument("--overload-rates", type=_numbers, default=defaults.overload_rates,
                       help="overload: the ladder's offered deliveries per second, with overload mode off and on "
                            "(default: the ceiling the pod with overload off finds on the --rates ladder, two failed "
                            "steps in a row ending it, then 0.5, 1, 1.5 and 2 times it)")
    bench.add_argument("--json", type=Path, default=None, help="also write the full report to this file")
    bench.add_argument("--node-dir", type=Path, default=None,
                       help="where the node target's server and npm packages are installed, with `npm ci` on "
                            "first use (default: $XDG_CACHE_HOME/realtime/bench-node, else ~/.cache/realtime/...)")
    _add_settings_flags(bench, ["redis_url", "price_channel", "jwt_secret", "assets"])
    bench.set_defaults(run=_bench)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as error:
        print(f"realtime: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
