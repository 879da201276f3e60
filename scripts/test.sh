#!/usr/bin/env bash
# Install senseindex if needed, then lint, type-check, build the docs strictly and run the test suite.
#   bash scripts/test.sh            everything (what CI runs)
#   bash scripts/test.sh --quick    the same checks, but only the tests not marked slow, on two workers
# Other arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/install.sh"
cd "$ROOT"
pytest_arguments=()
if [ "${1:-}" = "--quick" ]; then
    shift
    pytest_arguments=(-m "not slow" -n 2)
fi
ruff check .
ruff format --check .
mypy
NO_MKDOCS_2_WARNING=1 mkdocs build --strict -q --site-dir "$(mktemp -d)"
python -m pytest "${pytest_arguments[@]}" "$@"
