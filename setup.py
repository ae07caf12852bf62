"""The build step setup.cfg cannot say: the price board's socket.io-client comes from npm.

`build_py` (which wheels, `pip install .` and `pip install -e .` all run)
first copies socket.io-client's browser bundles, at the version
package-lock.json pins, from node_modules/ into realtime/http/static/vendor/,
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
CLIENT = ROOT / "node_modules" / "socket.io-client"
VENDOR = ROOT / "realtime" / "http" / "static" / "vendor"
BUNDLES = ("socket.io.min.js", "socket.io.msgpack.min.js")


def _version(manifest: Path, *keys: str) -> str | None:
    try:
        value = json.loads(manifest.read_text())
        for key in keys:
            value = value[key]
        return str(value)
    except (OSError, ValueError, KeyError):
        return None


def vendor_client_bundle() -> None:
    """Copy the pinned socket.io-client bundles into the package, installing them with npm if needed."""
    pinned = _version(ROOT / "package-lock.json", "packages", "node_modules/socket.io-client", "version")
    if pinned is None:
        raise SystemExit("building realtime: package-lock.json does not pin socket.io-client")
    if _version(CLIENT / "package.json", "version") != pinned:
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(f"building realtime needs socket.io-client {pinned} for the price board: "
                             "install node and npm (or run `npm ci` in the checkout first)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=ROOT, check=True)
        if _version(CLIENT / "package.json", "version") != pinned:
            raise SystemExit(f"building realtime: npm ci did not install socket.io-client {pinned}")
    for name in BUNDLES:
        shutil.copyfile(CLIENT / "dist" / name, VENDOR / name)


class BuildWithClientBundle(build_py):
    """`build_py` that vendors the client bundle before collecting package data."""

    def run(self) -> None:
        vendor_client_bundle()
        super().run()


setup(cmdclass={"build_py": BuildWithClientBundle})
