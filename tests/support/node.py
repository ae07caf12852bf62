"""node socket.io-client scripts (tests/js/*.mjs) that print one JSON object a line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tests.support.processes import ROOT

JS_DIR = ROOT / "tests" / "js"


async def spawn(script: str, *args: str, stdin: int | None = None,
                stderr: int = asyncio.subprocess.PIPE) -> asyncio.subprocess.Process:
    """`node tests/js/<script> args...` in a process group of its own, so `kill` reaches what it starts."""
    return await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / script), *args, cwd=ROOT, start_new_session=True,
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=stderr)


async def kill(process: asyncio.subprocess.Process) -> None:
    """Kill a spawned script and everything it started (chromium and its helpers), then reap it.

    Killing node alone leaves chromium holding node's pipes open, and asyncio's `wait()` waits for the
    pipes as well as the exit: a test then hangs in its teardown.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


async def run_node(script: str, *args: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Run tests/js/<script> with node; return the JSON lines it printed."""
    process = await spawn(script, *args)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        await kill(process)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"node {script} exited {process.returncode}: {stderr.decode()[-2000:]}")
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


def of(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The lines of `type` `kind`."""
    return [line for line in lines if line["type"] == kind]


class NodeClients:
    """A long-running node script that prints JSON lines; read while the test acts."""

    def __init__(self, script: str, *args: str) -> None:
        self.script = script
        self.args = args
        self.lines: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.process = await spawn(self.script, *self.args, stdin=asyncio.subprocess.PIPE,
                                   stderr=asyncio.subprocess.DEVNULL)
        self._reader = asyncio.create_task(self._read())

    async def send(self, message: dict[str, Any]) -> None:
        """One JSON line on the script's stdin (a command, for the scripts that read them)."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            if line.startswith(b"{"):
                self.lines.append(json.loads(line))
                self._changed.set()

    async def wait_until(self, predicate: Any, timeout: float = 30.0) -> None:
        """Wait until `predicate(lines)` is true."""
        async def until() -> None:
            while not predicate(self.lines):
                self._changed.clear()
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"node {self.script} exited; last lines: {self.lines[-5:]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1)
        await asyncio.wait_for(until(), timeout)

    async def stop(self) -> None:
        if self.process is not None:
            await kill(self.process)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader



@contextlib.asynccontextmanager
async def node_clients(url: str, clients: list[dict[str, Any]], subscribe: list[str]) -> AsyncIterator[NodeClients]:
    """tests/js/cluster_clients.mjs: `clients` connect to `url` and subscribe to `subscribe`."""
    node = NodeClients("cluster_clients.mjs", json.dumps({"url": url, "clients": clients, "subscribe": subscribe}))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


class NodeSession:
    """A tests/js script that runs alongside the test: read its JSON lines as they come, answer on stdin."""

    def __init__(self, process: asyncio.subprocess.Process, script: str) -> None:
        self.process = process
        self.script = script
        self.lines: list[dict[str, Any]] = []

    async def next(self, timeout: float = 30) -> dict[str, Any]:
        """The next JSON line the script prints (other output is skipped)."""
        assert self.process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not raw:
                stderr = b""
                if self.process.stderr is not None:
                    # Bounded: a child the script started (chromium) may still hold the pipe open.
                    with contextlib.suppress(TimeoutError):
                        stderr = await asyncio.wait_for(self.process.stderr.read(), 5)
                raise RuntimeError(f"node {self.script} ended: {stderr.decode(errors='replace')[-3000:]}")
            if raw.startswith(b"{"):
                line: dict[str, Any] = json.loads(raw)
                self.lines.append(line)
                return line

    async def until(self, kind: str, timeout: float = 30) -> dict[str, Any]:
        """Read lines until one of `type` `kind` arrives within `timeout` s; fail on a `failed` line.

        The deadline holds across lines: a script that keeps printing others (console errors of a
        page that cannot connect) fails here with what it printed, instead of running out the test.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = await self.next(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"node {self.script}: no {kind!r} line in {timeout:.0f}s; "
                                     f"the last lines: {self.lines[-5:]}") from None
            if line["type"] == "failed":
                raise AssertionError(f"node {self.script}: {line}")
            if line["type"] == kind:
                return line

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()


@contextlib.asynccontextmanager
async def node_session(script: str, plan: Mapping[str, Any]) -> AsyncIterator[NodeSession]:
    """Start `node tests/js/<script> '<plan as JSON>'`; kill it when the block ends."""
    process = await spawn(script, json.dumps(plan), stdin=asyncio.subprocess.PIPE)
    try:
        yield NodeSession(process, script)
    finally:
        await kill(process)
