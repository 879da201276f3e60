#!/usr/bin/env bash
# Install senseindex if needed, then lint, type-check, build the docs strictly and run the test suite.
#   bash scripts/test.sh            everything (what CI runs)
#   bash scripts/test.sh --quick    the same checks, but only the tests not marked slow
# Other arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/install.sh"
cd "$ROOT"
# Both tiers run on two workers; each test file stays on one worker, so a file's shared fixtures (a
# local Ray, a built corpus) are set up once.
pytest_arguments=(-n 2 --dist loadfile --durations 15)
if [ "${1:-}" = "--quick" ]; then
    shift
    pytest_arguments=(-m "not slow" -n 2 --dist loadfile)
fi
ruff check .
ruff format --check .
mypy
NO_MKDOCS_2_WARNING=1 mkdocs build --strict -q --site-dir "$(mktemp -d)"
python -m pytest "${pytest_arguments[@]}" "$@"
