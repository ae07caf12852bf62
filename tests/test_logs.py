"""Log lines: JSON with instance, sid and user; never a token; repeated errors held back with a count."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from realtime.feed.ingest import DROPPED
from realtime.logs import ContextFilter, JsonFormatter, RepeatFilter, TextFormatter, log_context
from realtime.protocol import TickOutcome
from tests.support import GatewayFactory, connect_error, connected, free_port, publish, token

JWT = token("alice")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, Clock]]:
    """A logger wired like `logs.configure` does, writing JSON into a buffer, with a clock the test moves."""
    stream, clock = io.StringIO(), Clock()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("pod-1"))
    handler.addFilter(ContextFilter())
    handler.addFilter(RepeatFilter(window=10, clock=clock))
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, clock
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_instance_sid_and_user(capture: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    logger, stream, _ = capture
    with log_context(sid="s1", user="alice"):
        logger.info("subscribed to %d assets", 2)
    logger.info("no connection here")
    first, second = lines(stream)
    assert first["msg"] == "subscribed to 2 assets"
    assert (first["instance"], first["sid"], first["user"], first["level"]) == ("pod-1", "s1", "alice", "info")
    assert "sid" not in second and "user" not in second


def test_tokens_never_reach_a_line(capture: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    logger, stream, _ = capture
    logger.warning("refused %s", JWT)
    logger.info("GET /socket.io/?EIO=4&token=%s&transport=websocket", "opaque-secret-123")
    logger.info("auth payload", extra={"auth": {"token": JWT}})
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        logger.exception("handler failed")
    text = stream.getvalue()
    assert JWT not in text and JWT.split(".")[2] not in text and "opaque-secret-123" not in text
    assert text.count("<redacted>") == 4  # the message, the URL, the extra, the traceback


def test_text_lines_carry_fields_and_no_token() -> None:
    record = logging.makeLogRecord({"name": "realtime.clients.handlers", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "connected with %s", "args": (JWT,), "sid": "s1", "user": "bob"})
    line = TextFormatter().format(record)
    assert "realtime.clients.handlers: connected with <redacted> sid=s1 user=bob" in line and JWT not in line


def test_repeated_errors_are_held_back_and_counted(capture: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    logger, stream, clock = capture
    for _ in range(5):
        logger.warning("Redis unavailable (%s)", "ConnectionError")
    logger.warning("something else")
    for _ in range(3):
        logger.info("info lines are never held back")
    clock.now += 11
    logger.warning("Redis unavailable (%s)", "TimeoutError")
    got = [(line["msg"], line.get("repeated")) for line in lines(stream)]
    assert got == [
        ("Redis unavailable (ConnectionError)", None),
        ("something else", None),
        *[("info lines are never held back", None)] * 3,
        ("Redis unavailable (TimeoutError)", 4),
    ]


def test_dropped_ticks_get_a_line_per_outcome_and_a_count(capture: tuple[logging.Logger, io.StringIO, Clock]) -> None:
    # Ingest logs each outcome with its own template: a flood of one kind never hides another.
    logger, stream, clock = capture
    for _ in range(4):
        logger.warning(DROPPED[TickOutcome.MALFORMED], "not JSON")
    logger.warning(DROPPED[TickOutcome.CROSSED], "BTC_USDC_PERP: bid 2 > ask 1")
    clock.now += 11
    logger.warning(DROPPED[TickOutcome.MALFORMED], "not JSON")
    got = [(line["msg"], line.get("repeated")) for line in lines(stream)]
    assert got == [
        ("feed: dropped malformed tick: not JSON", None),
        ("feed: dropped crossed tick: BTC_USDC_PERP: bid 2 > ask 1", None),
        ("feed: dropped malformed tick: not JSON", 3),
    ]


async def test_gateway_logs_json_with_context_and_no_token(start_process: GatewayFactory,
                                                           redis_server: Any) -> None:
    suffix = str(free_port())
    gateway = start_process(redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                            manager_channel=f"socketio-{suffix}", log_format="json", log_level="debug",
                            instance_id="pod-logs")
    secret = token("alice")
    async with connected(gateway.url, query=f"token={secret}") as client:
        await client.call("price:subscribe", ["BTC_USDC_PERP"])
    assert (await connect_error(gateway.url, auth={"token": secret + "x"}))["code"] == "AUTH_INVALID"
    async with connected(gateway.url, auth={"token": token("bob")}) as bob:
        await bob.call("price:subscribe", ["BTC_USDC_PERP"])
        # A flood of bad ticks makes one warning, not fifty.
        await publish(gateway.env["REALTIME_REDIS_URL"], gateway.env["REALTIME_PRICE_CHANNEL"],
                      *[b"{garbage"] * 50, {"asset": "BTC_USDC_PERP", "bid": 1, "ask": 2})
        await bob.wait_for("price:update", timeout=10)
    assert gateway.stop() == 0

    text = gateway.logs()
    assert secret not in text and secret.split(".")[2] not in text
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries and all(entry["instance"] == "pod-logs" for entry in entries)
    connects = [entry for entry in entries if entry["msg"] == "connected"]
    assert {entry["user"] for entry in connects} == {"alice", "bob"} and all(entry["sid"] for entry in connects)
    assert any(entry["msg"] == "refused: AUTH_INVALID" and entry["sid"] for entry in entries)
    assert len([entry for entry in entries if entry["level"] == "warning" and "malformed" in entry["msg"]]) == 1
