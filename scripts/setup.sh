#!/usr/bin/env bash
# Install what a fresh Debian machine lacks: Xvfb + Mesa for napari's canvas, then the package,
# into the active virtual environment, else into .venv (created here; scripts/_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_env.sh
raysam_python  # Python >= 3.11 first: says how to get it and stops otherwise

SYSTEM_PACKAGES="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
libxcb-shape0 libdbus-1-3 libfontconfig1"
missing=""
for pkg in $SYSTEM_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

# torch is pinned here (not in pyproject) so pip takes the build this machine has on disk.
# No -q: the first install downloads several GB, pip shows its progress.
echo "Installing napari-raysam and its dependencies with $PYTHON" >&2
"$PYTHON" -m pip install --progress-bar on torch==2.14.1 torchvision==0.29.1 -e ".[test]"

# Upstream MobileSAM for the vit_t golden-output test only (tests/test_tiny_vit.py runs it in a
# subprocess with this folder on PYTHONPATH). Kept out of the environment: installed there it
# would replace segment_anything as micro-sam's SAM code in every process. timm (its one
# dependency) comes with micro-sam.
"$PYTHON" -m pip install --no-deps --upgrade --target .upstream "mobilesam-mirror==1.0.0"
