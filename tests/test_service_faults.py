"""Faults of the machine seen through the HTTP service: a full disk, read-only storage, a vanished file.

Each is answered with the error JSON and a status that says whose fault it is (507 for a full disk, 503
for other storage faults), never a traceback, and the index keeps what it had. A small tmpfs stands for
the disk (mounting needs root, or the test is skipped with the reason).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from helpers import Server, run_command

import senseindex
from senseindex.cli import main

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
TINY = "A heron stood in the shallow water.\n"


def _tiny_index(folder: Path, tmp_path: Path) -> Path:
    """An index of one short document (``heron.txt``) in ``folder``."""
    (tmp_path / "heron.txt").write_text(TINY, encoding="utf-8")
    index = folder / "notes.idx"
    built = CliRunner().invoke(
        main, ["build-index", str(tmp_path / "heron.txt"), "--index", str(index), "-q", "--backend", "torch"]
    )
    assert built.exit_code == 0, built.output
    return index


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {"error": {"status": status, "message": body["error"]["message"]}}
    message = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def _heron_is_found(server: Server) -> None:
    answer = server.post("/search/sentences", {"text": "a heron in the water", "k": 3})
    assert answer.status_code == 200, answer.text
    assert {hit["doc_id"] for hit in answer.json()["hits"]} == {"heron.txt"}


@pytest.mark.slow
def test_a_full_disk_answers_507_and_the_index_keeps_its_documents(small_disk, tmp_path):
    index = _tiny_index(small_disk, tmp_path)
    documents = [
        {"id": path.name, "text": path.read_text(encoding="utf-8")}
        for path in sorted(SAMPLE.glob("*.md"))[:6]
    ]
    server = Server(index)
    try:
        message = _error(server.post("/documents", {"documents": documents}), 507)
        assert message.startswith("the server's disk is full, so the request was not completed"), message
        assert "documents stored before it are kept" in message and "no space left on device" in message
        assert str(small_disk) not in message  # the index folder's path is not told
        _heron_is_found(server)  # queries go on
        assert not any("Traceback" in line for line in server.log), server.log
    finally:
        server.stop()
    assert not senseindex.check_index(index).problems


@pytest.mark.slow  # builds an index and starts a server
def test_a_read_only_index_answers_503_to_writes_and_still_to_queries(small_disk, tmp_path):
    index = _tiny_index(small_disk, tmp_path)
    remounted = run_command("mount", "-o", "remount,ro", str(small_disk))
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remounted.stderr.strip()}")
    server = Server(index)
    try:
        for answer in (
            server.post("/documents", {"documents": [{"id": "new.txt", "text": "A crane in the marsh."}]}),
            server.client.delete("/documents/heron.txt"),
        ):
            message = _error(answer, 503)
            assert message.startswith("the server's storage failed, so the request was not completed"), (
                message
            )
            assert "read-only" in message, message
        _heron_is_found(server)
        schema = server.client.get("/openapi.json").json()["paths"]
        for path, method in (("/documents", "post"), ("/documents/{doc_id}", "delete")):
            assert {"503", "507"} <= set(schema[path][method]["responses"]), (path, method)
    finally:
        server.stop()


def _cut_short(folder: Path, table: str) -> str:
    """Cut a table's shard file down to 100 bytes, in place, as a failing disk or a careless hand might."""
    shard = next(folder.glob(f"{table}-*.faiss"))
    with open(shard, "r+b") as file:
        file.truncate(100)
    return shard.name


@pytest.mark.slow
def test_a_shard_cut_short_under_the_server_is_an_error_answer_not_a_crash(sample_index_dir, tmp_path):
    folder = tmp_path / "served.idx"
    shutil.copytree(sample_index_dir, folder)
    server = Server(folder)
    try:
        sentence = {"text": "a heron in the water", "k": 3}
        word = {"text": "I sat on the [bank] of the river", "k": 3}
        assert server.post("/search/sentences", sentence).status_code == 200
        assert server.post("/search/words", word).status_code == 200
        # the shards are memory-mapped: touching a page cut away would kill the server (SIGBUS)
        for table, path, body in (
            ("sentences", "/search/sentences", sentence),
            ("words", "/search/words", word),
        ):
            name = _cut_short(folder, table)
            message = _error(server.post(path, body), 500)
            assert message.startswith(f"{name} was cut short while the index was open"), message
            assert "rebuild it" in message and str(folder) not in message
        assert server.client.get("/health").status_code == 200
        assert server.process.poll() is None
        assert not any("Traceback" in line for line in server.log), server.log
    finally:
        server.stop()
    # the command line, opening the index afresh: one line that says what to do
    for command in (["query", "a heron in the water"], ["query", "--word", "I sat on the [bank]"]):
        result = CliRunner().invoke(main, [*command, "--index", str(folder), "--backend", "torch"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert "cannot be read; rebuild the index" in lines[0], lines[0]
