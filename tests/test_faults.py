"""Faults of the machine: a full disk and a read-only file system are one-line errors that say what to do.

A small tmpfs stands for the full disk (mounting needs root, or the test is skipped with the reason).
The index on it must keep every committed document and pass `check` afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run_command

import senseindex
from senseindex.cli import main

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
TINY = "A heron stood in the shallow water.\n"


def _large_corpus(folder: Path) -> Path:
    """About 3,000 words: more word vectors (1.5 kB each) and rows than the small disk holds."""
    folder.mkdir()
    for path in sorted(SAMPLE.glob("*.md"))[:6]:
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error_and_the_index_keeps_its_documents(small_disk, tmp_path):
    runner = CliRunner()
    index = small_disk / "notes.idx"
    (tmp_path / "heron.txt").write_text(TINY, encoding="utf-8")
    built = runner.invoke(
        main, ["build-index", str(tmp_path / "heron.txt"), "--index", str(index), "-q", "--backend", "torch"]
    )
    assert built.exit_code == 0, built.output
    corpus = _large_corpus(tmp_path / "large")

    added = runner.invoke(main, ["add", str(corpus), "--index", str(index), "-q", "--backend", "torch"])
    line = _one_line_error(added)
    assert "no space left on device" in line and "free space and run the command again" in line
    assert "damaged" not in line and "rebuild" not in line

    report = senseindex.check_index(index)
    assert not report.problems, report.problems
    with senseindex.open_index(index, backend="torch") as opened:
        assert {hit.doc_id for hit in opened.search_sentences("a heron in the water", k=3)} == {"heron.txt"}

    # a new build on the full disk: one line too, and whatever it left is a sound index or nothing
    fresh = small_disk / "fresh.idx"
    rebuilt = runner.invoke(
        main, ["build-index", str(corpus), "--index", str(fresh), "-q", "--backend", "torch"]
    )
    line = _one_line_error(rebuilt)
    assert "no space left on device" in line
    if fresh.exists():
        assert not senseindex.check_index(fresh).problems

    # an overwrite that runs out of space leaves the index it was to replace as it was
    overwrite = ["build-index", str(corpus), "--index", str(index), "--overwrite", "-q", "--backend", "torch"]
    line = _one_line_error(runner.invoke(main, overwrite))
    assert "no space left on device" in line
    assert not senseindex.check_index(index).problems
    with senseindex.open_index(index, backend="torch") as opened:
        assert {hit.doc_id for hit in opened.search_sentences("a heron in the water", k=3)} == {"heron.txt"}


def test_a_read_only_file_system_is_a_one_line_error_that_says_what_to_do(small_disk, tmp_path):
    runner = CliRunner()
    index = small_disk / "notes.idx"
    (tmp_path / "heron.txt").write_text(TINY, encoding="utf-8")
    built = runner.invoke(
        main, ["build-index", str(tmp_path / "heron.txt"), "--index", str(index), "-q", "--backend", "torch"]
    )
    assert built.exit_code == 0, built.output
    remounted = run_command("mount", "-o", "remount,ro", str(small_disk))
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remounted.stderr.strip()}")
    for arguments in (
        ["add", str(SAMPLE / "river_walk.md"), "--backend", "torch", "-q"],
        ["delete", "heron.txt"],
    ):
        result = runner.invoke(main, [*arguments, "--index", str(index)])
        line = _one_line_error(result)
        assert "file system is read-only: remount it read-write" in line, line
        assert "damaged" not in line and "rebuild" not in line
    # reading still works
    with senseindex.open_index(index, backend="torch") as opened:
        assert opened.search_sentences("a heron in the water", k=1)
