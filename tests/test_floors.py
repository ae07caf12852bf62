"""The packages of `realtime` are floors: a module imports only from its own floor or below.

`FLOORS` is the one written order, ground floor first. Data walks one way
(feed → send → engine → socket) and a reader never has to climb back up.
Every import counts, including those under `TYPE_CHECKING` and inside
functions, so a circle cannot hide behind a type annotation.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "realtime"

# Ground floor first. A top-level module is a floor of its own; a package is one floor.
FLOORS = [
    "realtime",  # __init__: the version
    "waits",  # waiting with a deadline without losing a cancel
    "catalog",  # which assets exist, and how REALTIME_ASSETS spells them
    "values",  # what one setting's value may be: a comma list, a Redis URL, a secret
    "config",  # the one settings object
    "namespace",  # the names of every Redis key and channel the gateway owns
    "rooms",  # the grammar of room names
    "protocol",  # every name, payload and error code on the wire
    "principal",  # who is connected
    "logs",
    "metrics",
    "backplane",  # the Redis plumbing: connections, shards, liveness, batching
    "channels",  # who may subscribe to a channel: names, the access rules, the subscribe hook
    "engine",  # our layer over python-socketio / python-engineio, each connection's writer
    "send",  # one room's event, encoded and framed once, to every member
    "feed",  # where ticks come from, the gate they pass
    "books",  # order books from the feed: exact, resynced, conflated per room
    "trades",  # trades and candles from the feed: the tape, exact bars, the shared store
    "cluster",  # what pods share: presence, demand
    "events",  # private events: the log, its reader, recovery
    "clients",  # the connected clients: auth, limits, their events' handlers
    "http",  # around the socket: API, health, board, middleware
    "bench",
    "backends",  # every swappable backend, chosen by URL
    "server",  # the composition root
    "cli",
    "__main__",
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def floor(module: str) -> str:
    """`realtime.feed.prices` → `feed`; `realtime.metrics` → `metrics`; `realtime` → `realtime`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[int, str]]:
    """(line, module of the package) for every import in `path`, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from realtime.feed import prices` imports the module `realtime.feed.prices`.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]  # `import realtime.feed.prices.x` names a module above
            if name and name != module:
                yield node.lineno, name


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: {target for _, target in imports(module, path, known)} for module, path in known.items()}


def test_every_package_has_a_floor() -> None:
    missing = sorted({floor(module) for module in modules()} - set(FLOORS))
    assert not missing, f"add these to FLOORS: {missing}"


def test_no_module_imports_from_a_floor_above_its_own() -> None:
    known = modules()
    upward = []
    for module, path in sorted(known.items()):
        for line, target in imports(module, path, known):
            if FLOORS.index(floor(target)) > FLOORS.index(floor(module)):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    assert not upward, "imports up a floor:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    edges = graph()
    circles = [sorted(component) for component in _strongly_connected(edges) if len(component) > 1]
    assert not circles, f"import circles: {circles}"


def test_the_checks_can_fail() -> None:
    # The circle finder sees a circle, and the floor rule sees an upward import.
    assert [sorted(c) for c in _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}}) if len(c) > 1] == [
        ["a", "b", "c"]]
    assert FLOORS.index(floor("realtime.server")) > FLOORS.index(floor("realtime.feed.prices"))
    known = modules()
    assert ("realtime.feed.prices" in {target for _, target in imports(
        "realtime.server", known["realtime.server"], known)})


def _strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components
