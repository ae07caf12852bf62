"""The upstream versions `realtime.engine` is built and tested against.

Everything in this package reaches into private parts of python-socketio and
python-engineio (and aiohttp's websocket writer). setup.cfg pins them; this
check stops a gateway whose environment was changed behind pip's back (an
upgraded dependency) with one clear line, rather than letting it lose or
reorder messages in production.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from realtime.config import ConfigError

PINNED = {
    "python-socketio": "5.18.1",
    "python-engineio": "4.15.1",
    "aiohttp": "3.14.5",
}


def check() -> None:
    """Raise `ConfigError` unless every pinned package is installed at its pinned version."""
    for package, pinned in PINNED.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "none"
        if installed != pinned:
            raise ConfigError(package, f"version {installed} is installed; realtime.engine relies on private "
                                       f"parts of {pinned} (reinstall with `pip install realtime`, which pins it)")
