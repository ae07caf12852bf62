"""The package as users get it: the wheel docker/Dockerfile builds, installed in a fresh venv, run outside the checkout.

The wheel is built the way the image's `wheel` stage builds it: its COPY lines
pick the files from the checkout, node_modules stands in for the `client`
stage's `npm ci`, and its RUN line makes the wheel. The venv is a real fresh
one (no system site-packages), so what serves the board is only what the
wheel and its declared dependencies bring.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT, Gateway, free_port, gateway_env, http_json

pytestmark = pytest.mark.slow  # builds and installs the wheel

DIST = ROOT / "node_modules" / "socket.io-client" / "dist"
CLIENT_DIST = ROOT / "clients" / "js" / "dist"  # @realtime/client's ES modules (tsc), which the board imports
# Installing the wheel's dependencies into an empty venv (from pip's cache when warm).
INSTALL_TIMEOUT = 300


def stages() -> list[tuple[str, list[str]]]:
    """The Dockerfile's stages in order, as (FROM line, instructions), continuations joined."""
    lines = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    found: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("FROM "):
            found.append((line, []))
        elif line.strip() and not line.startswith("#") and found:
            found[-1][1].append(line)
    return found


def stage(name: str) -> list[str]:
    """The instructions of the stage `FROM ... AS name`."""
    [steps] = [steps for origin, steps in stages() if origin.endswith(f" AS {name}")]
    return steps


def test_the_image_installs_the_wheel_and_nothing_from_npm() -> None:
    """The runtime stage is what `installed` below reproduces: `pip install` of the wheel stage's wheel."""
    origin, runtime = stages()[-1]
    assert origin.startswith("FROM python:") and " AS " not in origin
    copies = [line for line in runtime if line.startswith("COPY ")]
    assert copies == ["COPY --from=wheel /wheels /wheels"]
    [install] = [line for line in runtime if line.startswith("RUN ")]
    assert install.startswith("RUN pip install /wheels/realtime-*.whl && rm -rf /wheels")
    text = "\n".join(runtime)
    assert "npm" not in text and "node_modules" not in text and "CLIENT_BUNDLE" not in text
    assert any(origin.endswith(" AS client") and origin.startswith("FROM node:") for origin, _ in stages())
    assert "RUN npm ci --omit=dev --no-audit --no-fund" in stage("client")


def dockerignored(folder: str, names: list[str]) -> set[str]:
    """What .dockerignore keeps out of the image's build context (caches, the checkout's own bundle copy)."""
    vendor = Path(folder).match("realtime/http/static/vendor")
    return {name for name in names if name == "__pycache__" or (vendor and name.endswith(".js"))}


