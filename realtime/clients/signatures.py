"""HS256/384/512 tokens checked in a few microseconds, accepting only what pyjwt would accept.

pyjwt prepares the HMAC key for every token (re-checking it for PEM, SSH,
DER and JWK shapes, a failing `json.loads` among them), merges its options
and checks the base64 alphabet character by character: ~30 µs a token on a
quiet core, where the HMAC itself is ~1 µs. At a reconnect storm's rate,
with every client its own token, that is a tenth of a connect.

`HmacTokens.claims` does the same checks with the key prepared once: three
canonical unpadded base64url segments, a JSON object header whose `alg` is
one of the allowed HMAC algorithms (a `kid`, if any, a string), the
signature compared in constant time, a JSON object payload, then the claims
as pyjwt validates them with the gateway's options (`exp` and `sub`
required, `exp`/`nbf`/`iat` against the leeway, `iss` and `aud` when
configured, `sub` and `jti` strings). It never refuses: a token it is not
sure to accept (any check failed, or anything unusual: padding, `crit`,
`b64`, a numeric claim that is not a plain number) gets `None`, and pyjwt
decides, so refusals keep pyjwt's errors and no token pyjwt refuses is
let in (`tests/test_signatures.py` holds the two to the same verdicts).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

DIGESTS: dict[str, Callable[..., Any]] = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
                                         "HS512": hashlib.sha512}
# Accepted header segments remembered; past that many (a key rotation's worth), new ones are checked each time.
MAX_HEADERS = 64
# Unpadded base64url; a length of 1 mod 4 is never a valid encoding.
SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class HmacTokens:
    """Verifies HMAC-signed tokens against one secret, with options fixed at start-up."""

    def __init__(self, secret: str, algorithms: Sequence[str], *, leeway: float, issuer: str | None,
                 audience: str | None, clock: Callable[[], float] = time.time) -> None:
        self.digests = {alg: DIGESTS[alg] for alg in algorithms if alg in DIGESTS}
        self.key = secret.encode()
        self.leeway = leeway
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        # Header segments already accepted, with their digest (a few per issuer: by alg and kid).
        self._headers: dict[str, Callable[..., Any]] = {}
        # pyjwt's own key checks, once: a secret it would refuse (or warn about) leaves every token to it.
        self.enabled = bool(self.digests) and _key_accepted(secret, self.digests)

    def claims(self, token: str) -> dict[str, Any] | None:
        """The verified claims of `token`, or None: pyjwt must decide."""
        if not self.enabled:
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        header_part, payload_part, signature_part = parts
        digest = self._headers.get(header_part) or self._header(header_part)
        if digest is None:
            return None
        signature = _segment(signature_part)
        if signature is None:
            return None
        expected = hmac.digest(self.key, f"{header_part}.{payload_part}".encode(), digest)
        if not hmac.compare_digest(expected, signature):
            return None
        payload = _json_object(_segment(payload_part))
        if payload is None or not self._valid(payload):
            return None
        return payload

    def _header(self, part: str) -> Callable[..., Any] | None:
        """The digest of an acceptable header segment (remembered: an issuer signs every token with the same)."""
        header = _json_object(_segment(part))
        if header is None or "crit" in header or "b64" in header:
            return None
        alg = header.get("alg")
        digest = self.digests.get(alg) if isinstance(alg, str) else None
        if digest is None or ("kid" in header and not isinstance(header["kid"], str)):
            return None
        if len(self._headers) < MAX_HEADERS:
            self._headers[part] = digest
        return digest

    def _valid(self, claims: dict[str, Any]) -> bool:
        if claims.get("exp") is None or not isinstance(claims.get("sub"), str):
            return False
        if "jti" in claims and not isinstance(claims["jti"], str):
            return False
        now = self.clock()
        for name in ("iat", "nbf"):
            if name in claims:
                value = _number(claims[name])
                if value is None or value > now + self.leeway:
                    return False
        exp = _number(claims["exp"])
        if exp is None or exp <= now - self.leeway:
            return False
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return False
        aud = claims.get("aud")
        if self.audience is not None:
            audiences = [aud] if isinstance(aud, str) else aud
            if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
                return False
            if self.audience not in audiences:
                return False
        return True


def _key_accepted(secret: str, digests: dict[str, Callable[..., Any]]) -> bool:
    for digest in digests.values():
        algorithm = HMACAlgorithm(digest)
        try:
            prepared = algorithm.prepare_key(secret)
        except jwt.InvalidKeyError:
            return False
        if algorithm.check_key_length(prepared):
            return False
    return True


def _segment(part: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url segment (pyjwt's rule), else None."""
    if len(part) % 4 == 1 or SEGMENT.fullmatch(part) is None:
        return None
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused trailing bits must be zero: one token, one spelling.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != part.encode():
        return None
    return data


def _json_object(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)  # the stdlib, as pyjwt: the same documents parse
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> int | None:
    """A time claim as pyjwt reads it (`int(value)`), for plain finite numbers only."""
    if type(value) is int:
        return value
    if type(value) is float and math.isfinite(value):
        return int(value)
    return None
