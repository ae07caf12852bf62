"""Settings: every knob documented, bad values stop start-up with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from realtime.catalog import parse_assets
from realtime.config import ConfigError, Settings, load_settings, variable_name
from tests.support import ROOT, free_port, gateway_env


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page[:page.index("## Commands")]
    missing = [name for name in Settings.model_fields if f"`REALTIME_{name.upper()}`" not in table]
    assert missing == []


def test_lists_and_catalog_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALTIME_CORS_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("REALTIME_ASSETS", "btc_usdc_perp:4,EURUSD:5")
    settings = load_settings({"port": "8080"})
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert [(a.name, a.decimals) for a in settings.catalog] == [("BTC_USDC_PERP", 4), ("EURUSD", 5)]
    assert settings.port == 8080 and settings.embedded


@pytest.mark.parametrize("catalog", ["", "BTC", "BTC:x", "BTC:4,BTC:2", "BTC:19", "B/TC:4"])
def test_bad_catalogs_are_refused(catalog: str) -> None:
    with pytest.raises(ValueError):
        parse_assets(catalog)


@pytest.mark.parametrize(("overrides", "variable"), [
    ({"port": "abc"}, "REALTIME_PORT"),
    ({"serializer": "xml"}, "REALTIME_SERIALIZER"),
    ({"redis_url": "http://localhost"}, "REALTIME_REDIS_URL"),
    ({"redis_url": "redis+cluster://10.0.0.1:7000,10.0.0.2"}, "REALTIME_REDIS_URL"),
    ({"price_channels": "some"}, "REALTIME_PRICE_CHANNELS"),
    ({"jwt_algorithms": "none"}, "REALTIME_JWT_ALGORITHMS"),
    ({"connect_timeout": "0"}, "REALTIME_CONNECT_TIMEOUT"),
    ({"connect_attempts": "0"}, "REALTIME_CONNECT_ATTEMPTS"),
    ({"event_abuse_window": "-1"}, "REALTIME_EVENT_ABUSE_WINDOW"),
])
def test_load_settings_names_the_variable(overrides: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(overrides)
    assert error.value.variable.startswith(variable)


@pytest.mark.parametrize(("env", "flags", "variable"), [
    ({"instance_id": ""}, [], "REALTIME_INSTANCE_ID"),
    ({"assets": "BTC_USDC_PERP"}, [], "REALTIME_ASSETS"),
    ({"allow_anonymous": "perhaps"}, [], "REALTIME_ALLOW_ANONYMOUS"),
    ({}, ["--ping-interval", "-5"], "REALTIME_PING_INTERVAL"),
    ({}, ["--port", "99999"], "REALTIME_PORT"),
    ({"jwt_public_key_file": "/nonexistent.pem", "jwt_secret": None}, [], "REALTIME_JWT_PUBLIC_KEY_FILE"),
])
def test_serve_stops_with_one_line(env: dict[str, str | None], flags: list[str], variable: str) -> None:
    process = subprocess.run([sys.executable, "-m", "realtime", "serve", *flags], cwd=ROOT, capture_output=True,
                             text=True, env=gateway_env(free_port(), **env), timeout=60, check=False)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"realtime: configuration error: {variable}"), process.stderr


def serve(env: dict[str, str | None], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "realtime", *(command or ("serve",))], cwd=ROOT, capture_output=True,
                          text=True, env=gateway_env(free_port(), **env), timeout=60, check=False)


@pytest.mark.parametrize("command", [("serve",), ("token", "--sub", "alice")])
def test_a_short_hs_secret_stops_start_up_with_one_line(command: tuple[str, ...]) -> None:
    # 31 bytes: one short of HS256's 256-bit key. Anything guessable is shorter still.
    short = "é" * 15 + "x"
    process = serve({"jwt_secret": short}, *command)
    assert process.returncode == 2 and process.stdout == ""
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("realtime: configuration error: REALTIME_JWT_SECRET (--jwt-secret): "
                               "an HS secret must be at least 32 bytes, got 31")
    assert short not in process.stderr  # a secret is never echoed


def test_a_32_byte_secret_is_enough() -> None:
    assert load_settings({"jwt_secret": "k" * 32}).jwt_secret == "k" * 32


def test_redis_mode_without_a_jwt_key_refuses_to_start() -> None:
    process = serve({"redis_url": "redis://127.0.0.1:1/0", "jwt_secret": None})
    assert process.returncode == 2
    assert process.stderr.strip().splitlines() == [
        "realtime: configuration error: REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY_FILE: Redis mode needs a JWT "
        "key to verify tokens: set one (or REALTIME_DEV=true for a development gateway that hands out its own tokens)"]


def test_dev_mode_only_embedded_or_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("REALTIME_")]:
        monkeypatch.delenv(name)
    assert load_settings().dev_mode  # embedded, no key
    assert not load_settings({"redis_url": "redis://redis:6379/0"}).dev_mode
    assert load_settings({"redis_url": "redis://redis:6379/0", "dev": "true"}).dev_mode
    assert not load_settings({"jwt_secret": "k" * 32}).dev_mode
    with pytest.raises(ConfigError) as error:  # dev mode would hand out tokens signed with the real key
        load_settings({"jwt_secret": "k" * 32, "dev": "true"})
    assert "REALTIME_DEV" in str(error.value)


def test_help_of_every_command_is_complete() -> None:
    # SPEC §1: `--help` on each command is complete (argparse once choked on a "%" in a description).
    for command in ("serve", "feed", "token", "bench"):
        result = subprocess.run([sys.executable, "-m", "realtime", command, "--help"], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert "usage: realtime " + command in result.stdout
    serve = subprocess.run([sys.executable, "-m", "realtime", "serve", "--help"], capture_output=True, text=True,
                           timeout=60).stdout
    for name in Settings.model_fields:
        assert variable_name(name) in serve, name
