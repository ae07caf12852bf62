"""What the gateway knows about one connected client: who, its event budget, its subscriptions, rates, books,
channels and states."""

from __future__ import annotations

from typing import Any

from realtime.clients.limits import EventLimiter
from realtime.principal import Principal


class Connection:
    """One connected client.

    Most connections only watch prices: the containers for books, trades and candles, channels, states and
    recovery notices are made on first use (four empty sets, a dict and a list cost ~1 KB per connection,
    a seventh of an idle one). `rooms()` reads them without making them.
    """

    __slots__ = (
        "_book_rates",
        "_books",
        "_channels",
        "_markets",
        "_notices",
        "_states",
        "ending",
        "limiter",
        "principal",
        "rates",
        "sid",
        "subscriptions",
    )

    def __init__(self, sid: str, principal: Principal, limiter: EventLimiter) -> None:
        self.sid = sid
        self.principal = principal
        self.limiter = limiter
        self.subscriptions: set[str] = set()
        self.rates: dict[str, float] = {}  # asset -> granted maxRate (absent: every tick)
        self.ending = False
        self._books: set[str] | None = None
        self._book_rates: dict[str, float | None] | None = None
        self._markets: set[str] | None = None
        self._channels: set[str] | None = None
        self._states: set[str] | None = None
        self._notices: list[list[Any]] | None = None

    @property
    def books(self) -> set[str]:
        """Book rooms `book:<A>:<depth>` (clients.books)."""
        if self._books is None:
            self._books = set()
        return self._books

    @property
    def book_rates(self) -> dict[str, float | None]:
        """Book rooms joined -> the cadence of the room it is in (None: the book room itself, else a rate room)."""
        if self._book_rates is None:
            self._book_rates = {}
        return self._book_rates

    @property
    def markets(self) -> set[str]:
        """`trades:<A>`, `candles:<A>:<interval>` (clients.trades)."""
        if self._markets is None:
            self._markets = set()
        return self._markets

    @property
    def channels(self) -> set[str]:
        """Rooms `channel:<name>` (clients.channels)."""
        if self._channels is None:
            self._channels = set()
        return self._channels

    @property
    def states(self) -> set[str]:
        """Rooms `state:<name>:<owner room>` (clients.state)."""
        if self._states is None:
            self._states = set()
        return self._states

    @property
    def notices(self) -> list[list[Any]]:
        """Events for after a recovery's joins."""
        if self._notices is None:
            self._notices = []
        return self._notices

    def take_notices(self) -> list[list[Any]]:
        """The notices so far, leaving none."""
        notices, self._notices = self._notices or [], None
        return notices

    def rooms(self) -> list[str]:
        """The book, trade and candle, channel and state rooms, each kind sorted, without making a container."""
        return [room for kind in (self._books, self._markets, self._channels, self._states) if kind
                for room in sorted(kind)]
