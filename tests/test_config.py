"""Settings: every knob documented, bad values stop start-up with one line naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from realtime.config import ConfigError, Settings, load_settings, parse_assets
from tests.harness import ROOT, free_port, gateway_env


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## Protocol in brief")]
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
    ({"jwt_algorithms": "none"}, "REALTIME_JWT_ALGORITHMS"),
    ({"max_attachments": "-1"}, "REALTIME_MAX_ATTACHMENTS"),
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
