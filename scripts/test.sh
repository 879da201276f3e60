#!/usr/bin/env bash
# Install senseindex if needed, then lint, type-check, build the docs strictly and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/install.sh"
cd "$ROOT"
ruff check .
ruff format --check .
mypy
NO_MKDOCS_2_WARNING=1 mkdocs build --strict -q --site-dir "$(mktemp -d)"
python -m pytest "$@"
