"""docker/ checked without docker: the files' commands are run for real, their settings read back.

The cluster tests run docker/nginx.conf itself; here the Dockerfile's command and
HEALTHCHECK run against a real gateway, the compose feed command publishes to a
real Redis, and the compose and Kubernetes files are held to the settings and
the shutdown grace they must agree with.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from realtime.config import Settings
from tests.conftest import GatewayFactory
from tests.harness import ROOT, Gateway, RedisServer, connected, free_port, gateway_env, token

DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent


def dockerfile(instruction: str) -> str:
    lines = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    found = [line.split(None, 1)[1] for line in lines if line.startswith(instruction + " ")]
    assert len(found) == 1, (instruction, found)
    return found[0]


def manifests() -> dict[str, Any]:
    return {doc["kind"]: doc for path in sorted((DOCKER / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc}


async def run(command: list[str], env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(*command, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.DEVNULL)
    return await asyncio.wait_for(process.wait(), 60)


def settings_named(env: dict[str, Any]) -> set[str]:
    return {name for name in env if name.startswith("REALTIME_")
            and name.removeprefix("REALTIME_").lower() not in Settings.model_fields}


async def test_image_command_and_healthcheck(tmp_path: Path, redis_server: RedisServer) -> None:
    command = json.loads(dockerfile("CMD"))
    assert command == ["realtime", "serve"] and dockerfile("USER") != "root"
    port = free_port()
    suffix = str(port)
    gateway = Gateway(port=port, log_path=tmp_path / "image.log", command=[str(BIN / command[0]), *command[1:]],
                      env=gateway_env(port, redis_url=redis_server.url, price_channel=f"prices-{suffix}",
                                      manager_channel=f"socketio-{suffix}"))
    healthcheck = json.loads(re.sub(r"^.*?CMD\s+", "", dockerfile("HEALTHCHECK")))
    healthcheck[0] = str(BIN / "python") if healthcheck[0] == "python" else healthcheck[0]
    gateway.start()
    try:
        assert await run(healthcheck, gateway.env) == 0
        async with connected(gateway.url, auth={"token": token("alice")}) as client:
            assert (await client.call("price:subscribe", ["BTC_USDC_PERP"]))["ok"] is True
    finally:
        assert gateway.stop() == 0  # SIGTERM: a clean exit
    assert await run(healthcheck, gateway.env) != 0


async def test_compose_feed_publishes_to_the_gateways(start_gateway: GatewayFactory, redis_server: RedisServer) -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "gateway", "nginx", "feed"} <= set(services)
    assert services["gateway"]["deploy"]["replicas"] == 3
    mounts = services["nginx"]["volumes"]
    assert {"./nginx.conf:/etc/nginx/nginx.conf:ro", "./upstreams.conf:/etc/nginx/upstreams.conf:ro"} <= set(mounts)
    env = services["gateway"]["environment"]
    assert settings_named(env) == set() and settings_named(services["feed"]["environment"]) == set()
    grace = float(env["REALTIME_SHUTDOWN_GRACE"])
    assert float(services["gateway"]["stop_grace_period"].removesuffix("s")) > grace

    gateway = start_gateway(redis_url=redis_server.url, price_channel=f"prices-{free_port()}")
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", ["BTC_USDC_PERP"])
        feed = [str(BIN / services["feed"]["command"][0]), *services["feed"]["command"][1:], "--count", "30"]
        assert await run(feed, gateway.env) == 0
        await client.wait_for("price:update", timeout=10)


def test_kubernetes_manifests_agree_with_the_gateway() -> None:
    kinds = manifests()
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert settings_named(env) == set()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    # The kubelet's SIGKILL must come after preStop plus the whole drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + float(env["REALTIME_SHUTDOWN_GRACE"])
    labels = kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    assert kinds["Service"]["spec"]["selector"] == labels
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    # The Ingress asks ingress-nginx for what docker/nginx.conf does.
    annotations = kinds["Ingress"]["metadata"]["annotations"]
    nginx = (DOCKER / "nginx.conf").read_text()
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert f"$cookie_{annotations['nginx.ingress.kubernetes.io/session-cookie-name']}" in nginx
    read_timeout = int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
    defaults = Settings.model_fields
    assert read_timeout > float(defaults["ping_interval"].default) + float(defaults["ping_timeout"].default)
    assert f"proxy_read_timeout {read_timeout}s;" in nginx
    assert annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"] in nginx
