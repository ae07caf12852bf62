"""Log set-up: one line per event, plain text or JSON (`REALTIME_LOG_FORMAT`).

Every line carries the instance id, and the `sid` and `user` of the connection
being served when there is one (`log_context`). Tokens never reach a line:
anything shaped like a JWT or a `token=` parameter is masked by the formatter,
whatever logged it. A warning or error repeated from the same place (Redis
down, a flood of bad ticks) is written at most once per `REPEAT_WINDOW`
seconds; the next line that gets through says how many were held back
(`repeated`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

from realtime.config import Settings

# Attributes every LogRecord has; anything else was passed in `extra=` and is emitted as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

REPEAT_WINDOW = 10.0
MAX_TRACKED = 10_000
# A JWT (base64url header starting with '{"') and any token= / "token": value.
_SECRETS = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|(?<=token=)[^&\s\"']+"
    r"|(?<=[\"']token[\"']: [\"'])[^\"']+"
    r"|(?<=\"token\":\")[^\"]+"
)
MASK = "<redacted>"

# The connection being served; set per handler task, so it never leaks between clients.
_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("realtime_log_context", default=())


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add `fields` (e.g. sid, user) to every line logged inside the block."""
    reset = _context.set((*_context.get(), *((k, v) for k, v in fields.items() if v is not None)))
    try:
        yield
    finally:
        _context.reset(reset)


def redact(text: str) -> str:
    """Mask anything that looks like a token."""
    return _SECRETS.sub(MASK, text)


class ContextFilter(logging.Filter):
    """Copies the current `log_context` onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RepeatFilter(logging.Filter):
    """Lets a warning or error from one call site through once per window, with a count of the rest."""

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        # (logger, level, message template) -> (last written, held back since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self._seen.get(key, (-self.window, 0))
        if now - last < self.window:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.repeated = held
        if len(self._seen) >= MAX_TRACKED:
            self._seen.clear()  # messages built by f-strings would otherwise grow this forever
        self._seen[key] = (now, 0)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def __init__(self, instance: str) -> None:
        super().__init__()
        self.instance = instance

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "instance": self.instance,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`, the fields being sid, user, repeated and extras."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            extra = " ".join(f"{key}={value}" for key, value in fields.items())
            head, sep, tail = line.partition("\n")  # keep a traceback below the fields
            line = f"{head} {extra}{sep}{tail}"
        return redact(line)


NOISY = ("socketio", "engineio", "aiohttp.access")  # python-socketio and python-engineio log every packet at INFO


def handler(settings: Settings, stream: TextIO) -> logging.Handler:
    """The gateway's log handler: its format, the connection's fields, repeats held back."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(settings.instance_id) if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RepeatFilter())
    return handler


def configure(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler(settings, sys.stderr)]
    root.setLevel(settings.log_level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
