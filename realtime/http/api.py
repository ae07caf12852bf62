"""The HTTP API under `/api/v1/`: the catalog, publishing for back ends, demand.

- `GET /api/v1/assets`: the catalog with decimals and the latest tick of each
  asset. It follows the socket's rule: a Bearer token unless anonymous
  connections are allowed, and a token's `assets` claim hides other prices.
- `POST /api/v1/publish`: a back end that is not Python emits an event to a
  room. A private event (`user:`/`role:` room) is stored in the event log
  first (`realtime.events`): the answer is 2xx only once it is stored, with
  its offset, and 503 within `REALTIME_REDIS_TIMEOUT` while Redis is down or
  hung. An asset-room event goes through the manager, best effort. Needs a
  Bearer token with role `service`.
- `GET /api/v1/demand`: subscribers per asset across all pods. Needs a
  `service` token.

Handlers raise `GatewayError`; the sub-application's middleware maps codes to
HTTP statuses and a JSON body `{"error": {"code", "message"}}`, here and
nowhere else, and counts every answer for `/metrics`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from realtime.catalog import Catalog
from realtime.clients.auth import TokenVerifier
from realtime.cluster.demand import Demand, DemandUnavailable
from realtime.config import Settings
from realtime.engine.server import SocketServer
from realtime.events import validation
from realtime.events.service import Events
from realtime.events.state.service import States
from realtime.feed.prices import PriceBook
from realtime.http.errors import error_response, http_exception_response, json_response
from realtime.metrics import Metrics
from realtime.principal import ANONYMOUS, Principal
from realtime.protocol import AssetInfo, ErrorCode, GatewayError
from realtime.rooms import is_private

PREFIX = "/api/v1"
SERVICE_ROLE = "service"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """The `/api/v1/` sub-application."""

    def __init__(self, sio: SocketServer, settings: Settings, verifier: TokenVerifier, catalog: Catalog,
                 book: PriceBook, demand: Demand, metrics: Metrics, events: Events, states: States) -> None:
        self.sio = sio
        self.settings = settings
        self.verifier = verifier
        self.catalog = catalog
        self.book = book
        self.demand = demand
        self.metrics = metrics
        self.events = events
        self.states = states
        self.max_body = validation.MAX_BODY_BYTES

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.add_routes([
            web.get("/assets", self.assets, name="assets"),
            web.post("/publish", self.publish, name="publish"),
            web.get("/demand", self.demand_report, name="demand"),
            web.post("/state", self.state, name="state"),
        ])
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "other"
        try:
            response = await handler(request)
        except GatewayError as error:
            response = error_response(error)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = http_exception_response(exc)
        self.metrics.api_request(route, response.status)
        return response

    # Who is asking.

    def _principal(self, request: web.Request, *, required: bool) -> Principal:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            if not required:
                return ANONYMOUS
            raise GatewayError(ErrorCode.AUTH_REQUIRED, "an Authorization: Bearer token is required")
        return self.verifier.verify(credentials.strip())

    def _service(self, request: web.Request) -> Principal:
        principal = self._principal(request, required=True)
        if SERVICE_ROLE not in principal.roles:
            raise GatewayError(ErrorCode.FORBIDDEN, f"the token needs the role {SERVICE_ROLE!r}")
        return principal

    # Routes.

    async def assets(self, request: web.Request) -> web.Response:
        principal = self._principal(request, required=not self.settings.allow_anonymous)
        entries: list[AssetInfo] = [
            {"name": asset.name, "decimals": asset.decimals,
             "price": self.book.latest(asset.name, principal.delay) if principal.may_see(asset.name) else None,
             "status": self.book.status(asset.name)}
            for asset in self.catalog
        ]
        return json_response({"assets": entries, "instance": self.settings.instance_id})

    async def publish(self, request: web.Request) -> web.Response:
        self._service(request)
        body = await self._body(request)
        event, room, data = validation.publication(body, self.catalog)
        text = validation.data_text(data)  # the one size rule of every way in
        if is_private(room):
            offset = await self.events.publish(room, event, text)
            return json_response({"ok": True, "event": event, "room": room, "offset": offset}, status=202)
        if not self.sio.manager_ready:
            raise GatewayError(ErrorCode.UNAVAILABLE, "Redis is unavailable; the event was not published")
        await self.sio.emit(event, data, to=room)
        return json_response({"ok": True, "event": event, "room": room}, status=202)

    async def state(self, request: web.Request) -> web.Response:
        """Keyed state (SPEC §10): 200 once the write is stored, with the state's new version."""
        self._service(request)
        ref, version = await self.states.write(await self._body(request))
        return json_response({"ok": True, **ref.head(), "version": version})

    async def demand_report(self, request: web.Request) -> web.Response:
        self._service(request)
        try:
            report = await self.demand.report()
        except DemandUnavailable:
            raise GatewayError(ErrorCode.UNAVAILABLE, "the demand store (Redis) is unavailable") from None
        return json_response(report)

    # The body of a publish request (its fields: `realtime.events.validation`).

    async def _body(self, request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > self.max_body:
            raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {self.max_body} bytes")
        # A chunked body has no length: read one byte past the bound to tell.
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_body:
            chunk = await request.content.read(self.max_body + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > self.max_body:
            raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {self.max_body} bytes")
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise GatewayError(ErrorCode.BAD_REQUEST, "the body is not JSON") from None
