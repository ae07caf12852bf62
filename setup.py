"""The build step setup.cfg cannot say: the price board's socket.io-client and chart library come from npm.

`build_py` (which wheels, `pip install .` and `pip install -e .` all run)
first copies socket.io-client's browser bundles and lightweight-charts'
standalone build, at the versions package-lock.json pins, from node_modules/
into realtime/http/static/vendor/,
running `npm ci` when node_modules lacks that version. The copies are a build
artifact (.gitignore); the installed gateway serves them without npm.
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


class BuildWithClientBundle(build_py):
    """`build_py` that vendors the client bundle before collecting package data."""

    def run(self) -> None:
        vendor_client_bundle()
        super().run()


setup(cmdclass={"build_py": BuildWithClientBundle})
