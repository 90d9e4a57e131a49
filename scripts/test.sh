#!/usr/bin/env bash
# Run napari-lidnet's test suite: installs the environment (scripts/install.sh), the virtual X server and
# Mesa libraries that napari's canvas needs headless (Debian packages; offscreen Qt has no OpenGL), checks the
# module structure (scripts/check_structure.py), then pytest under xvfb-run. Extra arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PKGS="xvfb xauth libgl1-mesa-dri libegl1 libglx-mesa0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
  libdbus-1-3"
# shellcheck disable=SC2086
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $PKGS >/dev/null
fi
# The module structure (issue #14): no module over 700 lines, no import cycle (function-local imports
# included), at most 15 function-local imports of the project's own modules. Fails before any test runs.
.venv/bin/python scripts/check_structure.py
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest "$@"
