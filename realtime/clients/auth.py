"""JWT authentication: where a client's token is found, and what it entitles.

A token is verified into a `Principal` (subject, roles, asset entitlement,
expiry). Failures raise `GatewayError` with AUTH_* codes; the caller maps them
to the wire. Tokens are never logged.

Algorithms are an allow-list that never holds `none`, and never mixes HMAC
with a public key (config refuses it): a token's own `alg` header only picks
among algorithms the configured key can verify, so an HS256 token signed with
the public key's bytes, or an ES256 token against an RSA key, is refused.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from realtime.channels import names
from realtime.clients.requests import parse_rate
from realtime.clients.tokens import VerifiedTokens
from realtime.config import ConfigError, Settings, dev_secret
from realtime.principal import Principal
from realtime.protocol import ErrorCode, GatewayError

ROLE_NAME_MAX = 64
MAX_CHANNEL_GRANTS = 1000
# The curve each ECDSA algorithm signs with (RFC 7518 §3.4).
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def extract_token(environ: Mapping[str, Any], auth: Any) -> str | None:
    """The token from, in order: CONNECT `auth.token`, `?token=`, `Authorization: Bearer`."""
    if isinstance(auth, dict) and auth.get("token") is not None:
        token: object = auth["token"]
        if not isinstance(token, str):
            raise GatewayError(ErrorCode.AUTH_INVALID, "auth.token must be a string")
        return token
    query: dict[str, list[str]] = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("token"):
        return query["token"][0]
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class TokenVerifier:
    """Verifies tokens against the configured key, algorithms, issuer and audience."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway
        self.dev_mode = settings.dev_mode
        self.max_bytes = settings.jwt_max_bytes
        self.delay_tiers = settings.delay_tiers
        # The parsed key object: pyjwt would otherwise parse the PEM again for every token.
        self.key: str | rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if settings.jwt_public_key_file:
            self.key = _public_key(Path(settings.jwt_public_key_file))
            self.algorithms = _algorithms_for(self.key, settings.jwt_algorithms)
        else:
            self.key = settings.jwt_secret or dev_secret()
            self.algorithms = settings.jwt_algorithms or ["HS256"]
        # A token is verified once per token and expiry, not at every (re)connect.
        self.verified = VerifiedTokens(self.leeway)

    def verify(self, token: str) -> Principal:
        # Size first, before any decoding; a JWT is plain ASCII (base64url and dots).
        if len(token) > self.max_bytes:
            raise GatewayError(ErrorCode.AUTH_INVALID, f"token is larger than {self.max_bytes} bytes")
        principal = self.verified.get(token)
        if principal is None:
            principal = self._decode(token)
            self.verified.put(token, principal)
        return principal

    def _decode(self, token: str) -> Principal:
        if not token.isascii():
            raise GatewayError(ErrorCode.AUTH_INVALID, "invalid token: not a JWT")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise GatewayError(ErrorCode.AUTH_EXPIRED, "token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise GatewayError(ErrorCode.AUTH_INVALID, f"invalid token: {exc}") from None
        except Exception:  # a hostile token must never reach the client as INTERNAL
            raise GatewayError(ErrorCode.AUTH_INVALID, "invalid token") from None
        principal = _principal(claims)
        if principal.delay and principal.delay not in self.delay_tiers:
            offered = ", ".join(map(str, self.delay_tiers)) or "none"
            raise GatewayError(ErrorCode.AUTH_INVALID, f"the token asks for a {principal.delay} s delay; "
                                                       f"this gateway offers delays (s) of {offered}")
        return principal

    def mint(self, sub: str, roles: Sequence[str] = (), assets: Sequence[str] | None = None, ttl: int = 3600) -> str:
        """A token for this verifier's secret (dev mode and tests only)."""
        if not isinstance(self.key, str):
            raise RuntimeError("cannot mint tokens with a public key")
        return mint_token(self.key, sub, roles=roles, assets=assets, ttl=ttl, algorithm=self.algorithms[0],
                          issuer=self.issuer, audience=self.audience)


def _public_key(path: Path) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    variable = "REALTIME_JWT_PUBLIC_KEY_FILE"
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror}") from None
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        raise ConfigError(variable, f"{path} is not a PEM public key") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise ConfigError(variable, f"{path} is neither an RSA nor an EC key")
    return key


def _algorithms_for(key: PublicKeyTypes, wanted: list[str]) -> list[str]:
    """The allowed algorithms `key` can verify: RS* for RSA, the ES* of the key's curve for EC."""
    if isinstance(key, rsa.RSAPublicKey):
        usable = ["RS256", "RS384", "RS512"]
        kind = "an RSA key"
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        usable = [alg for alg, curve in EC_CURVES.items() if curve == key.curve.name]
        kind = f"an EC key on {key.curve.name}"
    if not usable:
        raise ConfigError("REALTIME_JWT_PUBLIC_KEY_FILE", f"{kind} matches no ES256/ES384/ES512 curve")
    if not wanted:
        return usable[:1] if isinstance(key, rsa.RSAPublicKey) else usable
    unusable = [alg for alg in wanted if alg not in usable]
    if unusable:
        raise ConfigError("REALTIME_JWT_ALGORITHMS",
                          f"{', '.join(unusable)} cannot verify with {kind}; use {', '.join(usable)}")
    return wanted


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 256:
        raise GatewayError(ErrorCode.AUTH_INVALID, "sub must be a non-empty string")
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and 0 < len(r) <= ROLE_NAME_MAX for r in roles):
        raise GatewayError(ErrorCode.AUTH_INVALID, "roles must be a list of strings")
    assets = claims.get("assets")
    if assets is not None and (not isinstance(assets, list) or not all(isinstance(a, str) for a in assets)):
        raise GatewayError(ErrorCode.AUTH_INVALID, "assets must be a list of strings")
    delay = claims.get("delay", 0)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 86_400:
        raise GatewayError(ErrorCode.AUTH_INVALID, "delay must be a whole number of seconds, 0..86400")
    channels = claims.get("channels", [])
    if (not isinstance(channels, list) or len(channels) > MAX_CHANNEL_GRANTS
            or not all(map(names.valid_grant, channels))):
        raise GatewayError(ErrorCode.AUTH_INVALID, f"channels must be a list of at most {MAX_CHANNEL_GRANTS} "
                                                   "channel names or patterns ending in *")
    max_rate = parse_rate(claims.get("maxRate"), ErrorCode.AUTH_INVALID)
    exp = claims["exp"]
    return Principal(
        sub=sub,
        roles=frozenset(roles),
        assets=None if assets is None else frozenset(a.upper() for a in assets),
        exp=int(exp),
        delay=delay,
        channels=tuple(channels),
        max_rate=max_rate,
    )


def mint_token(
    secret: str,
    sub: str,
    *,
    roles: Sequence[str] = (),
    assets: Sequence[str] | None = None,
    ttl: int = 3600,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    delay: int | None = None,
    channels: Sequence[str] | None = None,
    max_rate: float | None = None,
) -> str:
    """Sign a development token: `sub`, `roles`, optional `assets`, `delay` and `maxRate`, `exp` = now + ttl."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "roles": list(roles), "iat": now, "exp": now + ttl}
    if assets is not None:
        claims["assets"] = list(assets)
    if delay is not None:
        claims["delay"] = delay
    if channels is not None:
        claims["channels"] = list(channels)
    if max_rate is not None:
        claims["maxRate"] = max_rate
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm=algorithm)
