#!/usr/bin/env bash
# Install senseindex if needed, then lint and run the test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/install.sh"
cd "$ROOT"
ruff check .
ruff format --check .
python -m pytest "$@"
