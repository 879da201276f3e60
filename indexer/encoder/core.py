"""The encoder: one transformer forward pass per batch gives word vectors and sentence vectors.

torch and transformers are imported when the first `Encoder` is made, not when this module is
imported, so commands that never load a model (``info``, ``check``, ``delete``) start fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from senseindex.errors import IndexCorrupted, ModelLoadError, ModelMismatch, SettingsError
from senseindex.indexer.encoder.batches import (
    EncodedBatch,
    PreparedBatch,
    cut_to_tokens,
    keep_one_piece,
    length_batches,
    normalise,
    word_of_each_piece,
)
from senseindex.indexer.encoder.models import (
    fingerprint_model,
    load_transformer,
    resolve_model_path,
    sentence_transformers_layout,
)
from senseindex.indexer.encoder.pooling import accumulate
from senseindex.indexer.encoder.settings import (
    DEFAULT_MODEL,
    EncoderSettings,
    check_device,
    resolve_backend,
    resolve_device,
)

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from senseindex.indexer.encoder.onnx import OnnxRunner
    from senseindex.indexer.encoder.traced import TracedPass


class Encoder:
    """A loaded model plus the settings that turn its hidden states into word and sentence vectors.

    Args:
        settings: the encoder settings.

    The model runs on `device`; its inputs are moved there and its vectors come back to the CPU
    as float32 numpy arrays, whatever the device. ``settings.threads`` sets torch's intra-op threads,
    which are process-wide: the last encoder loaded with a thread count sets them for every model of
    the process.

    Raises:
        ModelLoadError: the model folder cannot be loaded as a BERT-family encoder with a fast
            tokenizer.
        SettingsError: a setting is invalid for this model (e.g. ``layer-9`` on a 6-layer model),
            or the device is not there (checked before the model loads).
        MissingExtra: an ONNX backend was asked for without the ``onnx`` extra installed.
    """

    def __init__(self, settings: EncoderSettings) -> None:
        settings.validate()
        self.settings = settings
        self.device = resolve_device(settings.device, settings.backend)
        set_model_threads(settings.threads)
        self.model_path = resolve_model_path(settings.model)
        transformer_dir, model_pooling, st_max_length = sentence_transformers_layout(self.model_path)
        self.tokenizer, self.model = load_transformer(transformer_dir, self.model_path)
        config = self.model.config
        self.num_layers = int(getattr(config, "num_hidden_layers", 0))
        self.hidden_size = int(getattr(config, "hidden_size", 0))
        if not self.num_layers or not self.hidden_size:
            raise ModelLoadError(f"{self.model_path} is not a transformer encoder (no hidden layers)")
        cls_id = self.tokenizer.cls_token_id
        if cls_id is None:
            cls_id = self.tokenizer.bos_token_id
        sep_id = self.tokenizer.sep_token_id
        if sep_id is None:
            sep_id = self.tokenizer.eos_token_id
        if cls_id is None or sep_id is None:
            raise ModelLoadError(f"{self.model_path} has no [CLS]/[SEP] (or <s>/</s>) tokens")
        self._cls_id: int = int(cls_id)
        self._sep_id: int = int(sep_id)
        self._pad_id: int = int(self.tokenizer.pad_token_id or 0)

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
        self._onnx: OnnxRunner | None = None
        self._traced: TracedPass | None = None  # see `trace_for_queries`
        self._trace_tried = False
        self.backend = resolve_backend(settings.backend, self.device)
        if self.backend == "torch-bf16":
            from senseindex.indexer.encoder.bfloat16 import use_bfloat16_linear_layers

            use_bfloat16_linear_layers(self.model)
        if self.device != "cpu":
            self.model.to(self.device)
        if self.backend in ("onnx", "onnx-int8"):
            from senseindex.indexer.encoder.onnx import OnnxRunner

            self._onnx = OnnxRunner(self, self.backend)

    @property
    def cls_id(self) -> int:
        """Token id that opens every window ([CLS], or <s> for RoBERTa-style tokenizers)."""
        return self._cls_id

    @property
    def sep_id(self) -> int:
        """Token id that closes every window ([SEP], or </s>)."""
        return self._sep_id

    @property
    def pad_id(self) -> int:
        """Token id that pads shorter windows of a batch."""
        return self._pad_id

    @property
    def last_layer_only(self) -> bool:
        """Whether the word layer is the model's last hidden state (so one output serves both)."""
        return self._last_layer_only

    @property
    def transformer_dir(self) -> Path:
        """The folder the transformer's weights and tokenizer load from."""
        return self._transformer_dir

    @property
    def threads(self) -> int:
        """CPU threads the model runs with now (torch's intra-op threads, shared by the process)."""
        import torch  # loaded with the model already: this only binds the name

        return int(torch.get_num_threads())

    @property
    def onnx_runner(self) -> OnnxRunner | None:
        """What runs the model for the ``onnx`` and ``onnx-int8`` backends; None for torch ones."""
        return self._onnx

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
        for token, index in zip(tokens, word_of_each_piece(word_spans, offsets[0]).tolist(), strict=True):
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

    def forward(
        self, model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, all_layers: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One torch forward pass, with this encoder's layer strategy picking the word layer.

        Args:
            model: the transformer to run (this encoder's, or a copy loaded for an ONNX export).
            input_ids: ``(batch, length)`` int64, each window opened by `cls_id` and closed by
                `sep_id`, padded with `pad_id`.
            attention: ``(batch, length)`` int64 attention mask.
            all_layers: make the word layer every layer side by side, embeddings first (for
                `encode_word_layers`).

        Returns:
            ``(word layer, last hidden state)``: ``(batch, length, word width)`` and ``(batch, length,
            hidden size)`` float tensors.
        """
        import torch  # loaded with the model already: this only binds the name

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
            output; and ``(n_words,)`` bool as `EncodedBatch.word_aligned`. Turn them into the
            vectors of a strategy with `combine_layers`.
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
            all_layers: prepare for `encode_word_layers` (every layer kept).

        Returns:
            The batch for `run`.
        """
        if len(texts) != len(word_spans):
            raise ValueError("texts and word_spans differ in length")
        piece_ids, piece_offsets = self.tokenize(texts) if texts else ([], [])
        word_counts = [len(spans) for spans in word_spans]
        word_base = np.concatenate([[0], np.cumsum(word_counts)]).astype(np.int64)
        piece_word = [
            word_of_each_piece(spans, offsets)
            for spans, offsets in zip(word_spans, piece_offsets, strict=True)
        ]
        if self.settings.piece_pooling != "mean":
            piece_word = [keep_one_piece(pw, self.settings.piece_pooling) for pw in piece_word]
        windows = []
        for s, ids in enumerate(piece_ids):
            for window in self._windows(len(ids)):
                windows.append((window[1] - window[0] + 2, s, *window))
        windows.sort(key=lambda item: item[0])
        return PreparedBatch(len(texts), word_base, piece_ids, piece_word, windows, all_layers)

    def run(self, prepared: PreparedBatch) -> EncodedBatch:
        """Run the model over prepared sentences and pool word and sentence vectors.

        Args:
            prepared: from `prepare`.

        Returns:
            The vectors, in input order.
        """
        steps = self.run_in_steps(prepared)
        while True:
            try:
                next(steps)
            except StopIteration as finished:
                return cast(EncodedBatch, finished.value)

    @property
    def traced(self) -> bool:
        """Whether forward passes run through a traced copy of the model (`trace_for_queries`)."""
        return self._traced is not None

    def trace_for_queries(self) -> bool:
        """Run later forward passes through a traced copy of the model (see `traced`), once.

        For long-lived processes that answer queries: tracing takes about half a second and saves
        a few milliseconds per forward pass. Only torch backends on the CPU are traced; the traced
        pass is kept only if it gives the same vectors as the eager one.

        Returns:
            Whether forward passes now run traced.
        """
        if not self._trace_tried:
            self._trace_tried = True
            if self._onnx is None and self.device == "cpu":
                from senseindex.indexer.encoder.traced import trace_forward

                self._traced = trace_forward(self)
        return self._traced is not None

    def run_in_steps(
        self, prepared: PreparedBatch, step_tokens: Callable[[], int] | None = None
    ) -> Generator[int, None, EncodedBatch]:
        """`run`, one forward pass at a time: a caller may do other model work between the passes.

        Args:
            prepared: from `prepare`.
            step_tokens: asked before each pass, the most tokens (padding included) it may hold; a
                batch of windows is cut into passes that fit (at least one window each). None: the
                batches as `run` makes them.

        Returns:
            A generator that yields the tokens of each pass once it is done and returns the vectors,
            in input order.
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
        import torch  # loaded with the model already: this only binds the name

        word_dimension = self.hidden_size * (self.num_layers + 1) if all_layers else self.word_dimension
        word_sum = torch.zeros((n_words, word_dimension), dtype=torch.float32)
        word_hits = torch.zeros(n_words, dtype=torch.float32)
        sentence_sum = torch.zeros((n_sentences, self.sentence_dimension), dtype=torch.float32)
        if self.sentence_pooling == "max":
            sentence_sum.fill_(-torch.inf)
        sentence_hits = torch.zeros(n_sentences, dtype=torch.float32)
        for batch in cut_to_tokens(length_batches(items, self.settings.batch_size), step_tokens):
            with torch.inference_mode():  # not held across a yield: the caller's code runs between
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
                    columns_for_sentence: list[int] = columns.tolist()
                    if start == 0:  # the first window's [CLS] and [SEP] count, as in the model's pooling
                        columns_for_sentence += [0, length - 1]
                    sent_rows.append([row] * len(columns_for_sentence))
                    sent_cols.append(columns_for_sentence)
                    sent_targets.append([s] * len(columns_for_sentence))
                if self._onnx is not None and not all_layers:
                    word_layer, last_hidden = self._onnx.run(input_ids, attention)
                elif self._traced is not None and not all_layers:
                    word_layer, last_hidden = self._traced(
                        input_ids.to(self.device), attention.to(self.device)
                    )
                else:
                    word_layer, last_hidden = self.forward(
                        self.model, input_ids.to(self.device), attention.to(self.device), all_layers
                    )
                accumulate(
                    word_layer,
                    word_rows,
                    word_cols,
                    word_targets,
                    word_sum,
                    word_hits,
                    "mean",
                )
                accumulate(
                    last_hidden,
                    sent_rows,
                    sent_cols,
                    sent_targets,
                    sentence_sum,
                    sentence_hits,
                    self.sentence_pooling,
                )
            yield len(batch) * width

        aligned = (word_hits > 0).numpy()
        if all_layers:
            counts = word_hits.clamp(min=1).numpy()[:, None, None]
            word_vectors = word_sum.numpy().reshape(n_words, self.num_layers + 1, self.hidden_size) / counts
        else:
            word_vectors = normalise(word_sum.numpy())
        sentence_sums = sentence_sum.numpy()
        if self.sentence_pooling == "mean":
            weights = np.linalg.norm(sentence_sums, axis=1)
        else:
            weights = np.ones(n_sentences, dtype=np.float32)
        return EncodedBatch(
            sentence_vectors=normalise(sentence_sums),
            word_vectors=word_vectors,
            word_aligned=aligned,
            piece_counts=np.asarray([len(ids) for ids in piece_ids], dtype=np.int64),
            sentence_weights=weights.astype(np.float32),
        )


_CACHE: dict[EncoderSettings, Encoder] = {}
_STORED_ENCODER_SETTINGS = ("layers", "piece_pooling", "sentence_pooling", "max_length", "batch_size")


def set_model_threads(threads: int | None) -> None:
    """Set torch's intra-op threads, which every model of the process shares; None leaves them.

    ONNX Runtime sessions made afterwards take the same number (see `OnnxRunner`).

    Args:
        threads: at least 1, or None.
    """
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def load_encoder(settings: EncoderSettings) -> Encoder:
    """Load an encoder, reusing one already loaded in this process with the same settings.

    The device is checked before anything loads; a thread count is applied again when a loaded
    encoder is reused (torch's threads are process-wide: the last call sets them).

    Args:
        settings: the encoder settings.

    Returns:
        The encoder.

    Raises:
        SettingsError: a setting is invalid, or the device is not there.
    """
    if settings not in _CACHE:
        _CACHE[settings] = Encoder(settings)
    else:
        set_model_threads(settings.threads)
    return _CACHE[settings]


def load_index_encoder(
    stored: dict,
    model: str | None = None,
    backend: str = "auto",
    device: str = "auto",
    threads: int | None = None,
) -> Encoder:
    """Load the encoder an index was built with, from its stored settings.

    Args:
        stored: the index's settings (``model``, ``model_fingerprint``, layer and pooling settings).
        model: a model folder to use instead of the stored one (e.g. the index was moved to another
            machine); its weights must have the stored fingerprint.
        backend: what runs the model (any backend reads any index).
        device: where the model runs: ``auto``, ``cpu`` or ``cuda`` (see `EncoderSettings`).
        threads: the model's CPU threads (see `EncoderSettings`); None keeps the default.

    Returns:
        The encoder.

    Raises:
        SettingsError: a bad device or thread count (checked before the model is read).
        ModelMismatch: the model's weights are not the ones the index was built with.
        ModelLoadError: the model cannot be found or loaded.
        IndexCorrupted: a setting is missing.
    """
    EncoderSettings(backend=backend, device=device, threads=threads).validate()
    check_device(device, backend)
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
            device=device,
            threads=threads,
            **{key: stored[key] for key in _STORED_ENCODER_SETTINGS},
        )
    )
