"""What the gateway knows about one connected client: who, its event budget, its subscriptions, rates, books,
channels and states."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from realtime.clients.limits import EventLimiter
from realtime.principal import Principal


@dataclass(slots=True)
class Connection:
    """One connected client."""

    sid: str
    principal: Principal
    limiter: EventLimiter
    subscriptions: set[str] = field(default_factory=set)
    rates: dict[str, float] = field(default_factory=dict)  # asset -> granted maxRate (absent: every tick)
    books: set[str] = field(default_factory=set)  # book rooms `book:<A>:<depth>` (sessions.books)
    # Book rooms joined -> the cadence of the room it is in (None: the book room itself, else a rate room).
    book_rates: dict[str, float | None] = field(default_factory=dict)
    markets: set[str] = field(default_factory=set)  # `trades:<A>`, `candles:<A>:<interval>` (clients.trades)
    channels: set[str] = field(default_factory=set)  # rooms `channel:<name>` (clients.channels)
    states: set[str] = field(default_factory=set)  # rooms `state:<name>:<owner room>` (clients.state)
    notices: list[list[Any]] = field(default_factory=list)  # events for after a recovery's joins
    ending: bool = False
