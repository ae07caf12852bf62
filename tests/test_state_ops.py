"""Pure logic of channels and keyed state: names and claims, what a write changes, the hook's cache bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from realtime.channels import names
from realtime.channels.access import service_token
from realtime.channels.hook import SubscribeHook
from realtime.config import ConfigError, load_settings
from realtime.events.state.ops import Limits, apply, parse_ops
from realtime.protocol import GatewayError
from tests.support import SECRET
from tests.support.channels import subscribe_hook

LIMITS = Limits(max_keys=5, max_value_bytes=64)


def change(ops: list[dict[str, Any]], current: dict[str, Any], limits: Limits = LIMITS) -> Any:
    stored: dict[str, bytes | None] = {key: orjson.dumps(value) for key, value in current.items()}
    for op in ops:
        stored.setdefault(op.get("key", ""), None)  # touched and absent
    return apply(parse_ops(ops, limits), stored, len(current), limits)


def test_channel_names_and_claims() -> None:
    assert names.channel("bot:42:status") == "bot:42:status"
    for reserved in ("asset:x", "user:bob", "role:risk", "book:x", "channel:x"):
        with pytest.raises(GatewayError) as refused:
            names.channel(reserved)
        assert refused.value.code == "FORBIDDEN"
    for bad in ("bot", ":x", "bot:", "bot:a b", "bot:é", "x:" + "a" * 127, None, 7):
        with pytest.raises(GatewayError) as refused:
            names.channel(bad)
        assert refused.value.code == "BAD_REQUEST"
    assert names.channel("x:" + "a" * 126)  # 128 bytes
    grants = ["bot:42:*", "desk:fx"]
    assert names.granted(grants, "bot:42:trades") and names.granted(grants, "desk:fx")
    assert not names.granted(grants, "bot:420") and not names.granted(grants, "desk:fxx")
    assert names.valid_grant("bot:*") and names.valid_grant("*") and not names.valid_grant("bot:*:x")


def test_a_write_sends_only_what_changed() -> None:
    current = {"a": {"qty": 1, "profit": "0"}, "b": 5}
    done = change([{"op": "merge", "key": "a", "changes": {"qty": 1, "profit": "2.5"}},
                   {"op": "set", "key": "b", "value": 5},
                   {"op": "merge", "key": "c", "changes": {"qty": 3}},
                   {"op": "delete", "key": "zz"},
                   {"op": "delete", "key": "b"}], current)
    assert done.ops == [{"op": "merge", "key": "a", "changes": {"profit": "2.5"}},
                        {"op": "set", "key": "c", "value": {"qty": 3}},
                        {"op": "delete", "key": "b"}]
    assert done.keys == 2
    assert orjson.loads(done.writes["a"] or b"") == {"qty": 1, "profit": "2.5"}
    assert done.writes["b"] is None
    # JSON types are compared as JSON: true is not 1.
    assert change([{"op": "merge", "key": "a", "changes": {"qty": True}}], current).ops == [
        {"op": "merge", "key": "a", "changes": {"qty": True}}]


@pytest.mark.parametrize(("ops", "code"), [
    ([{"op": "merge", "key": "b", "changes": {"x": 1}}], "BAD_REQUEST"),  # b is not an object
    ([{"op": "set", "key": k, "value": 1} for k in "cdefg"], "PAYLOAD_TOO_LARGE"),  # 7 keys > 5
    ([{"op": "set", "key": "c", "value": "x" * 70}], "PAYLOAD_TOO_LARGE"),
    ([{"op": "merge", "key": "a", "changes": {"note": "x" * 60}}], "PAYLOAD_TOO_LARGE"),
    ([{"op": "set", "key": "a"}], "BAD_REQUEST"),
    ([{"op": "merge", "key": "a", "changes": {}}], "BAD_REQUEST"),
    ([{"op": "set", "key": "a b", "value": 1}], "BAD_REQUEST"),
    ([], "BAD_REQUEST"),
])
def test_refusals(ops: list[dict[str, Any]], code: str) -> None:
    with pytest.raises(GatewayError) as refused:
        change(ops, {"a": {"qty": 1}, "b": 5})
    assert refused.value.code == code


values = st.one_of(st.integers(-3, 3), st.booleans(), st.none(), st.text(max_size=3),
                   st.dictionaries(st.sampled_from("xyz"), st.integers(0, 2), max_size=3))
op_lists = st.lists(st.one_of(
    st.builds(lambda k, v: {"op": "set", "key": k, "value": v}, st.sampled_from("abc"), values),
    st.builds(lambda k, c: {"op": "merge", "key": k, "changes": c}, st.sampled_from("abc"),
              st.dictionaries(st.sampled_from("xyz"), st.integers(0, 2), min_size=1, max_size=3)),
    st.builds(lambda k: {"op": "delete", "key": k}, st.sampled_from("abc"))), min_size=1, max_size=6)


@given(st.dictionaries(st.sampled_from("abc"), values), op_lists)
def test_applying_the_sent_ops_gives_the_stored_state(current: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    limits = Limits(max_keys=10, max_value_bytes=1000)
    try:
        done = change(ops, current, limits)
    except GatewayError:
        return
    stored = {**current}
    for key, raw in done.writes.items():
        if raw is None:
            stored.pop(key, None)
        else:
            stored[key] = orjson.loads(raw)
    client = {**current}
    for op in done.ops:
        if op["op"] == "set":
            client[op["key"]] = op["value"]
        elif op["op"] == "merge":
            old = client[op["key"]]
            assert all(f not in old or orjson.dumps(old[f]) != orjson.dumps(v) for f, v in op["changes"].items())
            client[op["key"]] = {**client[op["key"]], **op["changes"]}
        else:
            del client[op["key"]]
    assert orjson.dumps(client, option=orjson.OPT_SORT_KEYS) == orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
    assert done.keys == len(stored)


async def test_the_hook_cache_is_bounded() -> None:
    async with subscribe_hook() as backend:
        backend.rules.update({"bot:1": "allow", "bot:2": "allow", "bot:3": "deny"})
        hook = SubscribeHook(backend.url, service_token(SECRET, "test"), timeout=2, default_ttl=60, cache_size=2,
                             breaker=0, registry=CollectorRegistry())
        try:
            for channel in ("bot:1", "bot:2", "bot:1", "bot:3", "bot:2", "bot:1"):
                await hook.allows("alice", [], channel)
            # Two answers kept: bot:3 pushed out bot:2 (the least recently used), bot:2 then bot:1.
            assert backend.calls == {"bot:1": 2, "bot:2": 2, "bot:3": 1}
            assert len(hook._cache) == 2
        finally:
            await hook.close()



@pytest.mark.parametrize(("overrides", "variable"), [
    ({"subscribe_hook": "ftp://backend/hook", "jwt_secret": "k" * 32}, "REALTIME_SUBSCRIBE_HOOK"),
    ({"public_channels": "announcements,user"}, "REALTIME_PUBLIC_CHANNELS"),
    ({"public_channels": "news room"}, "REALTIME_PUBLIC_CHANNELS"),
    ({"subscribe_hook_secret": "short", "jwt_secret": "k" * 32}, "REALTIME_SUBSCRIBE_HOOK_SECRET"),
    ({"state_max_keys": "0"}, "REALTIME_STATE_MAX_KEYS"),
    ({"subscribe_hook_timeout": "0"}, "REALTIME_SUBSCRIBE_HOOK_TIMEOUT"),
])
def test_bad_channel_and_state_settings_name_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(overrides)
    assert error.value.variable.startswith(variable), error.value


def test_a_hook_needs_a_secret_to_sign_with(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    private = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ConfigError) as error:
        load_settings({"subscribe_hook": "https://backend/hook", "jwt_public_key_file": str(key)})
    assert "REALTIME_SUBSCRIBE_HOOK_SECRET" in str(error.value)
    assert load_settings({"subscribe_hook": "https://backend/hook", "jwt_public_key_file": str(key),
                          "subscribe_hook_secret": "s" * 32}).subscribe_hook == "https://backend/hook"
