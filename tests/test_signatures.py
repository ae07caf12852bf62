"""HMAC tokens without pyjwt's per-token set-up (clients/signatures.py): never a token pyjwt refuses.

Every case is decided twice, by `HmacTokens` and by pyjwt with the gateway's
options; the fast path may only defer (None) or agree. It must also accept
the ordinary tokens, or it would be dead code that costs a check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from realtime.clients.auth import TokenVerifier
from realtime.clients.signatures import MAX_HEADERS, HmacTokens
from realtime.config import Settings
from realtime.protocol import GatewayError

SECRET = "k" * 48
OTHER = "o" * 48
LEEWAY = 10.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, body: Any, *, secret: str = SECRET, digest: Any = hashlib.sha256,
           raw_header: bytes | None = None, raw_body: bytes | None = None) -> str:
    """Any header and body, HMAC-signed: tokens pyjwt's encoder would not make."""
    head = b64(raw_header if raw_header is not None else json.dumps(header).encode())
    payload = b64(raw_body if raw_body is not None else json.dumps(body).encode())
    mac = hmac.new(secret.encode(), f"{head}.{payload}".encode(), digest).digest()
    return f"{head}.{payload}.{b64(mac)}"


def body(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "iat": now, "exp": now + 600, **extra}
    return {k: v for k, v in claims.items() if v is not ...}


def pyjwt_claims(token: str, *, algorithms: list[str], issuer: str | None = None,
                 audience: str | None = None) -> dict[str, Any] | None:
    """pyjwt's verdict with the gateway's options (clients.auth): the claims, or None for a refusal."""
    try:
        return jwt.decode(token, SECRET, algorithms=algorithms, issuer=issuer, audience=audience, leeway=LEEWAY,
                          options={"require": ["exp", "sub"], "verify_aud": audience is not None})
    except Exception:
        return None