def build_wheel(workdir: Path) -> Path:
    """Run the Dockerfile's `wheel` stage by hand in `workdir`; return the wheel."""
    src = workdir / "src"
    out = workdir / "wheels"
    steps = stage("wheel")
    src.mkdir()
    for line in steps:
        words = shlex.split(line)
        if words[0] == "COPY" and not words[1].startswith("--from="):
            *sources, dest = words[1:]
            for source in sources:
                target = src / dest / Path(source).name if dest.endswith("/") else src / dest
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=dockerignored)
                else:
                    shutil.copyfile(ROOT / source, target)
        elif words[0] == "COPY":
            assert words[1:] == ["--from=client", "/build/node_modules", "./node_modules"], line
            (src / "node_modules").symlink_to(ROOT / "node_modules")  # the client stage's `npm ci`
    # Built in the copy: the checkout's own realtime/http/static/vendor/ plays no part.
    assert not (src / "realtime" / "http" / "static" / "vendor" / "socket.io.min.js").exists()
    [run] = [shlex.split(line)[1:] for line in steps if line.startswith("RUN ")]
    assert run[:2] == ["pip", "wheel"] and "/wheels" in run, run
    command = [sys.executable, "-m", *[str(out) if word == "/wheels" else word for word in run]]
    subprocess.run(command, cwd=src, check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
    [wheel] = out.glob("realtime-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh venv with the wheel installed as the image's runtime stage installs it: (venv bin, wheel)."""
    workdir = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(workdir)
    venv.create(workdir / "venv", with_pip=True)
    bin_dir = workdir / "venv" / "bin"
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
    return bin_dir, wheel


def elsewhere_env(**settings: str) -> dict[str, str]:
    """A gateway's environment with nothing that points back at the checkout."""
    env = gateway_env(free_port(), **settings)
    for name in ("PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def run(bin_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=elsewhere_env(), capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_wheel_holds_the_pinned_client_bundle_not_the_checkout(installed: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    bin_dir, _ = installed
    where = run(bin_dir, "python", "-c", "import realtime, sys; print(realtime.__file__)", cwd=tmp_path)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where
    assert not Path(where.stdout.strip()).is_relative_to(ROOT)
    vendor = Path(where.stdout.strip()).parent / "http" / "static" / "vendor"
    for name in ("socket.io.min.js", "socket.io.msgpack.min.js"):
        assert (vendor / name).read_bytes() == (DIST / name).read_bytes()


def serve_in(cwd: Path, bin_dir: Path, env: dict[str, str]) -> Gateway:
    """The venv's `realtime serve` started in `cwd`, ready."""
    gateway = Gateway(port=int(env["REALTIME_PORT"]), env=env, log_path=cwd / "gateway.log")
    with gateway.log_path.open("ab") as log:
        gateway.process = subprocess.Popen([str(bin_dir / "realtime"), "serve"], env=env, cwd=cwd,
                                           stdout=log, stderr=subprocess.STDOUT)
    try:
        gateway.wait_ready()
    except BaseException:
        gateway.stop()
        raise
    return gateway


@pytest.mark.parametrize("serializer, bundle", [("json", "socket.io.min.js"), ("msgpack", "socket.io.msgpack.min.js")])
async def test_installed_gateway_serves_the_board_from_any_directory(installed: tuple[Path, Path], tmp_path: Path,
                                                                     serializer: str, bundle: str) -> None:
    bin_dir, _ = installed
    env = elsewhere_env(serializer=serializer)
    assert "REALTIME_CLIENT_BUNDLE_DIR" not in env
    env["PATH"] = str(bin_dir)  # no npm, no node: nothing but the venv
    gateway = serve_in(tmp_path, bin_dir, env)
    try:
        status, page = await http_json(gateway.url + "/")
        assert status == 200, page
        assert '<script src="/board/socket.io.js" defer></script>' in page and f'"serializer": "{serializer}"' in page
        status, body = await http_json(gateway.url + "/board/socket.io.js")
        assert status == 200 and body == (DIST / bundle).read_text()
    finally:
        assert gateway.stop() == 0
    assert "price board disabled" not in gateway.logs()


async def test_the_wheel_holds_the_typed_client_and_the_board_loads_it(installed: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    # @realtime/client's ESM build is in the wheel (vendor/client/, every module tsc made) and the installed
    # gateway serves it to the board, whose modules import the helpers from it.
    bin_dir, wheel = installed
    modules = sorted(path.name for path in CLIENT_DIST.glob("*.js"))
    assert {"index.js", "prices.js", "book.js", "state.js", "trades.js", "candles.js"} <= set(modules)
    with zipfile.ZipFile(wheel) as built:
        shipped = {Path(name).name: built.read(name) for name in built.namelist()
                   if name.startswith("realtime/http/static/vendor/client/")}
    assert sorted(shipped) == modules
    assert all(shipped[name] == (CLIENT_DIST / name).read_bytes() for name in modules)
    env = elsewhere_env()
    env["PATH"] = str(bin_dir)  # no npm, no node: nothing but the venv
    gateway = serve_in(tmp_path, bin_dir, env)
    try:
        status, page = await http_json(gateway.url + "/")
        assert status == 200 and '<script type="module" src="/board/board.js"></script>' in page
        for script in ("board.js", "market.js"):
            status, body = await http_json(gateway.url + f"/board/{script}")
            assert status == 200 and 'from "/board/client/index.js"' in body
        for name in modules:
            status, body = await http_json(gateway.url + f"/board/client/{name}")
            assert status == 200 and body == (CLIENT_DIST / name).read_text()
        status, _ = await http_json(gateway.url + "/board/client/..%2Fboard.js")
        assert status == 404
    finally:
        assert gateway.stop() == 0
    assert "price board disabled" not in gateway.logs()


def test_bench_is_an_extra(installed: tuple[Path, Path], tmp_path: Path) -> None:
    bin_dir, wheel = installed
    probe = "import importlib.util; print(importlib.util.find_spec('psutil') is not None)"
    assert run(bin_dir, "python", "-c", probe, cwd=tmp_path).stdout.strip() == "False"
    bench = run(bin_dir, "realtime", "bench", "--target", "gateway", cwd=tmp_path)
    assert bench.returncode == 1 and bench.stdout == ""
    assert bench.stderr.strip().splitlines() == [
        "realtime bench: needs psutil, which the bench extra installs: pip install 'realtime[bench]'"]

    # `--help` and `serve` build the bench's flags without importing it (here, where psutil is installed).
    help_imports = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom realtime.cli import build_parser\n"
                               "build_parser().format_help()\nprint('psutil' in sys.modules)"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert help_imports.stdout.strip() == "False"

    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"{wheel}[bench]"], check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
    assert run(bin_dir, "python", "-c", probe, cwd=tmp_path).stdout.strip() == "True"
    helped = run(bin_dir, "realtime", "bench", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--node-dir" in helped.stdout
