"""What the command modules share: common options, and library errors turned into one-line messages.

CLI-only: the library never imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

import senseindex

INDEX_OPTION = click.option(
    "--index",
    "index_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Index folder.",
)
BACKEND_OPTION = click.option(
    "--backend",
    type=click.Choice(senseindex.BACKENDS),
    default="auto",
    show_default=True,
    help="What runs the model: torch (float32), torch-bf16 (bfloat16 matrix products, ~2x faster on "
    "CPUs with AMX or AVX512-BF16), onnx (ONNX Runtime; needs the onnx extra), or auto (torch-bf16 "
    "where the CPU has bfloat16 instructions, else torch). Same search results.",
)
THREADS_OPTION = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads of the model (and of FAISS while vectors are trained, added and merged), per "
    "worker with --workers; default: one per core (the cores shared out among local workers). "
    "Searches always run FAISS on one thread.",
)
DEVICE_OPTION = click.option(
    "--device",
    type=click.Choice(senseindex.DEVICES),
    default="auto",
    show_default=True,
    help="Where the model runs: cpu, cuda (a CUDA GPU through torch) or auto (cuda when torch sees "
    "a GPU). The onnx backends run on the CPU.",
)
MODEL_OPTION = click.option("--model", default=None, help="Model folder to use if the stored one has moved.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per line).")
QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
SKIP_BAD_OPTION = click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip binary files, malformed JSONL lines and repeated ids with a warning instead of stopping.",
)


def one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's own errors into click's one-line 'Error: ...' and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except senseindex.SenseIndexError as error:
            raise click.ClickException(str(error)) from error

    return wrapper
