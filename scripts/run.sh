#!/usr/bin/env bash
# Set up, then run the whole journey offline: `napari-raysam demo` (a few minutes on 2 CPU cores).
# Extra arguments go to the demo, e.g. `bash scripts/run.sh --gui` opens napari instead.
# It runs in the environment setup.sh installed into (scripts/_env.sh: the active one, else .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/_env.sh
raysam_python
exec "$PYTHON" -m napari_raysam.cli demo "$@"  # = `napari-raysam demo`, PATH or not
