#!/usr/bin/env bash
# Create .venv and install senseindex into it (idempotent). Sourced by demo.sh and test.sh.
# torch is installed first, on its own: the pinned CPU wheel lies on local disk, and letting the resolver
# pick torch for sentence-transformers would pull a multi-GB CUDA build instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.senseindex-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    # (pip's notes about this machine's missing local index folders are noise, filtered out)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0 \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev,serve,plot,onnx,ray]" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    touch "$stamp"
fi
export HF_HUB_OFFLINE=1
export PATH="$VENV/bin:$PATH"
