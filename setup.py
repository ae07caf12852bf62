"""The build step setup.cfg cannot say: the price board's socket.io-client, chart library and typed client.

`build_py` (which wheels, `pip install .` and `pip install -e .` all run)
first copies socket.io-client's browser bundles and lightweight-charts'
standalone build, at the versions package-lock.json pins, from node_modules/
into realtime/http/static/vendor/,
running `npm ci` when node_modules lacks that version. It then copies the ESM
build of this repository's own `@realtime/client` (clients/js, an npm
workspace: node_modules/@realtime/client) into realtime/http/static/vendor/client/,
building it with `npm run build` first when its sources are newer than the
build. The copies are a build artifact (.gitignore); the installed gateway
serves them without npm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
VENDOR = ROOT / "realtime" / "http" / "static" / "vendor"
# npm package -> its browser builds the board serves.
BUNDLES = {
    "socket.io-client": ("socket.io.min.js", "socket.io.msgpack.min.js"),
    "lightweight-charts": ("lightweight-charts.standalone.production.js",),
}
# The typed client's tsc output (one ES module per source file, imported by relative name): the board's helpers.
CLIENT_PACKAGE = ROOT / "node_modules" / "@realtime" / "client"
CLIENT_VENDOR = VENDOR / "client"


def _version(manifest: Path, *keys: str) -> str | None:
    try:
        value = json.loads(manifest.read_text())
        for key in keys:
            value = value[key]
        return str(value)
    except (OSError, ValueError, KeyError):
        return None


def vendor_client_bundle() -> None:
    """Copy the pinned browser bundles into the package, installing them with npm if needed."""
    pins = {package: _version(ROOT / "package-lock.json", "packages", f"node_modules/{package}", "version")
            for package in BUNDLES}
    for package, pinned in pins.items():
        if pinned is None:
            raise SystemExit(f"building realtime: package-lock.json does not pin {package}")

    def stale() -> list[str]:
        return [package for package, pinned in pins.items()
                if _version(ROOT / "node_modules" / package / "package.json", "version") != pinned]
    if stale():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(f"building realtime needs {', '.join(stale())} for the price board: "
                             "install node and npm (or run `npm ci` in the checkout first)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT, check=True)
        if stale():
            raise SystemExit(f"building realtime: npm ci did not install {', '.join(stale())}")
    for package, names in BUNDLES.items():
        for name in names:
            shutil.copyfile(ROOT / "node_modules" / package / "dist" / name, VENDOR / name)


def vendor_client_package() -> None:
    """Copy @realtime/client's ESM build into the package, building it first when its sources are newer."""
    dist, src = CLIENT_PACKAGE / "dist", CLIENT_PACKAGE / "src"
    built = (dist / "index.js").stat().st_mtime if (dist / "index.js").is_file() else None
    # A checkout has the sources (the workspace link); the image's client stage ships the build alone.
    newest = max((path.stat().st_mtime for path in src.rglob("*.ts")), default=None) if src.is_dir() else None
    if built is None or (newest is not None and newest > built):
        npm = shutil.which("npm")
        if npm is None or not src.is_dir():
            raise SystemExit("building realtime needs the ESM build of clients/js (@realtime/client) for the price "
                             "board: install node and npm, or run `npm run build --workspace clients/js` first")
        subprocess.run([npm, "run", "build", "--workspace", "clients/js", "--silent"], cwd=ROOT, check=True)
    shutil.rmtree(CLIENT_VENDOR, ignore_errors=True)
    CLIENT_VENDOR.mkdir()
    for path in sorted(dist.glob("*.js")):
        shutil.copyfile(path, CLIENT_VENDOR / path.name)


class BuildWithClientBundle(build_py):
    """`build_py` that vendors the client bundles before collecting package data."""

    def run(self) -> None:
        vendor_client_bundle()
        vendor_client_package()
        super().run()


setup(cmdclass={"build_py": BuildWithClientBundle})
