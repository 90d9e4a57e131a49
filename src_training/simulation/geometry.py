"""The simulated scanner (:class:`ScanGeometry`, :data:`DEFAULT_GEOMETRY`): parallel beam over 180 degrees,
``n_views`` views, detector bins of ``bin_mm`` at the isocentre, FBP with a ramp filter windowed by one of
:data:`FILTERS`; plus what follows from it for one slice: the number of detector bins, the windowed ramp's
frequency response (:func:`_filter_response`) and the scan field of view (:func:`_fov_square`: how far a
slice is zero-padded so that the body lies inside the scan circle).

The detector pitch is a property of the scanner, not of the image grid: the number of bins follows from
the scan field of view (``ceil(FOV / bin_mm)``; the exact pitch used is ``FOV / n_bins``). Window
definitions as scikit-image's ``iradon``; ramp in the spatial domain after Kak & Slaney, "Principles of
Computerized Tomographic Imaging", eq. 3.61.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import SimulationError


#: Largest line integral (dimensionless) of material outside the scan circle that is left out instead of
#: padding the slice (0.05: expected counts of the few tangential rays concerned change by < 5 %).
DEFAULT_FOV_TOLERANCE = 0.05


#: FBP windows of the ramp filter (scikit-image ``iradon`` definitions).
FILTERS: tuple[str, ...] = ("hann", "ramp", "shepp-logan", "cosine", "hamming")


_PAD_MULTIPLE = 32  # padded squares are rounded up to this many pixels (shared geometry within a volume)


@dataclass(frozen=True)
class ScanGeometry:
    """The simulated scanner: parallel beam over 180 degrees.

    Attributes
    ----------
    n_views : int
        Views (projection angles) over 180 degrees (default 1000, about a clinical scanner's views per turn).
    bin_mm : float
        Detector bin pitch at the isocentre, mm (default 1.0). The number of bins is ``ceil(FOV / bin_mm)``.
    filter_name : str
        FBP window of the ramp filter, one of :data:`FILTERS` (default ``"hann"``).

    Raises
    ------
    SimulationError
        On construction with invalid values (``n_views < 2``, ``bin_mm <= 0``, unknown filter).
    """

    n_views: int = 1000
    bin_mm: float = 1.0
    filter_name: str = "hann"

    def __post_init__(self) -> None:
        if isinstance(self.n_views, bool) or not isinstance(self.n_views, (int, np.integer)) or self.n_views < 2:
            raise SimulationError(f"n_views = {self.n_views!r} must be an integer >= 2.")
        try:
            b = float(self.bin_mm)
        except (TypeError, ValueError) as exc:
            raise SimulationError(f"bin_mm = {self.bin_mm!r} is not a number of mm.") from exc
        if not (math.isfinite(b) and b > 0):
            raise SimulationError(f"bin_mm = {self.bin_mm!r}: the detector bin pitch must be > 0 mm.")
        name = str(self.filter_name).strip().lower()
        if name not in FILTERS:
            raise SimulationError(f"filter {self.filter_name!r}: choose one of {', '.join(FILTERS)}.")
        object.__setattr__(self, "n_views", int(self.n_views))
        object.__setattr__(self, "bin_mm", b)
        object.__setattr__(self, "filter_name", name)

    def describe(self) -> str:
        """One line for reports, e.g. ``parallel beam, 1000 views / 180 deg, 1.0 mm bins, FBP hann``."""
        return (f"parallel beam, {self.n_views} views / 180 deg, {self.bin_mm:g} mm detector bins at the "
                f"isocentre, FBP ramp x {self.filter_name} window")

    def to_dict(self) -> dict:
        """Plain dict (JSON-able)."""
        return asdict(self)


#: The project's clinical-like default geometry.
DEFAULT_GEOMETRY = ScanGeometry()


def _geometry(geometry: Optional[ScanGeometry], n_views, bin_mm, filter_name) -> ScanGeometry:
    g = geometry if geometry is not None else DEFAULT_GEOMETRY
    if not isinstance(g, ScanGeometry):
        raise SimulationError(f"geometry must be a ScanGeometry, got {type(g).__name__}.")
    if n_views is None and bin_mm is None and filter_name is None:
        return g
    return ScanGeometry(
        n_views=g.n_views if n_views is None else n_views,
        bin_mm=g.bin_mm if bin_mm is None else bin_mm,
        filter_name=g.filter_name if filter_name is None else filter_name,
    )


def _n_bins(side: int, spacing: float, bin_mm: float) -> int:
    return max(2, int(math.ceil(side * spacing / bin_mm - 1e-9)))


def _filter_response(n_bins: int, pitch: float, filter_name: str) -> tuple[torch.Tensor, int]:
    """Frequency response (rfft layout, float64) of the windowed ramp for ``n_bins`` bins of ``pitch`` mm,
    and the FFT length (zero padding to a power of two >= 2 n_bins). Spatial-domain ramp (Kak & Slaney,
    "Principles of Computerized Tomographic Imaging", eq. 3.61) so the DC term is right; windows as
    scikit-image's ``iradon``."""
    n = 1 << int(math.ceil(math.log2(max(64, 2 * n_bins))))
    k = torch.arange(n, dtype=torch.float64)
    k = torch.where(k < n // 2, k, k - n)
    h = torch.zeros(n, dtype=torch.float64)
    h[0] = 1.0 / (4.0 * pitch**2)
    odd = (k.remainder(2) != 0)
    h[odd] = -1.0 / (math.pi * k[odd] * pitch) ** 2
    resp = torch.fft.rfft(h).real * pitch  # (n//2+1,), the convolution integral's sample spacing included
    f = torch.fft.rfftfreq(n, dtype=torch.float64)  # cycles per bin, 0 .. 0.5
    if filter_name == "hann":
        resp = resp * (0.5 + 0.5 * torch.cos(2 * math.pi * f))
    elif filter_name == "hamming":
        resp = resp * (0.54 + 0.46 * torch.cos(2 * math.pi * f))
    elif filter_name == "cosine":
        resp = resp * torch.cos(math.pi * f)
    elif filter_name == "shepp-logan":
        w = torch.ones_like(f)
        nz = f > 0
        w[nz] = torch.sin(math.pi * f[nz]) / (math.pi * f[nz])
        resp = resp * w
    return resp, n


def _fov_square(mu2d: np.ndarray, spacing: float, fov_tolerance: float) -> tuple[int, int, int]:
    """Side ``S`` of the (padded) square and offsets ``(oy, ox)`` of the slice in it.

    Start with the smallest centred square. If the attenuation outside its inscribed circle has a largest
    line integral (estimated with scikit-image's radon at 2-pixel resolution every 2 degrees) above
    ``fov_tolerance``, grow the square until every pixel with mu > 0 lies inside the circle, then round the
    side up to a multiple of 32 pixels."""
    ny, nx = mu2d.shape
    side = max(ny, nx)
    oy, ox = (side - ny) // 2, (side - nx) // 2
    c = side / 2.0
    yy, xx = np.ogrid[:ny, :nx]
    out_circle = (yy + oy + 0.5 - c) ** 2 + (xx + ox + 0.5 - c) ** 2 > c * c
    mu_out = np.where(out_circle, mu2d, 0.0)
    if not np.any(mu_out > 0):
        return side, oy, ox
    if fov_tolerance > 0 and min(ny, nx) >= 4:
        from skimage.transform import radon

        small = mu_out[: ny - ny % 2, : nx - nx % 2]
        small = small.reshape(small.shape[0] // 2, 2, small.shape[1] // 2, 2).mean(axis=(1, 3))
        est = radon(small, theta=np.arange(0.0, 180.0, 2.0), circle=False, preserve_range=True)
        if float(est.max()) * 2.0 * spacing <= fov_tolerance:
            return side, oy, ox
    iy, ix = np.nonzero(mu2d > 0)
    side = int(math.ceil(side / _PAD_MULTIPLE) * _PAD_MULTIPLE)
    while True:  # grow until the farthest pixel corner of the body lies inside the inscribed circle
        oy, ox = (side - ny) // 2, (side - nx) // 2
        c = side / 2.0
        r2 = float(np.max((np.abs(iy + oy + 0.5 - c) + 0.5) ** 2 + (np.abs(ix + ox + 0.5 - c) + 0.5) ** 2))
        if r2 <= c * c:
            return side, oy, ox
        side += _PAD_MULTIPLE
