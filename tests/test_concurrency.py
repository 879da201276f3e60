"""Readers during writes: queries in this process while another process adds, replaces and deletes a
document; no query fails, and every answer comes from one committed state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import senseindex

# a writer process races readers over several adds: the slow tier
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
VERSION_ONE = "The lighthouse keeper polished the great brass lamp every evening before dusk."
VERSION_TWO = (
    "A glassblower shaped the glowing bulb on the end of a long iron pipe. "
    "She rolled it on a steel table to cool the outside. "
    "Then she cut it free and set the vase in the annealing oven."
)
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import senseindex
    index, one, two, cycles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    handshake = Path(sys.argv[5])

    def wait_until_the_reader_saw(state):
        # the first cycle waits for the reader to see each of its states, so the reader surely runs
        # while the writer changes things; later cycles race it freely
        deadline = time.monotonic() + 300
        while not (handshake / state).exists():
            if time.monotonic() > deadline:
                sys.exit(f"the reader never saw {state!r}")
            time.sleep(0.05)

    for cycle in range(cycles):
        senseindex.add_documents([one], index, backend="torch")   # new
        if cycle == 0:
            wait_until_the_reader_saw("one")
        senseindex.add_documents([two], index, backend="torch")   # replaced
        if cycle == 0:
            wait_until_the_reader_saw("two")
        senseindex.delete_documents(index, ["extra"])             # gone
    print("done")
    """
)


def _state(index: senseindex.SenseIndex, base: dict[str, int]) -> str:
    """Which committed state a reader's snapshot shows, asserting that all it sees agrees."""
    counts = index.info()["counts"]
    extra_documents = counts["documents"] - base["documents"]
    extra_sentences = counts["sentences"] - base["sentences"]
    one = index.search_sentences(VERSION_ONE, k=1)[0]
    two = index.search_sentences(VERSION_TWO.split(". ")[1], k=1)[0]
    if (extra_documents, extra_sentences) == (0, 0):
        assert one.doc_id != "extra" and two.doc_id != "extra"
        return "without"
    if (extra_documents, extra_sentences) == (1, 1):
        assert (one.doc_id, one.text) == ("extra", VERSION_ONE) and one.score > 0.99
        assert two.doc_id != "extra"
        return "one"
    assert (extra_documents, extra_sentences) == (1, 3), counts
    assert two.doc_id == "extra" and two.score > 0.99
    assert one.doc_id != "extra"
    return "two"


def test_queries_during_adds_and_deletes_never_fail_and_never_see_half_a_change(tmp_path):
    index_dir = tmp_path / "idx"
    senseindex.build_index([str(SAMPLE)], index_dir, senseindex.EncoderSettings(backend="torch"))
    base = senseindex.index_info(index_dir)["counts"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    one.write_text(json.dumps({"id": "extra", "text": VERSION_ONE}) + "\n", encoding="utf-8")
    two.write_text(json.dumps({"id": "extra", "text": VERSION_TWO}) + "\n", encoding="utf-8")
    handshake = tmp_path / "seen"
    handshake.mkdir()
    seen: list[str] = []
    with senseindex.open_index(index_dir, backend="torch") as long_lived:
        first_state = _state(long_lived, base)  # opened before the writer starts
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(index_dir), str(one), str(two), "4", str(handshake)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 900  # for a stuck writer only: the loop ends when the writer does
        while writer.poll() is None and time.monotonic() < deadline:
            # a fresh reader per round, and one kept open and moved along with refresh(); _state
            # fails the test on any answer that mixes two states
            with senseindex.open_index(index_dir, backend="torch") as fresh:
                seen.append(_state(fresh, base))
            long_lived.refresh()
            seen.append(_state(long_lived, base))
            for state in set(seen):
                (handshake / state).touch()  # lets the writer's first cycle go on (see WRITER)
        # a reader that does not refresh keeps the state it opened, whatever happened since
        assert _state(long_lived, base) == (seen or [first_state])[-1]
    if writer.poll() is None:
        writer.kill()
    output, errors = writer.communicate()
    assert writer.returncode == 0, errors
    assert output.strip() == "done"
    assert first_state == "without"
    # the reader saw the writer's intermediate commits while it ran, and only committed states
    assert {"one", "two"} <= set(seen) <= {"without", "one", "two"}, seen
    with senseindex.open_index(index_dir, backend="torch") as index:
        assert _state(index, base) == "without"
    assert senseindex.check_index(index_dir).ok


def test_a_reader_keeps_its_snapshot_until_it_refreshes(tmp_path):
    index_dir = tmp_path / "idx"
    senseindex.build_index(
        [str(SAMPLE / "zoo_visit.md")], index_dir, senseindex.EncoderSettings(backend="torch")
    )
    with senseindex.open_index(index_dir, backend="torch") as reader:
        before = reader.info()["counts"]
        senseindex.add_documents([str(SAMPLE / "town_bank.md")], index_dir, backend="torch")
        assert reader.info()["counts"] == before
        assert all(h.doc_id == "zoo_visit.md" for h in reader.search_sentences("interest rates", k=50))
        senseindex.delete_documents(index_dir, ["zoo_visit.md"])
        assert reader.search_sentences("penguins", k=1)[0].doc_id == "zoo_visit.md"
        reader.refresh()
        assert reader.info()["counts"]["documents"] == 1
        assert {h.doc_id for h in reader.search_sentences("penguins", k=50)} == {"town_bank.md"}


def test_shard_file_names_are_never_reused_so_a_refreshing_reader_stays_right(tmp_path):
    """A shard dropped by a delete must not come back under the same name with other vectors: a
    reader that opened the old file keeps it open under that name."""
    index_dir = tmp_path / "idx"
    settings = senseindex.EncoderSettings(backend="torch")
    senseindex.build_index([str(SAMPLE / "zoo_visit.md")], index_dir, settings)
    senseindex.add_documents([str(SAMPLE / "town_bank.md")], index_dir, backend="torch")
    with senseindex.open_index(index_dir, backend="torch") as reader:
        files_before = {f["file"] for f in reader.info()["vector_files"]}
        assert reader.search_sentences("interest rates", k=1)[0].doc_id == "town_bank.md"
        senseindex.delete_documents(index_dir, ["town_bank.md"])  # its shards: all deleted, dropped
        senseindex.add_documents([str(SAMPLE / "baseball.md")], index_dir, backend="torch")
        files_after = {f["file"] for f in senseindex.index_info(index_dir)["vector_files"]}
        new_files = files_after - files_before
        assert new_files and not new_files & files_before
        # the dropped shards are gone; the new ones may have been merged with the old small ones
        assert len(files_after) <= len(files_before)
        reader.refresh()
        hits = reader.search_sentences("the pitcher threw the ball", k=300)
        assert hits[0].doc_id == "baseball.md"
        assert {h.doc_id for h in hits} == {"zoo_visit.md", "baseball.md"}
