"""Commands that never embed text start without the model libraries.

Each command runs in a fresh Python process, so nothing the test session imported can hide an import;
the process reports, as it exits, which of torch and transformers it loaded.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_LIBRARIES = ("torch", "transformers")
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample"

# Runs the CLI with the given arguments, then writes its exit status and which of the named libraries
# are in sys.modules to the report file. atexit also sees an exit through SystemExit (click's way).
PROBE = """
import atexit, json, sys

report, libraries, arguments = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
outcome = {"status": None}


def write_report():
    loaded = [name for name in libraries if name in sys.modules]
    with open(report, "w", encoding="utf-8") as handle:
        json.dump({"status": outcome["status"], "loaded": loaded}, handle)


atexit.register(write_report)
from senseindex.cli import main

try:
    main(arguments, prog_name="senseindex")
    outcome["status"] = 0
except SystemExit as stop:
    outcome["status"] = stop.code or 0
    raise
"""


def _run_cli(tmp_path: Path, *arguments: str) -> dict:
    """Run ``senseindex ARGUMENTS`` in a fresh interpreter; its exit status, output and loaded libraries."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    finished = subprocess.run(
        [sys.executable, "-c", PROBE, str(report), ",".join(MODEL_LIBRARIES), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.is_file(), f"the probe wrote no report: {finished.stderr}"
    outcome = json.loads(report.read_text(encoding="utf-8"))
    outcome.update(returncode=finished.returncode, stdout=finished.stdout, stderr=finished.stderr)
    return outcome


@pytest.mark.parametrize(
    "arguments",
    [("--version",), ("--help",), ("info", "--index", "{index}"), ("check", "--index", "{index}")],
    ids=["version", "help", "info", "check"],
)
def test_commands_without_a_model_do_not_import_torch_or_transformers(tmp_path, sample_index_dir, arguments):
    outcome = _run_cli(tmp_path, *(argument.format(index=sample_index_dir) for argument in arguments))
    assert (outcome["returncode"], outcome["status"]) == (0, 0), outcome["stderr"]
    assert outcome["stdout"]
    assert outcome["loaded"] == []


def test_add_dry_run_does_not_import_torch_or_transformers(tmp_path, sample_index_dir):
    """``add --dry-run`` only compares the sources with the index (docs/installation.md says so)."""
    new_document = tmp_path / "new.jsonl"
    new_document.write_text('{"id": "fresh", "text": "A new note about the tide."}\n', encoding="utf-8")
    for source, expected in ((SAMPLE_CORPUS, "unchanged"), (new_document, "1 new: fresh")):
        outcome = _run_cli(tmp_path, "add", str(source), "--dry-run", "--index", str(sample_index_dir))
        assert (outcome["returncode"], outcome["status"]) == (0, 0), outcome["stderr"]
        assert expected in outcome["stdout"]
        assert outcome["loaded"] == []


def test_delete_does_not_import_torch_or_transformers(tmp_path, sample_index_dir):
    copy = tmp_path / "copy.idx"
    shutil.copytree(sample_index_dir, copy)
    before = json.loads(_run_cli(tmp_path, "info", "--index", str(copy), "--json")["stdout"])["counts"]
    outcome = _run_cli(tmp_path, "delete", "baseball.md", "--index", str(copy))
    assert (outcome["returncode"], outcome["status"]) == (0, 0), outcome["stderr"]
    assert outcome["loaded"] == []
    after = json.loads(_run_cli(tmp_path, "info", "--index", str(copy), "--json")["stdout"])["counts"]
    assert after["documents"] == before["documents"] - 1


def test_a_query_does_import_them(tmp_path, sample_index_dir):
    """The probe can see the libraries: a command that embeds text loads them."""
    outcome = _run_cli(
        tmp_path, "query", "river bank", "--index", str(sample_index_dir), "--backend", "torch"
    )
    assert (outcome["returncode"], outcome["status"]) == (0, 0), outcome["stderr"]
    assert outcome["loaded"] == list(MODEL_LIBRARIES)
