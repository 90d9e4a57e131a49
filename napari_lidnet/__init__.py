"""napari-lidnet: lesion-inspired low-dose CT denoising (LIDnet, Chen et al., ACM MM 2021) in napari.

This package is the thin napari layer over the headless core :mod:`src_training`: a reader (DICOM series /
file, NIfTI, NRRD, MetaImage), writers (derived DICOM series, NIfTI, boxes CSV), sample data (chest CT
``lung2`` with lesion boxes and its simulated low-dose version) and dock widgets (CT window, simulate low
dose, denoise, detect lesions, compare, radiomics, train). Contributions are declared in ``napari.yaml``
(npe2); nothing heavy is imported here.

Crash guard (Linux): ``import torchvision`` imports ``torch._dynamo``, which imports ``triton`` when it is
installed (CUDA builds of torch bring it). ``triton``'s bundled LLVM crashes the process (segfault in its
static initialisers) when the OpenGL driver has already mapped the system ``libLLVM`` into it, which is the
case for napari drawn with Mesa (llvmpipe software rendering on VMs, CI, remote desktops; radeonsi on AMD
GPUs). The napari process only runs inference (training runs in a separate ``lidnet train`` process), so
importing this package marks ``triton`` as unavailable unless it is already loaded. Set
``LIDNET_ALLOW_TRITON=1`` to keep it.

This is the plugin's only triton guard: every entry point (npe2 imports ``napari_lidnet._reader``,
``napari_lidnet._widgets.*``..., ``lidnet gui`` imports ``napari_lidnet._launch``) imports this package first,
before any of its modules imports torch. Eager inference does not need triton (``import triton`` then raises
ImportError, which torch handles); the training process (``python -m src_training``) is unaffected.
"""

from __future__ import annotations

import os
import sys


def _block_triton_in_gui_process() -> bool:
    """Make ``import triton`` fail in this process (see module docstring). Returns True when blocked."""
    if os.environ.get("LIDNET_ALLOW_TRITON", "").strip() in ("1", "true", "yes"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    if "triton" in sys.modules or "torch._dynamo" in sys.modules:
        return False  # already loaded (before any GL driver): nothing to protect
    sys.modules["triton"] = None  # type: ignore[assignment]  # -> ImportError -> torch: "no triton"
    return True


TRITON_BLOCKED = _block_triton_in_gui_process()

try:
    from importlib.metadata import PackageNotFoundError, version

    try:
        __version__ = version("napari-lidnet")
    except PackageNotFoundError:  # running from a source checkout
        __version__ = "0.1.0"
except ImportError:  # pragma: no cover
    __version__ = "0.1.0"

__all__ = ["TRITON_BLOCKED", "__version__"]
