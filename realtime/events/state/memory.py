"""`memory://`: keyed state in this process (embedded mode), appending to the in-memory event log.

The change and the append happen in one step of the event loop (the memory
log's `append` never suspends), so versions are in log order as with Redis.
"""

from __future__ import annotations

from typing import Any

import orjson

from realtime.events.memory import MemoryLog
from realtime.events.state.ops import Limits, Op, apply
from realtime.events.state.store import StateRef
from realtime.protocol import STATE_UPDATE


class MemoryStates:
    def __init__(self, log: MemoryLog, limits: Limits) -> None:
        self.log = log
        self.limits = limits
        self._states: dict[str, tuple[int, dict[str, bytes]]] = {}

    async def write(self, ref: StateRef, ops: list[Op]) -> int:
        version, items = self._states.get(ref.room, (0, {}))
        change = apply(ops, {op.key: items.get(op.key) for op in ops}, len(items), self.limits)
        # `apply` refused or succeeded as a whole: from here on, nothing can fail half-way.
        for key, raw in change.writes.items():
            if raw is None:
                items.pop(key, None)
            else:
                items[key] = raw
        self._states[ref.room] = (version + 1, items)
        await self.log.append(ref.room, STATE_UPDATE, ref.update(version + 1, change))
        return version + 1

    async def snapshot(self, ref: StateRef) -> tuple[int, dict[str, Any]]:
        version, items = self._states.get(ref.room, (0, {}))
        return version, {key: orjson.loads(raw) for key, raw in items.items()}

    async def close(self) -> None:
        pass
