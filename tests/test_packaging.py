"""The installed distribution: one top-level package, and a clear error when an optional extra is missing."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import senseindex

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path):
    # Built from a copy of the working tree, so the build leaves nothing in the checkout.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", ".*_cache", "*.idx"
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("senseindex-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(name for name in names if name.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["senseindex"]
        entry_points = archive.read(top_level.replace("top_level.txt", "entry_points.txt")).decode()
    assert {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")} == {
        "senseindex"
    }
    # the repository folders arrive inside the package, as files (not links)
    for module in (
        "cli.py",
        "cli_build.py",
        "cli_serve.py",
        "indexer/__init__.py",
        "search/__init__.py",
        "errors.py",
        "_version.py",
    ):
        assert f"senseindex/{module}" in names
    assert "senseindex = senseindex.cli:main" in entry_points
    assert wheel.name.startswith(f"senseindex-{senseindex.__version__}-")


def _run_without(modules: list[str], arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh process in which the given modules cannot be imported.

    As it exits, the process prints on stdout whether it loaded torch (whether any model work began).
    """
    # sys.modules[name] = None is how Python itself marks a module as unimportable
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in modules)
    report = "atexit.register(lambda: print('torch loaded' if 'torch' in sys.modules else 'no torch'))"
    code = (
        f"import atexit, sys; {blocked}; {report}; "
        f"from senseindex.cli import main; sys.exit(main({arguments!r}))"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_serve_without_the_serve_extra_names_it(sample_index_dir):
    result = _run_without(["uvicorn", "fastapi"], ["serve", "--index", str(sample_index_dir), "--port", "0"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the HTTP service (senseindex serve) needs the 'serve' extra (uvicorn is not installed): "
        "pip install 'senseindex[serve]'"
    ]
    assert result.stdout.strip() == "no torch"  # refused before the model loads


def test_a_plot_without_the_plot_extra_names_it(sample_index_dir, tmp_path):
    result = _run_without(
        ["matplotlib", "matplotlib.figure"],
        ["senses", "apple", "--index", str(sample_index_dir), "--plot", str(tmp_path / "map.png")],
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'plot' extra" in lines[0] and "pip install 'senseindex[plot]'" in lines[0]
    assert not (tmp_path / "map.png").exists()
    assert result.stdout.strip() == "no torch"  # refused before the model loads


def _imported_modules(path: Path, package: str) -> set[str]:
    """The absolute names of the modules a source file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_nothing_in_the_library_imports_the_cli():
    package_root = Path(senseindex.__file__).parent
    cli_modules = {"cli.py"} | {p.name for p in package_root.glob("cli_*.py")}
    assert {"cli_build.py", "cli_search.py", "cli_maintenance.py", "cli_serve.py"} <= cli_modules
    offenders = []
    checked = 0
    paths = [
        Path(folder) / name
        for folder, _, files in os.walk(package_root, followlinks=True)  # into indexer/ and search/
        for name in files
        if name.endswith(".py")
    ]
    for path in sorted(paths):
        relative = path.relative_to(package_root)
        if len(relative.parts) == 1 and relative.name in cli_modules:
            continue
        package = ".".join(["senseindex", *relative.parts[:-1]])
        checked += 1
        for name in _imported_modules(path, package):
            if name == "senseindex.cli" or name.startswith(("senseindex.cli.", "senseindex.cli_")):
                offenders.append(f"{relative}: {name}")
    assert checked > 50  # the walk reached the library's modules, links included
    assert offenders == []
