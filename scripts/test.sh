#!/usr/bin/env bash
# Set up and run the test suite (napari tests run under Xvfb via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check src tests
python3 -m npe2 validate napari-raysam
python3 -m pytest -q "$@"
