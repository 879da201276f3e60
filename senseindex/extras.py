"""Optional dependencies: import one, or explain in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from senseindex.errors import MissingExtra

#: extra -> what it is for, as the error message says it
EXTRAS = {
    "serve": "the HTTP service (senseindex serve)",
    "plot": "maps of a word's senses (--plot)",
    "onnx": "the ONNX Runtime backends (--backend onnx, onnx-int8)",
    "ray": "a build with several workers (--workers)",
}


def import_extra(module: str, extra: str) -> ModuleType:
    """Import an optional dependency.

    Args:
        module: the module to import, e.g. ``"uvicorn"``.
        extra: the name of the extra that installs it (a key of `EXTRAS`).

    Returns:
        The imported module.

    Raises:
        MissingExtra: the module is not installed; the message names the extra to install.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name or module
        raise MissingExtra(
            f"{EXTRAS[extra]} needs the '{extra}' extra ({missing} is not installed): "
            f"pip install 'senseindex[{extra}]'"
        ) from None
