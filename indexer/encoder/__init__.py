"""The encoder: text to word and sentence vectors with a BERT-family model.

Importing this package imports neither torch nor transformers (nor onnxruntime): they load with the
first model, so commands that never embed text start fast.

Modules:
    settings: `EncoderSettings`, the allowed values, and the choice of backend.
    models: model folders, their fingerprint and layout, loading a transformer.
    batches: the encoder's batch types and the numpy work around a forward pass.
    core: the `Encoder` and the process-wide cache of loaded encoders.
    bfloat16: the ``torch-bf16`` backend (imports torch).
    onnx: the ``onnx`` and ``onnx-int8`` backends (imports torch; onnxruntime and onnx lazily).
"""

from senseindex.indexer.encoder.batches import EncodedBatch, PreparedBatch, combine_layers, slice_batch
from senseindex.indexer.encoder.core import Encoder, load_encoder, load_index_encoder
from senseindex.indexer.encoder.models import fingerprint_model, onnx_cache_folder, resolve_model_path
from senseindex.indexer.encoder.settings import (
    BACKENDS,
    DEFAULT_MODEL,
    DEVICES,
    LAYER_STRATEGIES,
    PIECE_POOLINGS,
    SENTENCE_POOLINGS,
    EncoderSettings,
    check_device,
    has_bfloat16_matrix_instructions,
    resolve_backend,
    resolve_device,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEVICES",
    "LAYER_STRATEGIES",
    "PIECE_POOLINGS",
    "SENTENCE_POOLINGS",
    "EncodedBatch",
    "Encoder",
    "EncoderSettings",
    "PreparedBatch",
    "check_device",
    "combine_layers",
    "fingerprint_model",
    "has_bfloat16_matrix_instructions",
    "load_encoder",
    "load_index_encoder",
    "onnx_cache_folder",
    "resolve_backend",
    "resolve_device",
    "resolve_model_path",
    "slice_batch",
]
