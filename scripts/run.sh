#!/usr/bin/env bash
# Set up and open napari with the synthetic sample and the napari-raysam docks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m napari_raysam.launch "$@"
