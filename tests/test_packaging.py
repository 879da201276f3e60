"""The installed distribution: one top-level package, and a clear error when an optional extra is missing."""

from __future__ import annotations

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
    for module in ("cli.py", "indexer/__init__.py", "search/__init__.py", "errors.py", "_version.py"):
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
