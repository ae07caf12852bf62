"""What a keyed-state write may be, and what it changes (pure logic, one rule for the API and the emitter).

A state maps keys to JSON values. A write is a list of ops applied in order,
all or nothing:
- `{"op": "set", "key", "value"}` stores `value`;
- `{"op": "merge", "key", "changes": {...}}` replaces those top-level fields
  of an object value (into a missing key: the changes become the value; into
  a value that is not an object: BAD_REQUEST);
- `{"op": "delete", "key"}` removes the key (a missing key is no change).

`apply` gives the new values of the keys touched and the ops a subscriber
needs to follow: only what changed (a merge carries only the fields whose
value differs, a set equal to the value is dropped, a merge into a missing
key goes out as a `set`). Values are compared as JSON text, so `1` and `true`
differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from realtime.protocol import ErrorCode, GatewayError

MAX_NAME = 64
MAX_KEY = 128
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")


@dataclass(frozen=True, slots=True)
class Limits:
    max_keys: int = 1000  # keys one state may hold
    max_value_bytes: int = 4096  # JSON bytes of one value
    max_ops: int = 1000  # ops of one request


@dataclass(frozen=True, slots=True)
class Op:
    op: Literal["set", "merge", "delete"]
    key: str
    value: Any = None  # set: the value; merge: the changes (an object)


@dataclass(frozen=True, slots=True)
class Change:
    """What a write does: the new JSON of each key touched (None: deleted), and the ops subscribers get."""

    writes: dict[str, bytes | None]
    ops: list[dict[str, Any]]
    keys: int  # keys of the state afterwards


def name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise GatewayError(ErrorCode.BAD_REQUEST, f"a state name is 1..{MAX_NAME} of A-Z a-z 0-9 _ . -")
    return value


def parse_ops(raw: Any, limits: Limits) -> list[Op]:
    """The ops of a request, or GatewayError (BAD_REQUEST; PAYLOAD_TOO_LARGE past a bound)."""
    if not isinstance(raw, list) or not raw:
        raise GatewayError(ErrorCode.BAD_REQUEST, "ops must be a non-empty list")
    if len(raw) > limits.max_ops:
        raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE, f"at most {limits.max_ops} ops per request")
    ops: list[Op] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise GatewayError(ErrorCode.BAD_REQUEST, f"ops[{i}] is not an object")
        kind, key = item.get("op"), item.get("key")
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise GatewayError(ErrorCode.BAD_REQUEST, f"ops[{i}].key is 1..{MAX_KEY} of A-Z a-z 0-9 _ . : @ / -")
        if kind == "set" and set(item) == {"op", "key", "value"}:
            _bounded(item["value"], limits, key)
            ops.append(Op("set", key, item["value"]))
        elif kind == "merge" and set(item) == {"op", "key", "changes"}:
            if not isinstance(item["changes"], dict) or not item["changes"]:
                raise GatewayError(ErrorCode.BAD_REQUEST, f"ops[{i}].changes must be a non-empty object")
            ops.append(Op("merge", key, item["changes"]))
        elif kind == "delete" and set(item) == {"op", "key"}:
            ops.append(Op("delete", key))
        else:
            raise GatewayError(ErrorCode.BAD_REQUEST, f'ops[{i}] must be {{"op": "set", "key", "value"}}, '
                               '{"op": "merge", "key", "changes"} or {"op": "delete", "key"}')
    return ops


def apply(ops: Sequence[Op], current: Mapping[str, bytes | None], keys: int, limits: Limits) -> Change:
    """Apply `ops` to the stored JSON of the keys they touch (`current`; None = absent) of a state of `keys` keys."""
    values: dict[str, Any] = {}
    absent = object()
    for key, raw in current.items():
        values[key] = absent if raw is None else orjson.loads(raw)
    wire: list[dict[str, Any]] = []
    for op in ops:
        old = values.get(op.key, absent)
        if op.op == "set":
            if old is absent or _text(old) != _text(op.value):
                wire.append({"op": "set", "key": op.key, "value": op.value})
            values[op.key] = op.value
        elif op.op == "merge":
            if old is absent:
                values[op.key] = dict(op.value)
                wire.append({"op": "set", "key": op.key, "value": values[op.key]})
                continue
            if not isinstance(old, dict):
                raise GatewayError(ErrorCode.BAD_REQUEST, f"merge into {op.key!r}, whose value is not an object")
            changed = {field: v for field, v in op.value.items() if field not in old or _text(old[field]) != _text(v)}
            values[op.key] = {**old, **op.value}
            if changed:
                wire.append({"op": "merge", "key": op.key, "changes": changed})
        elif old is not absent:
            values[op.key] = absent
            wire.append({"op": "delete", "key": op.key})
    writes: dict[str, bytes | None] = {}
    for key, value in values.items():
        writes[key] = None if value is absent else _bounded(value, limits, key)
    added = sum(1 for key, raw in writes.items() if raw is not None and current.get(key) is None)
    removed = sum(1 for key, raw in writes.items() if raw is None and current.get(key) is not None)
    total = keys + added - removed
    if total > limits.max_keys:
        raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"the state would hold {total} keys; at most {limits.max_keys}")
    return Change(writes, wire, total)


def _bounded(value: Any, limits: Limits, key: str) -> bytes:
    text = orjson.dumps(value)
    if len(text) > limits.max_value_bytes:
        raise GatewayError(ErrorCode.PAYLOAD_TOO_LARGE,
                           f"the value of {key!r} is {len(text)} bytes of JSON; at most {limits.max_value_bytes}")
    return text


def _text(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
