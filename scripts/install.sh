#!/usr/bin/env bash
# Install napari-lidnet and everything it needs into a virtual environment (default .venv).
# Works on a fresh machine with Python 3.11: torch/torchvision are pinned (see pyproject.toml);
# pyradiomics 3.0.1 has no wheel for Python >= 3.10 and must be built from its sdist WITHOUT build
# isolation, after numpy/setuptools/wheel are present (../shared/reference/install-notes.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade "pip>=23" setuptools wheel
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e ".[gui,test]"
if ! "$VENV/bin/python" -c "import radiomics.featureextractor" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q numpy setuptools wheel versioneer pykwalify pywavelets six SimpleITK
  "$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps pyradiomics==3.0.1
fi
# DICOM pixel decoders (pyproject dependencies): JPEG baseline, JPEG-LS and JPEG 2000 must decode.
"$VENV/bin/python" -c "from pydicom.pixels import get_decoder; from pydicom.uid import JPEGBaseline8Bit as a, JPEGLSLossless as b, JPEG2000Lossless as c; missing = [u.name for u in (a, b, c) if not get_decoder(u).is_available]; assert not missing, f'no DICOM decoder for {missing}: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg'"
"$VENV/bin/python" -c "import torch, torchvision, SimpleITK, pydicom, radiomics.featureextractor; print('napari-lidnet environment ready: torch', torch.__version__)"
