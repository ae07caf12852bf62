"""Token verification with real keys (auth.py), and the token lifecycle on a live gateway."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realtime.clients.auth import TokenVerifier
from realtime.config import ConfigError, Settings
from realtime.protocol import GatewayError
from tests.support import (
    ROOT,
    InProcessFactory,
    InProcessGateway,
    connect_error,
    connected,
    eventually,
    http_json,
    run_node,
    token,
)

BTC = "BTC_USDC_PERP"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC384_KEY = ec.generate_private_key(ec.SECP384R1())


def pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(sub: Any = "alice", ttl: int = 3600, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + ttl, **extra}
    return {k: v for k, v in body.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], body: dict[str, Any], hmac_key: bytes | None = None) -> str:
    """A token pyjwt refuses to make: HMAC over any bytes (a public key), or no signature at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    signature = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def key_file(tmp_path: Path, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    path = tmp_path / f"key-{id(private_key)}.pem"
    path.write_bytes(pem(private_key))
    return str(path)


def verifier(**settings: Any) -> TokenVerifier:
    return TokenVerifier(Settings(**settings))


def refused(verify: TokenVerifier, candidate: str) -> str:
    with pytest.raises(GatewayError) as caught:
        verify.verify(candidate)
    return caught.value.code.value


# What an RS256 deployment must refuse (name -> token), in every placement.
def hostile_rs256_tokens() -> dict[str, str]:
    return {
        "alg none": forge({"alg": "none", "typ": "JWT"}, claims()),
        "alg None, signed": forge({"alg": "None"}, claims(), hmac_key=b"x"),
        "HS256 signed with the public key": forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_key=pem(RSA_KEY)),
        "ES256 (wrong key type)": jwt.encode(claims(), EC_KEY, algorithm="ES256"),
        "RS512 (not allowed)": jwt.encode(claims(), RSA_KEY, algorithm="RS512"),
        "PS256 (not allowed)": jwt.encode(claims(), RSA_KEY, algorithm="PS256"),
        "another RSA key": jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256"),
        "attacker key in the jwk header": jwt.encode(
            claims(), OTHER_RSA_KEY, algorithm="RS256",
            headers={"jwk": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key()))}),
        "missing exp": jwt.encode({"sub": "alice"}, RSA_KEY, algorithm="RS256"),
        "missing sub": jwt.encode(claims(sub=None), RSA_KEY, algorithm="RS256"),
        "numeric sub": jwt.encode(claims(sub=42), RSA_KEY, algorithm="RS256"),
        "list sub": jwt.encode(claims(sub=["alice"]), RSA_KEY, algorithm="RS256"),
        "empty sub": jwt.encode(claims(sub=""), RSA_KEY, algorithm="RS256"),
        "roles not a list": jwt.encode(claims(roles="admin"), RSA_KEY, algorithm="RS256"),
        "string exp": jwt.encode({"sub": "alice", "exp": "never"}, RSA_KEY, algorithm="RS256"),
        "huge": jwt.encode(claims(pad="x" * 5000), RSA_KEY, algorithm="RS256"),
        "three dots": "a.b.c",
        "not ascii": "é" * 40,
    }


# Verification, in process.

def test_rs256_refuses_every_hostile_token(tmp_path: Path) -> None:
    verify = verifier(jwt_public_key_file=key_file(tmp_path, RSA_KEY), jwt_leeway=0)
    assert verify.algorithms == ["RS256"]
    assert verify.verify(jwt.encode(claims(roles=["risk"]), RSA_KEY, algorithm="RS256")).roles == {"risk"}
    codes = {name: refused(verify, bad) for name, bad in hostile_rs256_tokens().items()}
    assert codes == dict.fromkeys(codes, "AUTH_INVALID")
    assert refused(verify, jwt.encode(claims(ttl=-1), RSA_KEY, algorithm="RS256")) == "AUTH_EXPIRED"


def test_es256_accepts_its_curve_only(tmp_path: Path) -> None:
    verify = verifier(jwt_public_key_file=key_file(tmp_path, EC_KEY))
    assert verify.algorithms == ["ES256"]
    assert verify.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256")).sub == "alice"
    for bad in [jwt.encode(claims(), OTHER_EC_KEY, algorithm="ES256"),
                jwt.encode(claims(), EC384_KEY, algorithm="ES384"),
                jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
                forge({"alg": "HS256"}, claims(), hmac_key=pem(EC_KEY))]:
        assert refused(verify, bad) == "AUTH_INVALID"


def test_hs256_issuer_audience_and_leeway() -> None:
    secret = "s" * 64
    verify = verifier(jwt_secret=secret, jwt_issuer="https://id.example", jwt_audience="realtime", jwt_leeway=30)
    good = claims(iss="https://id.example", aud="realtime")
    assert verify.verify(jwt.encode(good, secret, algorithm="HS256")).sub == "alice"
    assert refused(verify, jwt.encode({**good, "iss": "https://evil.example"}, secret, algorithm="HS256")) \
        == "AUTH_INVALID"
    assert refused(verify, jwt.encode({**good, "aud": "other"}, secret, algorithm="HS256")) == "AUTH_INVALID"
    assert refused(verify, jwt.encode(claims(), secret, algorithm="HS256")) == "AUTH_INVALID"  # no iss/aud
    assert refused(verify, jwt.encode(good, secret, algorithm="HS512")) == "AUTH_INVALID"
    # Within the leeway an expired token still passes; beyond it, it does not.
    assert verify.verify(jwt.encode({**good, "exp": int(time.time()) - 10}, secret, algorithm="HS256"))
    assert refused(verify, jwt.encode({**good, "exp": int(time.time()) - 60}, secret, algorithm="HS256")) \
        == "AUTH_EXPIRED"


