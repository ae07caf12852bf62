"""docker/ checked without docker: the files' commands are run for real, their settings read back.

The cluster tests run docker/nginx.conf itself; here the Dockerfile's command and
HEALTHCHECK run against a real gateway, the compose feed command publishes to a
real Redis, and the compose and Kubernetes files are held to the settings and
the shutdown grace they must agree with.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from realtime.config import Settings
from tests.support import (
    ROOT,
    Gateway,
    GatewayFactory,
    Nginx,
    RedisServer,
    connected,
    free_port,
    gateway_env,
    rss_bytes,
    token,
)

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


async def test_compose_feed_publishes_to_the_gateways(start_process: GatewayFactory,
                                                      redis_server: RedisServer) -> None:
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

    gateway = start_process(redis_url=redis_server.url, price_channel=f"prices-{free_port()}")
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


# Item 10: no known secret in docker/.

def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (compose-spec, "Interpolation"): ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        missing = value is None or (op.startswith(":") and value == "")
        if op in {":?", "?"} and missing:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op in {":-", "-"} and missing:
            return arg
        return value or ""
    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, text.replace("$$", "\0")).replace("\0", "$")


def test_compose_refuses_to_start_without_a_jwt_secret() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    try:
        interpolate(text, {})
    except ValueError as error:
        assert "REALTIME_JWT_SECRET" in str(error) and "32 bytes" in str(error)
    else:
        raise AssertionError("compose.yaml starts without REALTIME_JWT_SECRET")
    secret = "s" * 48
    compose = yaml.safe_load(interpolate(text, {"REALTIME_JWT_SECRET": secret}))
    assert compose["services"]["gateway"]["environment"]["REALTIME_JWT_SECRET"] == secret
    # Set but empty is as good as unset.
    try:
        interpolate(text, {"REALTIME_JWT_SECRET": ""})
    except ValueError:
        pass
    else:
        raise AssertionError("compose.yaml starts with an empty REALTIME_JWT_SECRET")


def test_no_fixed_jwt_secret_anywhere_in_docker() -> None:
    for path in sorted(p for p in DOCKER.rglob("*") if p.is_file()):
        # Comments may show how to make one; settings may not hold one.
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        # A default after :- or -, or a literal value next to the variable's name.
        assert not re.search(r"\$\{REALTIME_JWT_SECRET:?-", text), path
        for match in re.finditer(r"REALTIME_JWT_SECRET\s*[:=]\s*([^\s#]+)", text):
            assert match.group(1).startswith("${REALTIME_JWT_SECRET:?"), (path, match.group(0))
    deployment = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    secret = next(item for item in deployment["env"] if item["name"] == "REALTIME_JWT_SECRET")
    assert "value" not in secret and "secretKeyRef" in secret["valueFrom"]


# Item 14: compose believes X-Forwarded-For from nginx alone.

def test_compose_trusts_only_nginx_for_client_addresses() -> None:
    compose = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), {"REALTIME_JWT_SECRET": "s" * 48}))
    nginx = compose["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(nginx) in ipaddress.ip_network(subnet)
    trusted = compose["services"]["gateway"]["environment"]["REALTIME_TRUSTED_PROXIES"].split(",")
    assert [ipaddress.ip_network(entry) for entry in trusted] == [ipaddress.ip_network(f"{nginx}/32")]


# Item 13: Kubernetes.

def container() -> dict[str, Any]:
    containers: list[dict[str, Any]] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(item: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in item["env"] if "value" in entry}


def test_readiness_survives_a_redis_blip_config() -> None:
    # /ready is 503 for as long as Redis is away; the kubelet takes a pod out of the
    # Service after failureThreshold misses in a row, periodSeconds apart.
    probe = container()["readinessProbe"]
    assert probe["httpGet"]["path"] == "/ready"
    assert probe["failureThreshold"] >= 3
    blip = 2.0
    # The shortest outage that can take a pod out: (threshold - 1) periods after a first miss.
    assert (probe["failureThreshold"] - 1) * probe["periodSeconds"] >= 4 * blip
    assert probe.get("successThreshold", 1) == 1  # and back in at the first success


def ingress_matches(ingress: dict[str, Any], path: str) -> bool:
    """Does any rule of `ingress` route `path` (Kubernetes' Exact and element-wise Prefix matching)?"""
    assert "defaultBackend" not in ingress["spec"]
    elements = [part for part in path.split("/") if part]
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            if entry["pathType"] == "Exact" and entry["path"] == path:
                return True
            if entry["pathType"] == "Prefix":
                prefix = [part for part in entry["path"].split("/") if part]
                if elements[:len(prefix)] == prefix:
                    return True
            assert entry["pathType"] in {"Exact", "Prefix"}, entry  # ImplementationSpecific means regexes
    return False


def test_ingress_does_not_publish_internal_routes() -> None:
    ingress = manifests()["Ingress"]
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    http = protocol[protocol.index("## HTTP\n"):protocol.index("## HTTP API")]
    routes = set(re.findall(r"^\| `(?:GET|POST) (/\S*)` \|", http, re.MULTILINE))
    public = {"/api/v1/assets"}
    internal = routes - public
    assert {"/metrics", "/health", "/ready", "/api/v1/publish", "/api/v1/demand"} <= internal
    for path in internal:
        assert not ingress_matches(ingress, path), path
    for path in [*public, "/", "/board/socket.io.js", "/board/token", "/socket.io/", "/socket.io"]:
        assert ingress_matches(ingress, path), path


@pytest.mark.slow
async def test_nginx_publishes_only_what_the_ingress_does(process_gateway: Gateway, tmp_path: Path) -> None:
    # docker/nginx.conf's public server block (compose publishes it on 8080) routes what the Ingress does.
    gateway = process_gateway
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    http = protocol[protocol.index("## HTTP\n"):protocol.index("## HTTP API")]
    routes = {(method, path) for method, path in re.findall(r"^\| `(GET|POST) (/\S*)` \|", http, re.MULTILINE)}
    ingress = manifests()["Ingress"]
    internal = {(method, path) for method, path in routes if not ingress_matches(ingress, path)}
    assert {path for _, path in internal} >= {"/metrics", "/health", "/ready", "/api/v1/publish", "/api/v1/demand"}
    nginx = Nginx([gateway.port], tmp_path / "nginx")
    nginx.start()
    try:
        service = {"Authorization": f"Bearer {token('billing', roles=['service'])}"}
        user = {"Authorization": f"Bearer {token('alice')}"}
        async with aiohttp.ClientSession() as session:
            for method, path in sorted(internal):
                async with session.request(method, gateway.url + path, headers=service, json={}) as direct:
                    assert direct.status != 404, path  # the pod serves it...
                async with session.request(method, nginx.url + path, headers=service, json={}) as response:
                    assert response.status == 404, (method, path, response.status)  # ...the public port does not
                    assert (await response.json())["error"]["code"] == "NOT_FOUND"
            for path in ("/", "/board/board.js", "/board/socket.io.js", "/api/v1/assets",
                         "/socket.io/?EIO=4&transport=polling"):
                assert ingress_matches(ingress, path.partition("?")[0]), path
                async with session.get(nginx.url + path, headers=user) as response:
                    assert response.status == 200, (path, response.status)
            async with session.get(nginx.url + "/nginx-health") as response:
                assert response.status == 200
        async with connected(nginx.url, auth={"token": token("alice")}) as client:
            assert (await client.call("price:subscribe", ["BTC_USDC_PERP"]))["ok"] is True
    finally:
        nginx.stop()


def test_ingress_terminates_tls() -> None:
    ingress = manifests()["Ingress"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    covered = {host for block in ingress["spec"]["tls"] for host in block["hosts"] if block.get("secretName")}
    assert hosts and hosts <= covered
    annotations = ingress["metadata"]["annotations"]
    assert annotations.get("nginx.ingress.kubernetes.io/ssl-redirect", "true") == "true"


def test_pods_run_locked_down() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    uid = re.search(r"useradd [^\n]*--uid (\d+)", (DOCKER / "Dockerfile").read_text())
    assert uid is not None and int(uid.group(1)) == pod["securityContext"]["runAsUser"]
    context = container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add")
    assert not context.get("privileged", False)
    # The only writable place is a bounded scratch directory.
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container().get("volumeMounts", []):
        assert "emptyDir" in volumes[mount["name"]] and volumes[mount["name"]]["emptyDir"].get("sizeLimit")


def test_image_is_pinned_to_a_release() -> None:
    image = container()["image"]
    name, _, digest = image.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    assert digest.startswith("sha256:") or (tag and tag != "latest"), image
    assert container().get("imagePullPolicy") != "Always"


def test_pods_spread_across_nodes() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    by_node = [c for c in pod.get("topologySpreadConstraints", []) if c["topologyKey"] == "kubernetes.io/hostname"]
    assert len(by_node) == 1
    assert by_node[0]["maxSkew"] == 1 and by_node[0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_node[0]["labelSelector"]["matchLabels"] == labels
    assert deployment["spec"]["replicas"] >= 3
    # Node drains take one pod at a time.
    assert manifests()["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_sigkill_comes_after_the_whole_drain() -> None:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    env = env_of(container())
    settings = Settings.model_fields
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = float(env["REALTIME_SHUTDOWN_GRACE"])
    redis_timeout = float(env.get("REALTIME_REDIS_TIMEOUT", settings["redis_timeout"].default))
    # aiohttp holds a websocket whose client never answers the close frame this long
    # (the gateway's websocket keeps WebSocketResponse's default).
    websocket_close = inspect.signature(web.WebSocketResponse.__init__).parameters["timeout"].default
    drain = float(pre_stop[1]) + grace + websocket_close + redis_timeout
    assert pod["terminationGracePeriodSeconds"] > drain


def limit_bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}
    number, unit = re.fullmatch(r"(\d+)([KMG]i?)?", quantity).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit or "", 1)


async def test_max_connections_fit_the_memory_limit(process_gateway: Gateway) -> None:
    gateway = process_gateway  # a process's resident memory
    resources = container()["resources"]
    limit = limit_bytes(resources["limits"]["memory"])
    assert limit_bytes(resources["requests"]["memory"]) == limit
    # Memory per idle subscribed connection, as measured by the bench (docs/performance.md).
    performance = (ROOT / "docs" / "performance.md").read_text()
    figure = re.search(r"RSS per idle subscribed connection[^|]*\| ([\d.]+) KB", performance)
    assert figure is not None
    per_connection = max(float(figure.group(1)), 32.0) * 1000
    # The process itself: a real gateway on Redis with one client.
    async with connected(gateway.url, auth={"token": token("alice")}) as client:
        await client.call("price:subscribe", ["BTC_USDC_PERP"])
        assert gateway.process is not None
        base = rss_bytes(gateway.process.pid)
    connections = int(env_of(container())["REALTIME_MAX_CONNECTIONS"])
    # A fifth of the limit is left for send queues, bursts and the allocator.
    assert connections * per_connection + base <= 0.8 * limit, (connections, base)
    print(f"base RSS {base / 2**20:.0f} MiB; {connections} x {per_connection / 1000:.0f} KB + base = "
          f"{(connections * per_connection + base) / 2**20:.0f} MiB of {limit / 2**20:.0f} MiB")
