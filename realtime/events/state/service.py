"""`States`: the keyed state of one pod (its store: `realtime.backends`), and how it meets recovery.

Writes come from the API (`POST /api/v1/state`) and the emitter; each
accepted write is one `state:update` in the event log. A recovering
connection gets the updates it missed replayed from its state's room
history, unless that replay may be incomplete or is long: the client's
offset is older than what the log keeps (the window), or more than
`REALTIME_STATE_REPLAY` updates are missing. Then it gets `state:snapshot`
(the subscribe ack's shape) instead, read while the log reader delivers
nothing, so updates that follow it carry later versions (or versions it
already has, which a client ignores).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from realtime.backplane.connections import REDIS_ERRORS
from realtime.channels import names
from realtime.config import Settings
from realtime.events import offsets, validation
from realtime.events.log import Entry
from realtime.events.state import ops
from realtime.events.state.ops import Limits
from realtime.events.state.store import StateRef, StateStore, parse_room
from realtime.protocol import STATE_SNAPSHOT, ErrorCode, GatewayError

logger = logging.getLogger(__name__)



def limits(settings: Settings) -> Limits:
    return Limits(max_keys=settings.state_max_keys, max_value_bytes=settings.state_max_value_bytes)


class States:
    def __init__(self, settings: Settings, store: StateStore, *, keep: float) -> None:
        self.store = store  # memory or Redis: `realtime.backends`
        self.keep_ms = keep * 1000
        self.replay = settings.state_replay
        self.limits = limits(settings)
        self.timeout = settings.redis_timeout

    async def write(self, body: Any) -> tuple[StateRef, int]:
        """`POST /api/v1/state`: apply `{"user" | "channel", "name", "ops"}`; the state and its new version.

        GatewayError for a refusal (nothing changed) and UNAVAILABLE when Redis did not answer in time
        (then the write may or may not be stored, as for a publish).
        """
        if not isinstance(body, dict) or not set(body) <= {"user", "channel", "name", "ops"}:
            raise GatewayError(ErrorCode.BAD_REQUEST, 'expected {"user" or "channel", "name", "ops"}')
        if ("user" in body) == ("channel" in body):
            raise GatewayError(ErrorCode.BAD_REQUEST, "give exactly one of user and channel")
        name = ops.name(body.get("name"))
        parsed = ops.parse_ops(body.get("ops"), self.limits)
        if "channel" in body:
            ref = StateRef.of(name, channel=names.channel(body["channel"]))
        else:
            ref = StateRef(name, validation.user(body["user"]))
        try:
            async with asyncio.timeout(self.timeout):
                return ref, await self.store.write(ref, parsed)
        except REDIS_ERRORS:
            raise GatewayError(ErrorCode.UNAVAILABLE, "Redis is unavailable; the state may not be written") from None

    async def snapshot(self, ref: StateRef) -> dict[str, Any]:
        """The subscribe ack's payload (and `state:snapshot`'s): head, version and items."""
        version, items = await self.store.snapshot(ref)
        return {**ref.head(), "version": version, "items": items}

    async def condense(self, room: str, after: offsets.Offset, missed: list[Entry] | None) -> list[list[Any]] | None:
        """Recovery: what to send instead of `missed` (None: the history could not be read), or None to replay it."""
        ref = parse_room(room)
        if ref is None:
            return None
        stale = offsets.key(after)[0] < time.time() * 1000 - self.keep_ms
        if missed is not None and not stale and len(missed) <= self.replay:
            return None
        try:
            return [[STATE_SNAPSHOT, await self.snapshot(ref)]]
        except REDIS_ERRORS as exc:
            # Joined without it: the next update's version gap tells the client to subscribe again.
            logger.warning("state: no snapshot of %s for a recovery (%s)", ref.name, exc.__class__.__name__)
            return None

    async def close(self) -> None:
        await self.store.close()