def test_key_and_algorithm_mismatches_stop_start_up(tmp_path: Path) -> None:
    rsa_file, ec_file = key_file(tmp_path, RSA_KEY), key_file(tmp_path, EC_KEY)
    with pytest.raises(ConfigError, match="REALTIME_JWT_ALGORITHMS: ES256 cannot verify with an RSA key"):
        verifier(jwt_public_key_file=rsa_file, jwt_algorithms="RS256,ES256")
    with pytest.raises(ConfigError, match="ES384 cannot verify with an EC key on secp256r1"):
        verifier(jwt_public_key_file=ec_file, jwt_algorithms="ES384")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        verifier(jwt_public_key_file=str(not_pem))
    # HMAC with a public key never gets past the settings; and the CLI says so in one line.
    result = subprocess.run(
        [sys.executable, "-m", "realtime", "serve", "--jwt-public-key-file", rsa_file, "--jwt-algorithms", "HS256"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "realtime: configuration error: configuration: REALTIME_JWT_ALGORITHMS: HS* cannot be used with a public key"]


# Every placement on a live RS256 gateway.

async def rs256_gateway(start_gateway: InProcessFactory, tmp_path: Path) -> InProcessGateway:
    return await start_gateway(jwt_secret=None, jwt_public_key_file=key_file(tmp_path, RSA_KEY), connect_rate=0)


def placements(candidate: str) -> list[dict[str, Any]]:
    return [{"auth": {"token": candidate}}, {"query": f"token={candidate}"},
            {"headers": {"Authorization": f"Bearer {candidate}"}}]


async def test_every_placement_on_a_live_rs256_gateway(start_gateway: InProcessFactory, tmp_path: Path) -> None:
    gateway = await rs256_gateway(start_gateway, tmp_path)
    good = jwt.encode(claims(sub="carol"), RSA_KEY, algorithm="RS256")
    for placement in placements(good):
        async with connected(gateway.url, **placement) as client:
            assert (await client.call("price:subscribe", [BTC]))["ok"] is True
    for name, bad in hostile_rs256_tokens().items():
        if not bad.isascii():
            continue  # not sendable in a URL or a header as it is; covered in-process
        for placement in placements(bad):
            body = await connect_error(gateway.url, **placement)
            assert body["code"] == "AUTH_INVALID", (name, placement.keys(), body)
    huge = await connect_error(gateway.url, auth={"token": hostile_rs256_tokens()["huge"]})
    assert huge["message"] == "token is larger than 4096 bytes"


async def test_tokens_beyond_the_http_line_limit_get_400(start_gateway: InProcessFactory, tmp_path: Path) -> None:
    gateway = await rs256_gateway(start_gateway, tmp_path)
    enormous = "e" * 20_000
    status, _ = await http_json(gateway.url + f"/socket.io/?EIO=4&transport=polling&token={enormous}")
    assert status == 400
    status, _ = await http_json(gateway.url + "/socket.io/?EIO=4&transport=polling",
                                headers={"Authorization": f"Bearer {enormous}"})
    assert status == 400
    async with connected(gateway.url, auth={"token": jwt.encode(claims(), RSA_KEY, algorithm="RS256")}) as client:
        assert (await client.call("price:subscribe", [BTC]))["ok"] is True


# The lifecycle: auth:expiring, then session:closed and a disconnect; auth:refresh moves the deadline.

async def test_expiring_then_ended_with_the_reason_first(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(jwt_leeway=0, auth_expiry_notice=2)
    short = token("alice", ttl=4)
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    plan = {"url": gateway.url, "auth": {"token": token("bob", ttl=4)}, "transports": ["polling"], "stay": True}
    node = asyncio.create_task(run_node("client.mjs", json.dumps(plan)))
    async with connected(gateway.url, auth={"token": short}) as client:
        await client.wait_for("disconnect", timeout=20)
        assert client.names() == ["auth:expiring", "session:closed", "disconnect"]
        assert client.received("auth:expiring") == [{"exp": exp}]
        assert client.received("session:closed")[0]["code"] == "AUTH_EXPIRED"
        assert time.time() >= exp
    lines = await node
    assert [line["type"] for line in lines] == ["connect", "ready", "event", "event", "disconnect"]
    assert [line["event"] for line in lines if line["type"] == "event"] == ["auth:expiring", "session:closed"]
    assert lines[-1]["reason"] == "io server disconnect"  # socket.io-client will not reconnect by itself
    await eventually(lambda: _no_connections(gateway), timeout=10)


async def test_refresh_moves_the_deadline_both_ways(start_gateway: InProcessFactory) -> None:
    gateway = await start_gateway(jwt_leeway=0, auth_expiry_notice=1)
    short = token("alice", ttl=3)
    old_exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    async with connected(gateway.url, auth={"token": short}) as client:
        await client.wait_for("auth:expiring", timeout=10)
        ack = await client.call("auth:refresh", {"token": token("alice", ttl=3600)})
        assert ack["ok"] is True
        # Hold the connection past the old token's deadline: the scenario, not a wait for something.
        await asyncio.sleep(max(0.0, old_exp + 1.5 - time.time()))
        assert client.client.connected and client.received("session:closed") == []
        assert (await client.call("price:subscribe", [BTC]))["ok"] is True
        # A refresh to a shorter token brings the end closer again.
        ack = await client.call("auth:refresh", {"token": token("alice", ttl=2)})
        await client.wait_for("disconnect", timeout=15)
        assert client.names()[-2:] == ["session:closed", "disconnect"]
        assert client.received("auth:expiring")[-1] == {"exp": ack["exp"]}


async def _no_connections(gateway: InProcessGateway) -> bool:
    _, body = await http_json(gateway.url + "/health")
    return bool(body["connections"] == 0)
