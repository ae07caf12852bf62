"""The documentation: a short README, and a site built from docs/ that documents every setting."""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path

from realtime.config import Settings, variable_name
from tests.support import ROOT

CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_every_realtime_variable_in_config_is_on_the_configuration_page() -> None:
    # The settings' own names, and any other REALTIME_* name config.py's code spells out (an old name kept
    # working, one named in an error): string constants, docstrings left out.
    tree = ast.parse((ROOT / "realtime" / "config.py").read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    spelled = {name for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and id(node) not in docstrings for name in re.findall(r"\bREALTIME_[A-Z0-9_]+", node.value)}
    names = {variable_name(field) for field in Settings.model_fields} | spelled
    page = CONFIGURATION.read_text()
    assert names and sorted(name for name in names if f"`{name}`" not in page) == []


def test_the_readme_is_short_and_points_at_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for command in ("scripts/serve", "scripts/test"):
        assert f"\n{command}\n" in readme, command
    pages = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", readme))
    assert pages and all((ROOT / page).is_file() for page in pages), pages


async def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    # mkdocs.yml says strict: a broken link or anchor, or a page left out of the nav, fails the build.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"})
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    assert "WARNING" not in output.decode(errors="replace")
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