def cases() -> Iterator[tuple[str, str]]:
    now = int(time.time())
    hs256 = {"alg": "HS256", "typ": "JWT"}
    yield "plain", signed(hs256, body())
    yield "roles and assets", signed(hs256, body(roles=["trader"], assets=["BTC_USDC_PERP"]))
    yield "float exp", signed(hs256, body(exp=now + 600.5))
    yield "expired within the leeway", signed(hs256, body(exp=now - 5))
    yield "expired beyond the leeway", signed(hs256, body(exp=now - 60))
    yield "exp a string", signed(hs256, body(exp=str(now + 600)))
    yield "exp true", signed(hs256, body(exp=True))
    yield "exp null", signed(hs256, body(exp=None))
    yield "exp missing", signed(hs256, body(exp=...))
    yield "exp huge", signed(hs256, body(exp=10**30))
    yield "exp infinite", signed(hs256, body(), raw_body=b'{"sub": "alice", "exp": Infinity}')
    yield "exp NaN", signed(hs256, body(), raw_body=b'{"sub": "alice", "exp": NaN}')
    yield "nbf future", signed(hs256, body(nbf=now + 60))
    yield "nbf within the leeway", signed(hs256, body(nbf=now + 5))
    yield "nbf a string", signed(hs256, body(nbf="soon"))
    yield "iat future", signed(hs256, body(iat=now + 60))
    yield "iat a list", signed(hs256, body(iat=[now]))
    yield "sub missing", signed(hs256, body(sub=...))
    yield "sub a number", signed(hs256, body(sub=42))
    yield "sub null", signed(hs256, body(sub=None))
    yield "jti a number", signed(hs256, body(jti=7))
    yield "jti a string", signed(hs256, body(jti="abc"))
    yield "aud a string", signed(hs256, body(aud="realtime"))
    yield "aud a list", signed(hs256, body(aud=["other", "realtime"]))
    yield "aud other", signed(hs256, body(aud="other"))
    yield "aud empty", signed(hs256, body(aud=""))
    yield "aud a number", signed(hs256, body(aud=5))
    yield "aud mixed list", signed(hs256, body(aud=["realtime", 5]))
    yield "iss", signed(hs256, body(iss="https://id.example"))
    yield "iss other", signed(hs256, body(iss="https://evil.example"))
    yield "iss a number", signed(hs256, body(iss=1))
    yield "body a list", signed(hs256, ["sub", "alice"])
    yield "body not json", signed(hs256, None, raw_body=b"{sub: alice")
    yield "body utf-16", signed(hs256, None, raw_body=json.dumps(body()).encode("utf-16"))
    yield "body deep", signed(hs256, None, raw_body=b'{"sub":"a","exp":9999999999,"x":' + b"[" * 5000
                               + b"]" * 5000 + b"}")
    yield "HS384 (allowed in some cases)", signed({"alg": "HS384"}, body(), digest=hashlib.sha384)
    yield "HS512 header, HS256 signature", signed({"alg": "HS512"}, body())
    yield "alg none", signed({"alg": "none"}, body())
    yield "alg missing", signed({"typ": "JWT"}, body())
    yield "alg a list", signed({"alg": ["HS256"]}, body())
    yield "alg RS256", signed({"alg": "RS256"}, body())
    yield "kid a string", signed({**hs256, "kid": "k1"}, body())
    yield "kid a number", signed({**hs256, "kid": 1}, body())
    yield "crit b64", signed({**hs256, "crit": ["b64"], "b64": True}, body())
    yield "crit unknown", signed({**hs256, "crit": ["exp"]}, body())
    yield "b64 false", signed({**hs256, "b64": False}, body())
    yield "header a list", signed(["HS256"], body())
    yield "header utf-16", signed(None, body(), raw_header=json.dumps(hs256).encode("utf-16"))
    yield "another secret", signed(hs256, body(), secret=OTHER)
    # A token whose payload and signature need padding and whose signature has a character of each alphabet.
    token = next(t for t in (signed(hs256, body(jti=str(n))) for n in range(10_000))
                 if all(len(part) % 4 for part in t.split(".")[1:]) and "-" in t.split(".")[2])
    head, payload, signature = token.split(".")
    yield "the padded token's own", token
    yield "padded signature", f"{head}.{payload}.{signature}{'=' * (-len(signature) % 4)}"
    yield "padded payload", f"{head}.{payload}{'=' * (-len(payload) % 4)}.{signature}"
    yield "signature with a non-zero tail bit", f"{head}.{payload}.{signature[:-1]}{chr(ord(signature[-1]) + 1)}"
    yield "standard alphabet", f"{head}.{payload}.{signature.replace('-', '+').replace('_', '/')}"
    yield "empty signature", f"{head}.{payload}."
    yield "two segments", f"{head}.{payload}"
    yield "four segments", f"{token}.{signature}"
    yield "signature of length 1 mod 4", f"{head}.{payload}.{signature}A"
    yield "whitespace", f"{head}.{payload}.{signature} "
    # Random damage: a character changed anywhere, or a segment cut.
    rng = random.Random(24)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
    for n in range(400):
        at = rng.randrange(len(token))
        yield f"damaged {n}", token[:at] + rng.choice(alphabet.replace(token[at], "")) + token[at + 1:]
    for n in range(40):
        yield f"cut {n}", token[:rng.randrange(len(token))]


# The cases that take the fast path. With an issuer and an audience configured none carries both:
# none does (the next test has ordinary tokens for that configuration).
FAST = {"plain", "roles and assets", "float exp", "expired within the leeway", "exp huge", "nbf within the leeway",
        "jti a string", "aud a string", "aud a list", "aud other", "aud empty", "aud a number", "aud mixed list",
        "iss", "iss other", "iss a number", "body utf-16", "kid a string", "header utf-16", "the padded token's own"}
CONFIGS = [
    pytest.param({"algorithms": ["HS256"]}, FAST, id="HS256"),
    pytest.param({"algorithms": ["HS256", "HS384"], "issuer": "https://id.example", "audience": "realtime"}, set(),
                 id="HS256+HS384, issuer, audience"),
]


@pytest.mark.parametrize(("config", "fast_ones"), CONFIGS)
def test_the_fast_path_accepts_only_what_pyjwt_accepts(config: dict[str, Any], fast_ones: set[str]) -> None:
    fast = HmacTokens(SECRET, config["algorithms"], leeway=LEEWAY, issuer=config.get("issuer"),
                      audience=config.get("audience"))
    assert fast.enabled
    accepted: set[str] = set()
    deferred = 0
    for name, token in cases():
        mine = fast.claims(token)
        theirs = pyjwt_claims(token, **config)
        if mine is None:
            deferred += 1
            continue
        assert theirs is not None, f"{name}: accepted a token pyjwt refuses"
        assert mine == theirs, name
        accepted.add(name)
    assert accepted == fast_ones
    assert deferred > 400


