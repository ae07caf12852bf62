"""`realtime serve | feed | token` (also `python -m realtime`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__, logs
from .config import ConfigError, Settings, flag_name, load_settings, variable_name

log = logging.getLogger("realtime.cli")


def _add_settings_flags(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """One flag per setting; values are parsed by the settings model, like the environment."""
    group = parser.add_argument_group("settings (each also read from its REALTIME_* variable)")
    for name, info in Settings.model_fields.items():
        if fields is not None and name not in fields:
            continue
        default = info.get_default(call_default_factory=False)
        shown = "" if default is None or callable(info.default_factory) else f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": "VALUE",
                                  "help": f"{info.description}{shown} [{variable_name(name)}]"}
        if info.annotation is bool:
            kwargs.update(nargs="?", const="true", metavar="true|false")
        group.add_argument(flag_name(name), **kwargs)


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings({name: getattr(args, name, None) for name in Settings.model_fields})


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings)
    from .server import Server  # imported late: `realtime token` needs none of it

    _install_uvloop()
    server = Server(settings)
    asyncio.run(server.serve_forever())
    return 0


def _feed(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings)
    if settings.embedded:
        raise ConfigError("REALTIME_REDIS_URL (--redis-url)", "`realtime feed` publishes to Redis: set a redis:// URL")
    from .publisher import run_feed

    _install_uvloop()
    asyncio.run(run_feed(settings, rate=args.rate, count=args.count))
    return 0


def _token(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.jwt_secret is None:
        raise ConfigError("REALTIME_JWT_SECRET (--jwt-secret)", "`realtime token` signs with the HS256 secret: set it")
    from .auth import mint_token

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    assets = None if args.assets is None else [a.strip() for a in args.assets.split(",") if a.strip()]
    algorithm = settings.jwt_algorithms[0] if settings.jwt_algorithms else "HS256"
    print(mint_token(settings.jwt_secret, args.sub, roles=roles, assets=assets, ttl=args.ttl, algorithm=algorithm,
                     issuer=settings.jwt_issuer, audience=settings.jwt_audience))
    return 0


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
    _add_settings_flags(feed, ["redis_url", "price_channel", "assets", "redis_timeout", "redis_retry_max",
                               "log_level", "log_format"])
    feed.set_defaults(run=_feed)

    token = commands.add_parser("token", help="mint a development JWT",
                                description="Print an HS256 token signed with REALTIME_JWT_SECRET.")
    token.add_argument("--sub", required=True, help="subject (user id)")
    token.add_argument("--roles", default="", help="comma-separated roles, e.g. trader,risk")
    token.add_argument("--assets", default=None, help="comma-separated assets the token may see (default: all)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default: 3600)")
    _add_settings_flags(token, ["jwt_secret", "jwt_algorithms", "jwt_issuer", "jwt_audience"])
    token.set_defaults(run=_token)
    return parser


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
