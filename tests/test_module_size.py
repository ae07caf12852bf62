"""Modules stay small: none in `realtime/` is over `MAX_LINES` (STYLE.md: split before ~400 lines).

A module past it holds more than one concept; split it along a seam (one
module per concept) rather than raise the bound.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "realtime"
MAX_LINES = 400


def over_the_bound(paths: Iterable[Path], root: Path) -> list[str]:
    sizes = {path: len(path.read_text().splitlines()) for path in paths}
    return [f"{path.relative_to(root)}: {size} lines" for path, size in sorted(sizes.items()) if size > MAX_LINES]


def test_no_module_is_over_the_bound() -> None:
    paths = list(PACKAGE.rglob("*.py"))
    assert len(paths) > 50  # the rule sees the whole package
    over = over_the_bound(paths, PACKAGE.parent)
    assert not over, f"split these along a seam (at most {MAX_LINES} lines each):\n" + "\n".join(over)


def test_the_rule_sees_a_module_one_line_over(tmp_path: Path) -> None:
    (tmp_path / "fits.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert over_the_bound(tmp_path.glob("*.py"), tmp_path) == [f"big.py: {MAX_LINES + 1} lines"]
