"""The live price board at `GET /`, and what the page needs from the gateway.

The page (realtime/http/static/) uses the real socket.io-client 4.x from npm. Its
bundle is copied into the package when it is built (setup.py, from the
version package-lock.json pins) under realtime/http/static/vendor/, and the
gateway serves it from there; `REALTIME_CLIENT_BUNDLE_DIR` overrides it, and a
source checkout that was never built falls back to its `node_modules/`.
Without a bundle the page answers 503 with what to do, and everything else
keeps serving.

The page keeps its prices, book, positions, tape and chart with this
repository's typed client, `@realtime/client` (clients/js): the build copies
its ES modules into vendor/client/ the same way (a checkout serves its own
clients/js/dist/, which scripts/setup rebuilds whenever the sources change).

Routes: `/` (the page), `/board/board.js|market.js|board.css`, `/board/socket.io.js`
(the msgpack build of the client when `REALTIME_SERIALIZER=msgpack`),
`/board/charts.js`, `/board/client/<module>.js` (@realtime/client), and in
dev mode only (no JWT key; embedded or REALTIME_DEV) `/board/token`, which mints a
short-lived token signed with the per-process secret.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aiohttp import web

from realtime.catalog import Catalog
from realtime.clients.auth import TokenVerifier
from realtime.config import ConfigError, Settings

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
BUNDLE_SUBDIR = Path("node_modules", "socket.io-client", "dist")
TOKEN_URL = "/board/token"
# Dev tokens are short-lived: the page fetches a new one for each connection
# attempt and on `auth:expiring`.
DEV_TOKEN_TTL = 900
DEV_TOKEN_SUBJECT = "board"

_ASSETS = {"board.js": "text/javascript", "market.js": "text/javascript", "board.css": "text/css"}
# The chart library (npm's lightweight-charts, vendored like the client bundle); without it the page has no chart.
CHARTS_FILE = "lightweight-charts.standalone.production.js"
CHARTS_SUBDIR = Path("node_modules", "lightweight-charts", "dist")
# @realtime/client's ES modules (tsc's output, importing one another by relative name).
CLIENT_SUBDIR = Path("clients", "js", "dist")
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def bundle_file(settings: Settings) -> str:
    """The socket.io-client build the page loads: the msgpack one speaks our msgpack packets."""
    return "socket.io.msgpack.min.js" if settings.serializer == "msgpack" else "socket.io.min.js"


def find_bundle(settings: Settings) -> Path | None:
    """The client bundle, or None when it is not installed.

    Raises `ConfigError` when `REALTIME_CLIENT_BUNDLE_DIR` is set and lacks it.
    """
    name = bundle_file(settings)
    if settings.client_bundle_dir:
        path = Path(settings.client_bundle_dir) / name
        if not path.is_file():
            raise ConfigError("REALTIME_CLIENT_BUNDLE_DIR (--client-bundle-dir)",
                              f"{path} does not exist; point it at node_modules/socket.io-client/dist")
        return path
    # The package's own copy; then, for a checkout run without a build (shared venvs, worktrees), its node_modules.
    for folder in (VENDOR_DIR, STATIC_DIR.parents[2] / BUNDLE_SUBDIR):
        path = folder / name
        if path.is_file():
            return path
    return None


def find_charts() -> Path | None:
    """The chart library: the package's copy, or a checkout's node_modules; None when neither has it."""
    for folder in (VENDOR_DIR, STATIC_DIR.parents[2] / CHARTS_SUBDIR):
        path = folder / CHARTS_FILE
        if path.is_file():
            return path
    return None


def find_client_package() -> Path | None:
    """The folder of @realtime/client's ES modules: a checkout's own build (scripts/setup keeps it current with
    the sources, which the package's copy is only at install time), else the package's copy; None without one."""
    for folder in (STATIC_DIR.parents[2] / CLIENT_SUBDIR, VENDOR_DIR / "client"):
        if (folder / "index.js").is_file():
            return folder
    return None


class Board:
    """Serves the price board page, its assets and the client bundle."""

    def __init__(self, settings: Settings, catalog: Catalog, verifier: TokenVerifier) -> None:
        self.dev_mode = settings.dev_mode
        self.verifier = verifier
        self.bundle = find_bundle(settings)
        self.charts = find_charts()
        client = find_client_package()
        # Only the modules the build made are served: the name never becomes a path of its own.
        self.client_modules = {path.name: path for path in sorted(client.glob("*.js"))} if client else {}
        if self.bundle is None:
            logger.warning("price board disabled: %s not found under %s; run scripts/setup (npm install) "
                        "or set REALTIME_CLIENT_BUNDLE_DIR", bundle_file(settings), BUNDLE_SUBDIR)
        elif client is None:
            logger.warning("price board disabled: @realtime/client's build not found under %s; run scripts/setup "
                           "(npm run build --workspace clients/js)", CLIENT_SUBDIR)
        config = {
            "assets": [{"name": asset.name, "decimals": asset.decimals} for asset in catalog],
            "serializer": settings.serializer,
            "tokenUrl": TOKEN_URL if self.dev_mode else None,
        }
        # `</` would end the <script> element the config sits in.
        rendered = json.dumps(config).replace("</", "<\\/")
        self.page = (STATIC_DIR / "index.html").read_text().replace("{{config}}", rendered)
        self.assets = {name: (STATIC_DIR / name).read_bytes() for name in _ASSETS}

    def routes(self) -> list[web.RouteDef]:
        routes = [
            web.get("/", self.index),
            web.get("/board/socket.io.js", self.client_bundle),
            web.get("/board/charts.js", self.charts_bundle),
            web.get("/board/client/{name}", self.client_module),
            web.get("/board/{name}", self.asset),
        ]
        if self.dev_mode:
            routes.insert(0, web.get(TOKEN_URL, self.token))
        return routes

    async def index(self, request: web.Request) -> web.Response:
        if self.bundle is None:
            return web.Response(
                status=503, content_type="text/plain",
                text="The price board needs socket.io-client: run scripts/setup (it runs npm install) "
                     "or set REALTIME_CLIENT_BUNDLE_DIR to node_modules/socket.io-client/dist.\n")
        if not self.client_modules:
            return web.Response(
                status=503, content_type="text/plain",
                text="The price board needs @realtime/client's build: run scripts/setup "
                     "(it runs npm run build --workspace clients/js).\n")
        return web.Response(text=self.page, content_type="text/html", headers=_PAGE_HEADERS)

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.assets:
            raise web.HTTPNotFound()
        return web.Response(body=self.assets[name], content_type=_ASSETS[name],
                            headers={"Cache-Control": "no-cache"})

    async def client_bundle(self, request: web.Request) -> web.StreamResponse:
        if self.bundle is None:
            raise web.HTTPServiceUnavailable(text="socket.io-client is not installed: run scripts/setup\n")
        # The build depends on REALTIME_SERIALIZER, so never let a cache keep the other one.
        return web.FileResponse(self.bundle, headers={"Cache-Control": "no-cache",
                                                      "Content-Type": "text/javascript"})

    async def charts_bundle(self, request: web.Request) -> web.StreamResponse:
        if self.charts is None:
            raise web.HTTPNotFound(text="lightweight-charts is not installed: run scripts/setup\n")
        return web.FileResponse(self.charts, headers={"Cache-Control": "no-cache", "Content-Type": "text/javascript"})

    async def client_module(self, request: web.Request) -> web.StreamResponse:
        path = self.client_modules.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache", "Content-Type": "text/javascript"})

    async def token(self, request: web.Request) -> web.Response:
        token = self.verifier.mint(DEV_TOKEN_SUBJECT, ttl=DEV_TOKEN_TTL)
        return web.json_response({"token": token, "ttl": DEV_TOKEN_TTL}, headers={"Cache-Control": "no-store"})
