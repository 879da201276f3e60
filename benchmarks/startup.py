"""Start-up time of commands that never run the model (``senseindex info``), against a baseline checkout.

Usage::

    python benchmarks/startup.py --index sample.idx [--baseline /path/to/older/checkout] [--runs 10]

Each run is a fresh process: ``python -c 'from senseindex.cli import main; main()' info --index IDX``,
with PYTHONPATH pointing at this checkout or at the baseline one. Runs of the two alternate, after one
warm-up run each, so both see the same machine state; the medians and their ratio are printed, with
whether the process imported torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# runs the CLI and reports, on stderr's last line, whether torch was imported
PROBE = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr))\n"
    "try:\n"
    "    from senseindex.cli import main\n"
    "except ImportError:  # 0.1.0 installed its command line as the top-level module cli\n"
    "    from cli import main\n"
    "sys.argv[0] = 'senseindex'\n"
    "main()\n"
)


def run_once(checkout: Path, index: str) -> tuple[float, bool]:
    """Seconds of one ``info`` run from ``checkout``, and whether it imported torch."""
    environment = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "info", "--index", index],
        env=environment,
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{checkout}: info failed: {result.stderr.strip()[-500:]}")
    return seconds, json.loads(result.stderr.strip().splitlines()[-1])["torch"]


def cpu_name() -> str:
    """The processor's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="an index folder (e.g. the sample index)")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to compare with")
    parser.add_argument("--runs", type=int, default=10)
    arguments = parser.parse_args()
    index = str(Path(arguments.index).resolve())
    checkouts = {"this checkout": ROOT}
    if arguments.baseline:
        checkouts["baseline"] = arguments.baseline.resolve()
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    torch_loaded: dict[str, bool] = {}
    for checkout in checkouts.values():
        run_once(checkout, index)  # warm-up: file cache, .pyc files
    for _ in range(arguments.runs):
        for name, checkout in checkouts.items():
            seconds, torch_loaded[name] = run_once(checkout, index)
            times[name].append(seconds)
    print(
        f"senseindex start-up, {time.strftime('%Y-%m-%d')}, {cpu_name()}, {os.cpu_count()} cores, "
        f"median of {arguments.runs} runs"
    )
    print("| version | median wall time, s | torch imported |")
    print("|---|---:|---|")
    for name in checkouts:
        print(f"| {name} | {statistics.median(times[name]):.2f} | {'yes' if torch_loaded[name] else 'no'} |")
    if arguments.baseline:
        ratio = statistics.median(times["this checkout"]) / statistics.median(times["baseline"])
        print(f"this checkout / baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
