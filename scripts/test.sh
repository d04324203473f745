#!/usr/bin/env bash
# Set up and run the test suite (napari tests run under Xvfb via pytest-xvfb), in the environment
# setup.sh installed into (scripts/_env.sh: the active one, else .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/_env.sh
raysam_python
"$PYTHON" -m ruff check src tests
"$PYTHON" -m npe2 validate napari-raysam
exec "$PYTHON" -m pytest -q "$@"
