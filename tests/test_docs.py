"""The documentation covers the public interfaces and describes the software, not its history."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import senseindex
from senseindex.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# work-organisation history that has no place in documentation
ISSUE_NUMBER = re.compile(r"\bissue\s*#?\d+", re.IGNORECASE)
COMMIT_IN_BACKTICKS = re.compile(r"`[0-9a-f]{7,40}`")


def command_names(group: click.Group, prefix: str = "") -> list[str]:
    """Every command of a click group, subgroups walked recursively, as 'sub sub' paths."""
    names = []
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        names.append(path)
        if isinstance(command, click.Group):
            names.extend(command_names(command, prefix=f"{path} "))
    return names


def documentation_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_every_command_is_on_the_command_line_page():
    page = (DOCS / "command-line.md").read_text(encoding="utf-8")
    names = command_names(main)
    assert "build-index" in names and "serve" in names
    missing = [name for name in names if not re.search(rf"^#+ .*\b{re.escape(name)}\b", page, re.MULTILINE)]
    assert not missing, f"commands without a section on docs/command-line.md: {missing}"


def test_every_public_name_is_on_the_api_page():
    page = (DOCS / "python-api.md").read_text(encoding="utf-8")
    missing = [
        name for name in senseindex.__all__ if f"senseindex.{name}" not in page and f"`{name}`" not in page
    ]
    assert not missing, f"names of senseindex.__all__ missing from docs/python-api.md: {missing}"


def test_documentation_has_no_issue_numbers_or_commit_hashes():
    found = []
    for path in documentation_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern in (ISSUE_NUMBER, COMMIT_IN_BACKTICKS):
                found.extend(f"{path.name}:{number}: {match}" for match in pattern.findall(line))
    assert not found, "work history in the documentation:\n" + "\n".join(found)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details to docs/"


def test_readme_links_to_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [page.name for page in DOCS.glob("*.md") if f"(docs/{page.name})" not in readme]
    assert not missing, f"README.md does not link to {missing}"


@pytest.mark.slow
def test_docs_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    api_page = (tmp_path / "site" / "python-api" / "index.html").read_text(encoding="utf-8")
    assert 'id="senseindex.SenseIndex.search_word"' in api_page
    cli_page = (tmp_path / "site" / "command-line" / "index.html").read_text(encoding="utf-8")
    assert "senseindex build-index" in cli_page
