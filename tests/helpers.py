"""Assertions shared by test modules (pytest puts this folder on sys.path: ``from helpers import ...``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx


def assert_found(*hit_lists: list) -> None:
    """Fail unless every list holds hits: two empty lists compare equal while proving nothing."""
    assert all(hit_lists), [len(hits) for hits in hit_lists]


class Server:
    """A `senseindex serve` subprocess and an HTTP client for it."""

    def __init__(self, index_dir: Path, *options: str, token: str | None = None, quiet: bool = True) -> None:
        environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
        environment.pop("SENSEINDEX_TOKEN", None)
        if token:
            environment["SENSEINDEX_TOKEN"] = token  # the environment variable, as the README advises
        command = [sys.executable, "-m", "senseindex.cli", "serve", "--index", str(index_dir), "--port", "0"]
        self.process = subprocess.Popen(
            [*command, "--backend", "torch", *(["--quiet"] if quiet else []), *options],
            cwd=Path(__file__).resolve().parent.parent,
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the log may come first (without --quiet); the line that tells the URL ends the start
        self.log: list[str] = []
        line = self.process.stderr.readline()
        while line and "Serving" not in line:
            self.log.append(line)
            line = self.process.stderr.readline()
        if "Serving" not in line:
            self.process.kill()
            raise RuntimeError(f"the server did not start: {''.join(self.log)}{self.process.stderr.read()}")
        # keep reading its stderr, so a chatty server never blocks on a full pipe
        self._reader = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)
        self._reader.start()
        self.url = line.split(" at ")[1].split(" ")[0]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def post(self, path: str, body: object) -> httpx.Response:
        return self.client.post(path, json=body)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._reader.join(timeout=30)  # the whole log is read once the process has ended


def run_command(*command: str) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured, whatever its exit status."""
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


# 'bank' by a river and 'bank' for money: the two-sense word of the corpora written by the tests of
# senses across slices (test_senses_by, test_change)
RIVER_BANK = [
    "We walked along the bank of the river at dusk.",
    "The boat was tied to the muddy bank of the stream.",
    "Reeds grew thick on the river bank.",
    "Children fished from the grassy bank of the brook.",
    "The flood washed away part of the river bank near the mill.",
]
MONEY_BANK = [
    "She opened an account at the bank on Monday.",
    "The bank raised its interest rates again.",
    "He asked the bank for a loan to buy a house.",
    "The bank lent the farmers money for seed.",
    "Customers queued outside the bank to withdraw cash.",
]
