"""Thread counts and devices: ``--threads`` and ``--device`` through the command line and the Python API."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator

import faiss
import pytest
import torch
from helpers import assert_found

import senseindex
from senseindex.cli import main

SENTENCE_QUERIES = ["a heron standing in shallow water", "the bank raised its interest rates"]
WORD_QUERIES = ["I sat on the [bank] of the river", "the [crane] lifted steel beams"]
SCORE_TOLERANCE = 1e-5
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.fixture(autouse=True)
def torch_threads_restored() -> Iterator[None]:
    """torch's thread count is process-wide: put back what the session had after each test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _same(got: list[dict], wanted: list, key: str) -> None:
    """Hits (as JSON objects) equal to the API's: the same ids in the same order, scores to 1e-5."""
    assert_found(wanted)
    assert [hit[key] for hit in got] == [getattr(hit, key) for hit in wanted]
    assert [hit["score"] for hit in got] == pytest.approx([hit.score for hit in wanted], abs=SCORE_TOLERANCE)


def test_one_thread_builds_and_queries_as_the_default(runner, sample_corpus, sample_index, tmp_path):
    folder = tmp_path / "one-thread.idx"
    built = runner.invoke(
        main,
        [
            "build-index",
            str(sample_corpus),
            "--index",
            str(folder),
            "--backend",
            "torch",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--json",
            "-q",
        ],
    )
    assert built.exit_code == 0, built.output
    summary = json.loads(built.output)
    assert (summary["threads"], summary["device"]) == (1, "cpu")
    assert summary["words"] == sample_index.info()["counts"]["words"]
    for text in SENTENCE_QUERIES:
        answered = runner.invoke(
            main, ["query", text, "--index", str(folder), "--backend", "torch", "--threads", "1", "--json"]
        )
        assert answered.exit_code == 0, answered.output
        got = [json.loads(line) for line in answered.output.splitlines()]
        _same(got, sample_index.search_sentences(text, k=10), "sentence_id")
    for text in WORD_QUERIES:
        answered = runner.invoke(
            main,
            [
                "query",
                "--word",
                text,
                "--index",
                str(folder),
                "--backend",
                "torch",
                "--threads",
                "1",
                "--json",
            ],
        )
        assert answered.exit_code == 0, answered.output
        got = [json.loads(line) for line in answered.output.splitlines()]
        _same(got, sample_index.search_word(text, k=10), "word_id")


def test_the_model_runs_with_the_threads_given(sample_index_dir):
    with senseindex.open_index(sample_index_dir, backend="torch", threads=1) as index:
        assert index.threads == 1
        one = index.search_sentences(SENTENCE_QUERIES[0], k=5)
    assert torch.get_num_threads() == 1  # process-wide, as documented
    with senseindex.open_index(sample_index_dir, backend="torch", threads=2) as index:
        assert index.threads == 2
        two = index.search_sentences(SENTENCE_QUERIES[0], k=5)
    _same([hit.to_dict() for hit in two], one, "sentence_id")


def test_add_takes_threads_and_device(sample_index_dir, tmp_path):
    folder = tmp_path / "added.idx"
    shutil.copytree(sample_index_dir, folder)
    note = tmp_path / "note.txt"
    note.write_text("A heron waded through the reeds at dawn.", encoding="utf-8")
    summary = senseindex.add_documents([str(note)], folder, backend="torch", threads=1, device="cpu")
    assert (summary.documents, summary.threads, summary.device) == (1, 1, "cpu")
    with senseindex.open_index(folder, backend="torch") as index:
        assert index.search_sentences("a heron in the reeds at dawn", k=1)[0].doc_id == "note.txt"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_thread_counts_are_one_line_errors(runner, sample_index_dir, value):
    for command in (
        ["query", "a heron", "--index", str(sample_index_dir)],
        ["build-index", "data/sample", "--index", "unused.idx"],
    ):
        line = _one_line_error(runner.invoke(main, [*command, "--threads", value]))
        assert "--threads" in line


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_bad_thread_counts_are_settings_errors(sample_index_dir, tmp_path, threads):
    with pytest.raises(senseindex.SettingsError, match="threads"):
        senseindex.open_index(sample_index_dir, threads=threads)
    with pytest.raises(senseindex.SettingsError, match="threads"):
        senseindex.build_index(
            ["data/sample"], tmp_path / "x.idx", senseindex.EncoderSettings(threads=threads)
        )
    with pytest.raises(senseindex.SettingsError, match="threads"):
        senseindex.add_documents(["data/sample"], sample_index_dir, threads=threads)
    assert not (tmp_path / "x.idx").exists()