def test_ordinary_tokens_take_the_fast_path_with_issuer_and_audience() -> None:
    fast = HmacTokens(SECRET, ["HS256", "HS384"], leeway=LEEWAY, issuer="https://id.example", audience="realtime")
    for token in [signed({"alg": "HS256"}, body(iss="https://id.example", aud="realtime")),
                  signed({"alg": "HS384"}, body(iss="https://id.example", aud=["x", "realtime"]),
                         digest=hashlib.sha384)]:
        assert fast.claims(token) == pyjwt_claims(token, algorithms=["HS256", "HS384"],
                                                  issuer="https://id.example", audience="realtime")
        assert fast.claims(token) is not None


def test_a_secret_pyjwt_would_refuse_or_warn_about_leaves_every_token_to_pyjwt() -> None:
    assert not HmacTokens("short", ["HS256"], leeway=0, issuer=None, audience=None).enabled
    pem = "-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----"
    assert not HmacTokens(pem, ["HS256"], leeway=0, issuer=None, audience=None).enabled
    assert not HmacTokens(SECRET, ["RS256"], leeway=0, issuer=None, audience=None).enabled


def test_the_clock_and_leeway_decide_expiry_at_the_edge() -> None:
    now = 1_000_000.0
    fast = HmacTokens(SECRET, ["HS256"], leeway=LEEWAY, issuer=None, audience=None, clock=lambda: now)
    # pyjwt: refused when int(exp) <= now - leeway.
    assert fast.claims(signed({"alg": "HS256"}, {"sub": "a", "exp": int(now - LEEWAY) + 1})) is not None
    assert fast.claims(signed({"alg": "HS256"}, {"sub": "a", "exp": int(now - LEEWAY)})) is None
    # nbf and iat: refused when int(value) > now + leeway.
    assert fast.claims(signed({"alg": "HS256"}, {"sub": "a", "exp": now + 60, "nbf": now + LEEWAY})) is not None
    assert fast.claims(signed({"alg": "HS256"}, {"sub": "a", "exp": now + 60, "nbf": now + LEEWAY + 1})) is None
    assert fast.claims(signed({"alg": "HS256"}, {"sub": "a", "exp": now + 60, "iat": now + LEEWAY + 1})) is None


def test_the_verifier_gives_the_same_verdicts_with_and_without_the_fast_path() -> None:
    settings = Settings(jwt_secret=SECRET, jwt_leeway=LEEWAY)
    quick, slow = TokenVerifier(settings), TokenVerifier(settings)
    slow.hmac = None
    assert quick.hmac is not None and quick.hmac.enabled

    def verdict(verifier: TokenVerifier, token: str) -> Any:
        try:
            return verifier.verify(token)
        except GatewayError as error:
            return error.code

    tokens = dict(cases())
    verdicts = {name: verdict(quick, token) for name, token in tokens.items()}
    assert verdicts == {name: verdict(slow, token) for name, token in tokens.items()}
    assert verdicts["plain"].sub == "alice"
    assert str(verdicts["expired beyond the leeway"]) == "AUTH_EXPIRED"


def test_accepted_headers_are_remembered_within_a_bound_and_change_no_verdict() -> None:
    fast = HmacTokens(SECRET, ["HS256"], leeway=LEEWAY, issuer=None, audience=None)
    for n in range(MAX_HEADERS + 20):
        token = signed({"alg": "HS256", "kid": f"key-{n}"}, body())
        assert fast.claims(token) == pyjwt_claims(token, algorithms=["HS256"]) is not None
        # The same header with a bad signature or a refused body: still deferred to pyjwt.
        assert fast.claims(signed({"alg": "HS256", "kid": f"key-{n}"}, body(), secret=OTHER)) is None
        assert fast.claims(signed({"alg": "HS256", "kid": f"key-{n}"}, body(exp=int(time.time()) - 60))) is None
    assert len(fast._headers) == MAX_HEADERS
