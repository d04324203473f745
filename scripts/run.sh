#!/usr/bin/env bash
# Set up, then run the whole journey offline: `napari-raysam demo` (a few minutes on 2 CPU cores).
# Extra arguments go to the demo, e.g. `bash scripts/run.sh --gui` opens napari instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m napari_raysam.cli demo "$@"  # = `napari-raysam demo`, PATH or not