def test_an_unknown_device_is_refused(runner, sample_index_dir):
    line = _one_line_error(
        runner.invoke(main, ["query", "a heron", "--index", str(sample_index_dir), "--device", "tpu"])
    )
    assert "--device" in line
    with pytest.raises(senseindex.SettingsError, match="tpu"):
        senseindex.open_index(sample_index_dir, device="tpu")


@NO_GPU
def test_cuda_without_a_gpu_is_refused_before_any_work(runner, sample_index_dir, tmp_path):
    folder = tmp_path / "gpu.idx"
    # a missing source and a missing model: the device is named first, so it is checked before either
    for command in (
        [
            "build-index",
            str(tmp_path / "no-such-source"),
            "--index",
            str(folder),
            "--model",
            str(tmp_path),
            "-q",
        ],
        [
            "add",
            str(tmp_path / "no-such-source"),
            "--index",
            str(sample_index_dir),
            "--model",
            str(tmp_path),
            "-q",
        ],
        ["query", "a heron", "--index", str(sample_index_dir), "--model", str(tmp_path)],
        ["senses", "bank", "--index", str(sample_index_dir), "--model", str(tmp_path)],
    ):
        line = _one_line_error(runner.invoke(main, [*command, "--device", "cuda"]))
        assert "device cuda" in line and "no CUDA GPU" in line, line
    assert not folder.exists()
    with pytest.raises(senseindex.SettingsError, match="device cuda"):
        senseindex.open_index(sample_index_dir, device="cuda", model=str(tmp_path))
    with pytest.raises(senseindex.SettingsError, match="device cuda"):
        senseindex.build_index(
            [str(tmp_path / "no-such-source")], folder, senseindex.EncoderSettings(device="cuda")
        )


def test_onnx_on_cuda_is_refused(runner, sample_index_dir):
    line = _one_line_error(
        runner.invoke(
            main,
            ["query", "a heron", "--index", str(sample_index_dir), "--backend", "onnx", "--device", "cuda"],
        )
    )
    assert "device cuda" in line and "onnx" in line


def test_cpu_and_auto_devices_give_the_same_hits(sample_index_dir, sample_index):
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    with senseindex.open_index(sample_index_dir, backend="torch", device="cpu") as on_cpu:
        assert on_cpu.device == "cpu"
        cpu_hits = on_cpu.search_word(WORD_QUERIES[0], k=10)
        cpu_vectors = on_cpu.embed_sentences(SENTENCE_QUERIES)
    with senseindex.open_index(sample_index_dir, backend="torch", device="auto") as chosen:
        assert chosen.device == expected_auto
        auto_hits = chosen.search_word(WORD_QUERIES[0], k=10)
        auto_vectors = chosen.embed_sentences(SENTENCE_QUERIES)
    assert auto_vectors.dtype == cpu_vectors.dtype == "float32"
    assert auto_vectors == pytest.approx(cpu_vectors, abs=1e-5)
    _same([hit.to_dict() for hit in auto_hits], cpu_hits, "word_id")
    _same([hit.to_dict() for hit in cpu_hits], sample_index.search_word(WORD_QUERIES[0], k=10), "word_id")


def test_a_search_leaves_the_callers_faiss_threads_alone(sample_index):
    """Searches run FAISS on one thread and put back the calling thread's own setting."""
    seen: list[int] = []

    def search_on_a_thread_of_its_own() -> None:
        faiss.omp_set_num_threads(2)
        sample_index.search_similar_words(WORD_QUERIES[1], k=5)
        sample_index.search_sentences(SENTENCE_QUERIES[0], k=5)
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=search_on_a_thread_of_its_own)
    worker.start()
    worker.join()
    assert seen == [2]
