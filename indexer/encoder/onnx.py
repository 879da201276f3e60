"""The ``onnx`` and ``onnx-int8`` backends: the transformer exported once to ONNX, run with ONNX Runtime.

The int8 model comes from ONNX Runtime's dynamic quantiser.

Imports torch at module level; only `core` imports this module, when such an encoder is loaded.
onnxruntime and onnx (the ``onnx`` extra) are imported when a runner is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from senseindex.errors import MissingExtra, ModelLoadError
from senseindex.extras import import_extra
from senseindex.indexer.encoder.models import import_transformers, onnx_cache_folder

if TYPE_CHECKING:
    from senseindex.indexer.encoder.core import Encoder


class LayerOutputs(torch.nn.Module):
    """The transformer with exactly the two outputs the encoder pools.

    They are its word layer (per the layer strategy) and the last hidden state. This is what gets exported to
    ONNX.

    Args:
        encoder: the encoder whose layer strategy picks the word layer.
        model: the transformer to run (loaded with eager attention for export).
    """

    def __init__(self, encoder: Encoder, model: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run the transformer.

        Args:
            input_ids: ``(batch, length)`` int64.
            attention_mask: ``(batch, length)`` int64.

        Returns:
            ``(last hidden state,)`` when the word layer is the last layer, else ``(last hidden state,
            word layer)``; each ``(batch, length, width)`` float32.
        """
        word_layer, last_hidden = self.encoder.forward(self.model, input_ids, attention_mask, False)
        if self.encoder.last_layer_only:  # the word layer is the last layer: one output, not a copy
            return (last_hidden,)
        return last_hidden, word_layer


class OnnxExtraMissing(MissingExtra, ModelLoadError):
    """The ``onnx`` extra is not installed: both a `MissingExtra` and a `ModelLoadError`.

    `MissingExtra` as documented for every missing extra, and `ModelLoadError`, which is what this raised
    before (so callers catching either still do).
    """


def _import_onnx_package(module: str, backend: str) -> ModuleType:
    """Import onnxruntime or onnx, or say in one line how to install it.

    Raises:
        MissingExtra: the package is not installed (an `OnnxExtraMissing`).
    """
    try:
        return import_extra(module, "onnx")
    except MissingExtra as error:
        raise OnnxExtraMissing(
            f"the {backend} backend needs the onnxruntime and onnx packages ({module} is not "
            "installed); install them with pip install 'senseindex[onnx]' or use --backend torch"
        ) from error


class OnnxRunner:
    """The encoder's transformer exported once to ONNX and run with ONNX Runtime on the CPU.

    The export is cached by weights fingerprint and layer strategy.
    Its intra-op threads are torch's thread count when the session is made (``--threads``).

    Args:
        encoder: the encoder whose model to export.
        backend: ``onnx`` or ``onnx-int8`` (int8 weights, quantised once after the export).

    Raises:
        MissingExtra: onnxruntime or onnx is not installed (the ``onnx`` extra).
        ModelLoadError: the model cannot be exported, quantised or loaded.
    """

    def __init__(self, encoder: Encoder, backend: str) -> None:
        onnxruntime = _import_onnx_package("onnxruntime", backend)
        key = f"{encoder.fingerprint.split(':')[-1][:24]}-{encoder.settings.layers}-v2"
        path = onnx_cache_folder() / f"{key}.onnx"
        if not path.is_file():
            _import_onnx_package("onnx", backend)  # only the exporter needs it; fail before a long export
            export_onnx(encoder, path)
        if backend == "onnx-int8":
            quantized = path.with_name(f"{key}-int8.onnx")
            if not quantized.is_file():
                quantize_onnx(path, quantized)
            path = quantized
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        # Idle workers must not spin: on 2 cores they took CPU from the next query's other work
        # (measured: p95 of query encoding 15 ms spinning, 10 ms not; builds no slower).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelLoadError(
                f"ONNX Runtime cannot load {path}: {error}; delete it to export again"
            ) from error

    def run(self, input_ids: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass.

        Args:
            input_ids: ``(batch, length)`` int64.
            attention: ``(batch, length)`` int64 attention mask.

        Returns:
            ``(word layer, last hidden state)``, each ``(batch, length, width)`` float32.
        """
        outputs = self.session.run(
            None, {"input_ids": input_ids.numpy(), "attention_mask": attention.numpy()}
        )
        last_hidden = torch.from_numpy(outputs[0])
        return (torch.from_numpy(outputs[1]) if len(outputs) > 1 else last_hidden), last_hidden


def quantize_onnx(source: Path, path: Path) -> None:
    """Dynamic int8 quantisation of an exported model, by ONNX Runtime's own quantiser.

    Weights are int8 per output channel; activations are quantised per batch at run time.

    Args:
        source: the float32 ONNX file.
        path: where to write the int8 model (written whole or not at all).

    Raises:
        ModelLoadError: the quantiser failed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(source), str(temporary), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(temporary, path)
    except Exception as error:  # the quantiser raises many types
        temporary.unlink(missing_ok=True)
        raise ModelLoadError(f"cannot quantise {source} to int8: {str(error).splitlines()[0]}") from error


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs advice through the root logger; the library must not print."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def export_onnx(encoder: Encoder, path: Path) -> None:
    """Export an encoder's transformer (its two pooled outputs) to an ONNX file.

    Args:
        encoder: the encoder to export.
        path: the ONNX file to write (written whole or not at all).

    Raises:
        ModelLoadError: the export failed.
    """
    # Eager attention traces to plain ONNX operators with dynamic batch and length.
    model = (
        import_transformers()
        .AutoModel.from_pretrained(
            str(encoder.transformer_dir), local_files_only=True, attn_implementation="eager"
        )
        .eval()
    )
    sample_ids = torch.full((2, 8), encoder.pad_id, dtype=torch.long)
    sample_ids[:, 0] = encoder.cls_id
    sample_mask = torch.ones((2, 8), dtype=torch.long)
    dynamic = {0: "batch", 1: "length"}
    outputs = ["last_hidden"] if encoder.last_layer_only else ["last_hidden", "word_layer"]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The tracer warns about every Python branch it freezes; none depends on batch or length here
        # (a test compares padded batches with torch), and the library must not print.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LayerOutputs(encoder, model),
                (sample_ids, sample_mask),
                str(temporary),
                input_names=["input_ids", "attention_mask"],
                output_names=outputs,
                dynamic_axes={name: dynamic for name in ("input_ids", "attention_mask", *outputs)},
                opset_version=17,
                dynamo=False,
            )
        os.replace(temporary, path)
    except Exception as error:  # the exporter raises many types; the message says what went wrong
        temporary.unlink(missing_ok=True)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelLoadError(f"cannot export {encoder.model_path} to ONNX: {reason}") from error
