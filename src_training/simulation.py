"""Low-dose CT simulation from image-domain (reconstructed) CT slices, with a stated scanner geometry.

The "simple low-dose simulation" of the field: forward-project the attenuation image to line integrals,
draw Poisson counts at the incident flux of the low-dose scan, take the log, reconstruct by filtered
back-projection (Zeng et al., "A simple low-dose x-ray CT simulation from high-dose scan", IEEE Trans. Nucl.
Sci. 62(5):2226-2233, 2015, is the usual general reference; the count floor follows LoDoPaB-CT, Leuschner et
al., Sci. Data 8:109, 2021). LIDnet (Chen et al., ACM MM 2021) adds noise "of level N0" with the method of its
reference [14]; its bibliography is alphabetical and [14]'s first author sorts between Duan and Girshick, so
[14] is NOT Zeng et al. and is unidentified here: this module is the project's own implementation of the
standard method, not a copy of the paper's.

Geometry (:class:`ScanGeometry`, stated in every report): parallel beam over 180 degrees, ``n_views`` views
(default 1000), detector bins of ``bin_mm`` at the isocentre (default 1.0 mm, the order of a clinical
scanner's sampling at the isocentre), FBP with a ramp filter windowed by ``filter_name`` (default ``"hann"``,
a smooth clinical-like kernel; ``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"`` selectable; same
window definitions as scikit-image's ``iradon``). The detector pitch is a property of the scanner, not of
the image grid, so the same N0 gives nearly the same noise for any reconstruction pixel size; the number of
bins follows from the scan field of view (``ceil(FOV / bin_mm)``; the exact pitch used is
``FOV / n_bins``). Simulate at the image's NATIVE pixel size, before any resampling.

Model, per slice (float64 where it matters, output float32 HU)::

    HU    <- max(HU, -1000)                          # air; padding values -1024/-2048/-3024 become air
    mu     = MU_WATER_PER_MM * (1 + HU / 1000)       # /mm, MU_WATER_PER_MM = 0.0192 /mm (~70 keV)
    mu_d   = mu area-resampled to the detector grid  # pixel = bin pitch d: each bin integrates a d-wide strip
    p      = sum over the ray of mu_d * d            # line integrals (dimensionless), n_views x n_bins
    lambda = N0 * exp(-p)                            # expected counts per detector bin and view
    I      = Poisson(lambda) + Normal(0, sigma_e^2)  # sigma_e = electronic_noise_std (counts), default 0
    I      = max(I, COUNT_FLOOR)                     # COUNT_FLOOR = 0.1 count (LoDoPaB sets 0 counts to 0.1)
    p~     = -log(I / N0)
    mode "noise_only": mu~ = mu + FBP(p~ - p)        # FBP onto the native pixel centres (FBP is linear)
    mode "full":       mu~ = FBP(p~)
    HU~    = 1000 * (mu~ / MU_WATER_PER_MM - 1)

N0 keeps the paper's meaning: photons per ray, i.e. per detector bin and view. For a ray through an object
of line integral p, Var(p~) ~ exp(p) / N0, and the reconstructed noise at the centre of a uniform object is
(:func:`predicted_noise_sigma_hu`, checked against simulation in the tests)::

    sigma_mu^2 = (pi^2 / n_views) * exp(p) / N0 * sum_k g_k^2 * (2/3 + rho/3)

with ``g`` the discrete filter kernel (window included, in 1/mm) and ``rho`` the correlation of two
neighbouring filtered bins (the linear interpolation of the back-projection).

Measured on the bundled real chest slices (soft-tissue sigma of the added noise, :func:`soft_tissue_noise_sigma`;
``docs/reproduction.md``): on the middle slices the default geometry gives 84-108 HU at N0 = 1000 and 43-56 HU
at N0 = 3000, the range the project targets for the paper's doses (60-120 / 35-70 HU); that is noisier than
clinical low-dose chest CT (roughly 20-60 HU; routine dose 10-25 HU), as the paper's N0 = 1000 is an
ultra-low dose. Thicker slices (shoulders, upper abdomen) get more: N0 is fixed per slice, there is no
tube-current modulation. With the pure ramp filter the same N0 gives ~2.6x more.

Why ``mode="noise_only"`` is the default: the input is already a reconstructed image. Re-projecting and
re-reconstructing it (``"full"``) adds the simulator's own blur (the 1 mm detector, the window) and edge
error even at infinite dose, so a denoiser trained on (full-mode LDCT, NDCT) pairs partly learns to undo the
simulator. ``noise_only`` keeps the NDCT exactly and adds only the (object-dependent, correlated, streaky)
dose noise and the log bias; ``N0=inf`` returns the input exactly. The NDCT's own noise is kept (image-domain
data do not carry the original scan's I0, which Zeng et al.'s exact dose-fraction formula would need).

Scan field of view: the projector assumes zero attenuation outside the circle inscribed in the square
(non-square slices are zero-padded to a centred square). Material outside that circle whose largest line
integral is at most ``fov_tolerance`` (default 0.05: air, blankets) is left out; anything more (table, arms)
makes the slice be zero-padded to the smallest square whose inscribed circle holds every pixel above
-1000 HU (then rounded up to a multiple of 32 pixels, so that most slices of a volume share one geometry
and are projected together), simulated there and cropped back. The output always has the input's shape.

Implementation: batched PyTorch (``torch.nn.functional.grid_sample`` for the ray sums and for the
back-projection, ``torch.fft`` for the filter), several slices per pass, on the CPU; results do not depend
on how slices are batched (checked in the tests to float32 rounding).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import atomic_write_bytes
from .errors import SimulationError

__all__ = [
    "MU_WATER_PER_MM",
    "HU_MIN",
    "COUNT_FLOOR",
    "DEFAULT_MODE",
    "SIMULATOR_VERSION",
    "FILTERS",
    "ScanGeometry",
    "DEFAULT_GEOMETRY",
    "slice_rng",
    "hu_to_mu",
    "mu_to_hu",
    "simulate_ldct_slice",
    "simulate_ldct",
    "cached_simulate_ldct",
    "soft_tissue_mask",
    "soft_tissue_noise_sigma",
    "predicted_noise_sigma_hu",
    "n0_for_noise_sigma",
]

log = logging.getLogger(__name__)

#: Linear attenuation of water at ~70 keV effective energy, per mm (0.192 /cm).
MU_WATER_PER_MM = 0.0192
#: HU below this are clipped before simulation (air; nothing attenuates less than vacuum).
HU_MIN = -1000.0
#: Counts below this (after electronic noise) are set to it before the log (LoDoPaB-CT uses 0.1).
COUNT_FLOOR = 0.1
#: Default simulation mode (see module docstring for the justification).
DEFAULT_MODE = "noise_only"
#: Bumped whenever a change alters simulated values; part of the cache key.
SIMULATOR_VERSION = "lidnet-ldct-sim/2"
#: Largest line integral (dimensionless) of material outside the scan circle that is left out instead of
#: padding the slice (0.05: expected counts of the few tangential rays concerned change by < 5 %).
DEFAULT_FOV_TOLERANCE = 0.05
#: FBP windows of the ramp filter (scikit-image ``iradon`` definitions).
FILTERS: tuple[str, ...] = ("hann", "ramp", "shepp-logan", "cosine", "hamming")

Mode = Literal["noise_only", "full"]
_MODES = ("noise_only", "full")
_PAD_MULTIPLE = 32  # padded squares are rounded up to this many pixels (shared geometry within a volume)
_CHUNK_ELEMENTS = 4_000_000  # grid_sample output elements per call (small chunks stay in the CPU caches)


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


# ----------------------------------------------------------------------------------------------- helpers
def slice_rng(seed: int, slice_index: int) -> np.random.Generator:
    """The random generator :func:`simulate_ldct` uses for slice ``slice_index`` of a volume.

    ``np.random.default_rng(np.random.SeedSequence([seed, slice_index]))``: any slice can be re-simulated on
    its own (pass this to :func:`simulate_ldct_slice` as ``seed``) and equals the volume's slice.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(slice_index)]))


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """HU -> linear attenuation (/mm, float64): ``MU_WATER_PER_MM * (1 + max(HU, -1000) / 1000)``."""
    return MU_WATER_PER_MM * (1.0 + np.maximum(np.asarray(hu, dtype=np.float64), HU_MIN) / 1000.0)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    """Linear attenuation (/mm) -> HU (float64): ``1000 * (mu / MU_WATER_PER_MM - 1)``."""
    return 1000.0 * (np.asarray(mu, dtype=np.float64) / MU_WATER_PER_MM - 1.0)


def _check_spacing(pixel_spacing_mm) -> float:
    try:
        vals = np.atleast_1d(np.asarray(pixel_spacing_mm, dtype=np.float64)).ravel()
    except (TypeError, ValueError) as exc:
        raise SimulationError(
            f"Pixel spacing {pixel_spacing_mm!r} is not a number; give the in-plane pixel size in mm."
        ) from exc
    if vals.size == 3:  # (z, y, x) spacing of a volume: use the in-plane part
        vals = vals[1:]
    if vals.size not in (1, 2):
        raise SimulationError(f"Pixel spacing {pixel_spacing_mm!r}: give one number, (y, x) or (z, y, x) in mm.")
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise SimulationError(f"Pixel spacing {pixel_spacing_mm!r} mm must be positive and finite; check the CT header.")
    if vals.size == 2 and abs(vals[0] - vals[1]) > 0.01 * max(vals):
        raise SimulationError(
            f"Pixels are not square ({vals[0]:g} x {vals[1]:g} mm); the parallel-beam simulation needs "
            "square pixels: resample the slice in-plane first."
        )
    return float(vals.mean())


def _check_n0(n0) -> float:
    if n0 is None:
        return math.inf
    try:
        val = float(n0)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"N0 {n0!r} is not a number; give the incident photon count, e.g. 1000.") from exc
    if math.isnan(val) or val <= 0:
        raise SimulationError(
            f"N0 = {n0!r}: the incident photon count per detector bin and view must be > 0 (e.g. 1000 for "
            "low dose, 1e5 near full dose), or inf/None for no dose noise."
        )
    return val


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


def _check_common(electronic_noise_std, mode, fov_tolerance) -> tuple:
    try:
        sigma = float(electronic_noise_std)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"electronic_noise_std {electronic_noise_std!r} is not a number.") from exc
    if not math.isfinite(sigma) or sigma < 0:
        raise SimulationError(f"electronic_noise_std = {electronic_noise_std!r} counts must be >= 0 and finite (0 = none).")
    if mode not in _MODES:
        raise SimulationError(f"mode = {mode!r}: choose 'noise_only' (default) or 'full'.")
    try:
        tol = float(fov_tolerance)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"fov_tolerance {fov_tolerance!r} is not a number.") from exc
    if not math.isfinite(tol) or tol < 0:
        raise SimulationError(f"fov_tolerance = {fov_tolerance!r} must be >= 0 (0 = always pad).")
    return sigma, mode, tol


def _check_array(hu, ndims: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.dtype.kind not in "biuf":
        raise SimulationError(f"{what} has dtype {arr.dtype}; expected a numeric HU array.")
    if arr.ndim not in ndims:
        want = " or ".join({2: "(y, x)", 3: "(z, y, x)"}[d] for d in ndims)
        raise SimulationError(f"{what} has shape {arr.shape}; expected {want} in HU.")
    if arr.size == 0 or min(arr.shape[-2:]) < 2:
        raise SimulationError(f"{what} has shape {arr.shape}; slices must be at least 2 x 2 pixels.")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            raise SimulationError(
                f"{what} contains {int(bad.sum())} NaN/Inf value(s); fix or mask them (e.g. replace with "
                "-1000 HU) before simulating low dose."
            )
    return arr


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


def _as_generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise SimulationError(f"seed = {seed!r}: give None, a non-negative integer or a numpy Generator.")


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


def _theta(n_views: int) -> torch.Tensor:
    return torch.arange(n_views, dtype=torch.float64) * (math.pi / n_views)


def _project(mu_d: torch.Tensor, pitch: float, theta: torch.Tensor) -> torch.Tensor:
    """Line integrals of ``mu_d`` (B, M, M) /mm on an M x M grid of ``pitch`` mm: (B, V, M) float64, one bin
    per grid column, rays sampled every ``pitch`` mm (bilinear), parallel beam. Point of bin t on ray s at
    angle th: ``t (cos th, sin th) + s (-sin th, cos th)`` in (x = column, y = row) mm from the centre.
    Sampling grids are built in float32 in normalised coordinates, a few views per ``grid_sample`` call (the
    slices of the batch are channels that share each grid)."""
    b, m, _ = mu_d.shape
    # bin / ray-sample centres (i + 0.5) * pitch - M * pitch / 2, in units of the half width M * pitch / 2
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) * (2.0 / m) - 1.0).to(torch.float32)
    img = mu_d.to(torch.float32)[None]  # (1, B, M, M)
    cos, sin = torch.cos(theta).to(torch.float32), torch.sin(theta).to(torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * m * m))
    out = torch.empty(b, len(theta), m, dtype=torch.float64)
    tt = u[None, None, :]
    ss = u[None, :, None]
    for i in range(0, len(theta), chunk):
        c = cos[i:i + chunk, None, None]
        sn = sin[i:i + chunk, None, None]
        grid = torch.stack([tt * c - ss * sn, tt * sn + ss * c], dim=-1).reshape(1, -1, m, 2)
        v = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[:, i:i + chunk] = v.reshape(b, -1, m, m).sum(dim=2).to(torch.float64) * pitch
    return out


def _backproject(q: torch.Tensor, pitch: float, theta: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """FBP back-projection of filtered projections ``q`` (B, V, M) onto the points ``(ys, xs)`` (mm from the
    centre; 1-D row and column coordinates): (B, len(ys), len(xs)) float64, ``pi / V * sum_v q_v(t)`` with
    linear interpolation in t (``grid_sample`` on the sinogram: exact rows, bilinear = linear in t)."""
    b, nv, m = q.shape
    half = m * pitch / 2.0
    ny, nx = len(ys), len(xs)
    img = q.to(torch.float32)[None]  # (1, B, V, M)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * ny * nx))
    acc = torch.zeros(b, ny * nx, dtype=torch.float64)
    X = (xs / half).to(torch.float32)[None, None, :]
    Y = (ys / half).to(torch.float32)[None, :, None]
    cos, sin = torch.cos(theta).to(torch.float32), torch.sin(theta).to(torch.float32)
    rows = ((2.0 * torch.arange(nv, dtype=torch.float64) + 1.0) / nv - 1.0).to(torch.float32)
    for i in range(0, nv, chunk):
        c = cos[i:i + chunk, None, None]
        gx = X * c + Y * sin[i:i + chunk, None, None]  # (c, ny, nx) = t / half
        gy = rows[i:i + chunk, None, None].expand_as(gx)
        grid = torch.stack([gx, gy], dim=-1).reshape(1, gx.shape[0], ny * nx, 2)
        v = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (1, B, c, ny*nx)
        acc += v[0].sum(dim=1).to(torch.float64)
    return (acc * (math.pi / nv)).reshape(b, ny, nx)


# ----------------------------------------------------------------------------------------------- core
def _simulate_group(hu: np.ndarray, spacing: float, n0: float, rngs: Sequence[np.random.Generator],
                    geom: ScanGeometry, sigma_e: float, mode: str, side: int, oy: int, ox: int) -> np.ndarray:
    """Slices ``hu`` (B, ny, nx) sharing one padded square (side, oy, ox): low-dose HU (B, ny, nx) float32."""
    b, ny, nx = hu.shape
    mu_in = hu_to_mu(hu)
    mu = np.zeros((b, side, side), dtype=np.float64)
    mu[:, oy:oy + ny, ox:ox + nx] = mu_in
    c = side / 2.0
    yy, xx = np.ogrid[:side, :side]
    mu[:, (yy + 0.5 - c) ** 2 + (xx + 0.5 - c) ** 2 > c * c] = 0.0  # outside the scan circle (within tolerance)
    m = _n_bins(side, spacing, geom.bin_mm)
    pitch = side * spacing / m  # exact bin pitch: the detector spans the padded square's width
    mu_t = torch.from_numpy(mu)[:, None]
    mu_d = F.interpolate(mu_t, size=(m, m), mode="bilinear", align_corners=False,
                         antialias=m < side)[:, 0].to(torch.float64)
    theta = _theta(geom.n_views)
    p = _project(mu_d, pitch, theta).clamp_min_(0.0).numpy()  # (B, V, M)
    if math.isinf(n0):
        p_noisy = p
    else:
        p_noisy = np.empty_like(p)
        for i, rng in enumerate(rngs):
            counts = rng.poisson(n0 * np.exp(-p[i])).astype(np.float64)
            if sigma_e > 0:
                counts += rng.normal(0.0, sigma_e, size=counts.shape)
            np.maximum(counts, COUNT_FLOOR, out=counts)
            p_noisy[i] = -np.log(counts / n0)
    sino = torch.from_numpy(p_noisy - p if mode == "noise_only" else p_noisy)
    resp, n_fft = _filter_response(m, pitch, geom.filter_name)
    q = torch.fft.irfft(torch.fft.rfft(sino, n=n_fft, dim=-1) * resp, n=n_fft, dim=-1)[..., :m]
    ys = (torch.arange(ny, dtype=torch.float64) + oy + 0.5) * spacing - side * spacing / 2.0
    xs = (torch.arange(nx, dtype=torch.float64) + ox + 0.5) * spacing - side * spacing / 2.0
    rec = _backproject(q, pitch, theta, ys, xs).numpy()
    hu64 = hu.astype(np.float64)
    if mode == "noise_only":
        out = hu64 + (1000.0 / MU_WATER_PER_MM) * rec
    else:
        inside = ((yy[oy:oy + ny] + 0.5 - c) ** 2 + (xx[:, ox:ox + nx] + 0.5 - c) ** 2 <= c * c)
        out = np.where(inside[None], mu_to_hu(rec), np.maximum(hu64, HU_MIN))
    return out.astype(np.float32)


def _simulate_volume(vol, spacing, n0, rngs, geom, sigma_e, mode, tol, batch_slices, progress) -> np.ndarray:
    nz = vol.shape[0]
    out = np.empty(vol.shape, dtype=np.float32)
    if mode == "noise_only" and math.isinf(n0):
        out[...] = vol
        if progress is not None:
            progress(nz, nz)
        return out
    groups: dict[tuple[int, int, int], list[int]] = {}
    for z in range(nz):
        groups.setdefault(_fov_square(hu_to_mu(vol[z]), spacing, tol), []).append(z)
    done = 0
    for (side, oy, ox), zs in groups.items():
        for i in range(0, len(zs), batch_slices):
            part = zs[i:i + batch_slices]
            out[part] = _simulate_group(vol[part], spacing, n0, [rngs[z] for z in part], geom, sigma_e, mode,
                                        side, oy, ox)
            done += len(part)
            if progress is not None:
                progress(done, nz)
    return out


def simulate_ldct_slice(
    hu2d: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int | np.random.Generator | None = None,
    geometry: Optional[ScanGeometry] = None,
    n_views: int | None = None,
    bin_mm: float | None = None,
    filter_name: str | None = None,
    electronic_noise_std: float = 0.0,
    mode: Mode = DEFAULT_MODE,
    fov_tolerance: float = DEFAULT_FOV_TOLERANCE,
) -> np.ndarray:
    """Simulate a low-dose CT slice from a normal-dose slice (see the module docstring for the model).

    Parameters
    ----------
    hu2d : ndarray (y, x)
        Normal-dose slice in HU at its native pixel size, any real dtype, finite. Values below -1000 HU are
        clipped to -1000 (air) for the simulation. Need not be square.
    pixel_spacing_mm : float or (dy, dx) or (dz, dy, dx)
        In-plane pixel size in mm (> 0, square pixels: dy and dx within 1 %).
    n0 : float or None
        Incident photons per ray (detector bin and view). Lower = more noise; LIDnet uses 3000 and 1000.
        ``None`` or ``inf``: no Poisson noise.
    seed : None, int >= 0 or numpy.random.Generator
        Randomness of the counts; an int gives reproducible output. Use :func:`slice_rng` to reproduce
        slice ``i`` of :func:`simulate_ldct`.
    geometry : ScanGeometry, optional
        Scanner geometry (default :data:`DEFAULT_GEOMETRY`: 1000 views, 1.0 mm bins, Hann window).
    n_views, bin_mm, filter_name : optional
        Override single fields of ``geometry``.
    electronic_noise_std : float
        Standard deviation of additive Gaussian electronic noise, in counts (Zeng et al.: sigma_e^2 ~ 10).
        Ignored when ``n0`` is infinite.
    mode : {"noise_only", "full"}
        ``"noise_only"`` (default): NDCT + FBP(p~ - p); N0=inf returns the input exactly. ``"full"``: FBP(p~).
    fov_tolerance : float
        Largest line integral of material outside the scan circle that may be left out of the projections
        instead of padding (default 0.05; 0 = pad whenever anything above -1000 HU lies outside the circle).

    Returns
    -------
    ndarray float32 (y, x)
        Low-dose slice in HU, same shape as ``hu2d``. Pixels outside the scan circle: the added noise there
        comes from the back-projection as well in ``noise_only`` mode; in ``full`` mode they are the input
        clipped to >= -1000 HU.

    Raises
    ------
    SimulationError
        NaN/Inf in the input, not 2-D, non-positive/NaN N0, non-positive spacing, bad geometry, negative
        electronic noise, unknown mode, bad seed.
    """
    arr = _check_array(hu2d, (2,), "The slice")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    geom = _geometry(geometry, n_views, bin_mm, filter_name)
    sigma, mode, tol = _check_common(electronic_noise_std, mode, fov_tolerance)
    rng = _as_generator(seed)
    return _simulate_volume(arr[None].astype(np.float32), spacing, n0v, [rng], geom, sigma, mode, tol, 1, None)[0]


def simulate_ldct(
    hu: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int = 0,
    geometry: Optional[ScanGeometry] = None,
    n_views: int | None = None,
    bin_mm: float | None = None,
    filter_name: str | None = None,
    electronic_noise_std: float = 0.0,
    mode: Mode = DEFAULT_MODE,
    fov_tolerance: float = DEFAULT_FOV_TOLERANCE,
    batch_slices: int = 8,
    progress: Callable[[int, int], object] | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Simulate low-dose CT for every slice of a volume (or one slice), reproducibly per slice.

    Slice ``k`` (``k = first_index + position along z``) uses the generator :func:`slice_rng` ``(seed, k)``,
    so any slice can be re-simulated alone (``simulate_ldct(hu[k], ..., first_index=k)`` or
    :func:`simulate_ldct_slice` with ``seed=slice_rng(seed, k)``) and gives the same values (to float32
    rounding of the batched projector). Model, units and sources: module docstring and
    :func:`simulate_ldct_slice`.

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x)
        Normal-dose HU at the native pixel size, finite.
    pixel_spacing_mm : float or (dy, dx) or (dz, dy, dx)
        In-plane pixel size in mm.
    n0 : float or None
        Incident photons per ray (detector bin and view); None/inf = no noise.
    seed : int >= 0
        Base seed.
    geometry, n_views, bin_mm, filter_name, electronic_noise_std, mode, fov_tolerance
        As in :func:`simulate_ldct_slice`.
    batch_slices : int >= 1
        Slices projected together (they share the projector's sampling grids; faster, same result).
    progress : callable(done, total) or None
        Called in the calling thread after each batch of slices. An exception raised by it stops the
        simulation and propagates.
    first_index : int >= 0
        Index of ``hu[0]`` in the full volume, for simulating a sub-range reproducibly.

    Returns
    -------
    ndarray float32, same shape as ``hu``
        Low-dose HU.

    Raises
    ------
    SimulationError
        As :func:`simulate_ldct_slice`; also for a negative or non-integer ``seed``/``first_index``.
    """
    arr = _check_array(hu, (2, 3), "The CT volume")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    geom = _geometry(geometry, n_views, bin_mm, filter_name)
    sigma, mode, tol = _check_common(electronic_noise_std, mode, fov_tolerance)
    for name, val in (("seed", seed), ("first_index", first_index)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 0:
            raise SimulationError(f"{name} = {val!r} must be a non-negative integer.")
    vol = (arr[None] if arr.ndim == 2 else arr).astype(np.float32, copy=False)
    rngs = [slice_rng(seed, first_index + z) for z in range(vol.shape[0])]
    out = _simulate_volume(vol, spacing, n0v, rngs, geom, sigma, mode, tol, max(1, int(batch_slices)), progress)
    return out[0] if arr.ndim == 2 else out


# ----------------------------------------------------------------------------------------------- noise level
def soft_tissue_mask(ndct_hu: np.ndarray, hu_window: tuple[float, float] = (-150.0, 150.0),
                     erode_px: int = 3) -> np.ndarray:
    """Uniform-ish soft tissue of a slice or volume: the 5x5-mean NDCT inside ``hu_window`` HU (fat to
    muscle and organs), eroded by ``erode_px`` pixels in-plane so that edges are excluded.

    Parameters
    ----------
    ndct_hu : ndarray (y, x) or (z, y, x), HU
    hu_window : (lo, hi) HU
    erode_px : int

    Returns
    -------
    ndarray bool, same shape
    """
    from scipy import ndimage

    a = np.asarray(ndct_hu, dtype=np.float32)
    a3 = a[None] if a.ndim == 2 else a
    out = np.zeros(a3.shape, dtype=bool)
    for z in range(a3.shape[0]):
        smooth = ndimage.uniform_filter(a3[z], 5)
        m = (smooth > hu_window[0]) & (smooth < hu_window[1])
        out[z] = ndimage.binary_erosion(m, iterations=int(erode_px)) if erode_px > 0 else m
    return out[0] if a.ndim == 2 else out


def soft_tissue_noise_sigma(ndct_hu: np.ndarray, ldct_hu: np.ndarray, **mask_kwargs) -> float:
    """Standard deviation in HU of the simulated noise (LDCT - NDCT) in soft tissue (:func:`soft_tissue_mask`).

    In ``noise_only`` mode LDCT - NDCT is exactly the added noise, so this is the dose noise a reader sees in
    uniform soft tissue (the NDCT's own noise not included). Pooled over all slices given.

    Parameters
    ----------
    ndct_hu, ldct_hu : ndarray (y, x) or (z, y, x), HU, same shape

    Returns
    -------
    float
        Sigma in HU; NaN when the mask is empty.

    Raises
    ------
    SimulationError
        Shapes differ.
    """
    nd = np.asarray(ndct_hu, dtype=np.float32)
    ld = np.asarray(ldct_hu, dtype=np.float32)
    if nd.shape != ld.shape:
        raise SimulationError(f"NDCT {nd.shape} and LDCT {ld.shape} differ in shape.")
    mask = soft_tissue_mask(nd, **mask_kwargs)
    if not mask.any():
        return float("nan")
    return float(np.std((ld - nd)[mask], dtype=np.float64))


def predicted_noise_sigma_hu(line_integral: float, n0: float, geometry: Optional[ScanGeometry] = None,
                             bin_pitch_mm: Optional[float] = None) -> float:
    """Analytic noise sigma (HU) of the FBP at a point whose rays all have line integral ``line_integral``
    (the centre of a uniform disk: ``p = mu * diameter``), for this module's discrete FBP.

    ``sigma_mu^2 = (pi^2 / V) * Var(p~) * sum_k g_k^2 * (2/3 + rho/3)``, ``Var(p~) = exp(p) / N0`` (first-order
    Poisson log noise), ``g`` the windowed ramp kernel of the geometry (1/mm, computed from the same
    frequency response the simulator uses), ``rho = sum g_k g_k+1 / sum g_k^2`` (linear interpolation of the
    back-projection, averaged over the sub-bin position); ``sigma_HU = 1000 / MU_WATER_PER_MM * sigma_mu``.

    Parameters
    ----------
    line_integral : float
        Dimensionless line integral of the rays through the point.
    n0 : float
        Photons per ray.
    geometry : ScanGeometry, optional
        Default :data:`DEFAULT_GEOMETRY`.
    bin_pitch_mm : float, optional
        The exact pitch used (``FOV / n_bins``); default ``geometry.bin_mm``.

    Returns
    -------
    float, HU
    """
    geom = geometry or DEFAULT_GEOMETRY
    pitch = float(bin_pitch_mm or geom.bin_mm)
    resp, n = _filter_response(256, pitch, geom.filter_name)
    g = torch.fft.irfft(resp, n=n).numpy()
    s2 = float(np.sum(g * g))
    rho = float(np.sum(g * np.roll(g, 1))) / s2
    var_p = math.exp(float(line_integral)) / float(n0)
    var_mu = (math.pi**2 / geom.n_views) * var_p * s2 * (2.0 / 3.0 + rho / 3.0)
    return 1000.0 / MU_WATER_PER_MM * math.sqrt(var_mu)


def n0_for_noise_sigma(hu2d: np.ndarray, pixel_spacing_mm: float | Sequence[float], target_sigma_hu: float, *,
                       geometry: Optional[ScanGeometry] = None, seed: int = 0, iterations: int = 3) -> tuple[float, float]:
    """The N0 at which a slice's soft-tissue noise (:func:`soft_tissue_noise_sigma`) is ``target_sigma_hu``,
    for users who think in HU (``lidnet simulate --noise-sigma``).

    Starts from sigma measured at N0 = 1e4 and corrects with ``N0 <- N0 (sigma / target)^2`` (sigma ~ 1/sqrt(N0);
    the log bias at low counts makes a few iterations necessary).

    Parameters
    ----------
    hu2d : ndarray (y, x), HU
        A representative slice (e.g. the middle slice) with soft tissue in it.
    pixel_spacing_mm : float
    target_sigma_hu : float > 0
    geometry : ScanGeometry, optional
    seed : int
    iterations : int

    Returns
    -------
    (float, float)
        N0 and the sigma (HU) measured at that N0.

    Raises
    ------
    SimulationError
        Non-positive target, or no soft tissue in the slice.
    """
    target = float(target_sigma_hu)
    if not (math.isfinite(target) and target > 0):
        raise SimulationError(f"noise sigma {target_sigma_hu!r} HU must be a positive number.")
    hu = _check_array(hu2d, (2,), "The slice").astype(np.float32)
    n0 = 1e4
    sigma = float("nan")
    for _ in range(max(1, int(iterations)) + 1):
        ld = simulate_ldct_slice(hu, pixel_spacing_mm, n0, seed=seed, geometry=geometry)
        sigma = soft_tissue_noise_sigma(hu, ld)
        if not math.isfinite(sigma) or sigma <= 0:
            raise SimulationError("The slice has no uniform soft tissue to measure the noise in; choose another slice.")
        if abs(sigma / target - 1.0) < 0.01:
            break
        n0 = n0 * (sigma / target) ** 2
    return float(n0), float(sigma)


# ----------------------------------------------------------------------------------------------- cache
def _cache_key(arr: np.ndarray, spacing: float, n0: float, seed: int, geom: ScanGeometry, sigma, mode, tol,
               first_index):
    h = hashlib.blake2b(digest_size=20)
    meta = {
        "version": SIMULATOR_VERSION,
        "torch": torch.__version__.split("+")[0],
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
        "spacing": repr(float(spacing)),
        "n0": repr(float(n0)),
        "seed": int(seed),
        "geometry": geom.to_dict(),
        "electronic_noise_std": repr(float(sigma)),
        "mode": mode,
        "fov_tolerance": repr(float(tol)),
        "first_index": int(first_index),
        "mu_water": MU_WATER_PER_MM,
        "count_floor": COUNT_FLOOR,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=20).hexdigest()


def cached_simulate_ldct(
    hu: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int,
    cache_dir: str | os.PathLike,
    **kw,
) -> np.ndarray:
    """:func:`simulate_ldct` with an on-disk cache.

    The cache file is ``cache_dir/ldct_<key>.npz`` where ``key`` hashes the input bytes, shape and dtype,
    spacing, N0, seed, geometry, electronic noise, mode, fov_tolerance, first_index, :data:`SIMULATOR_VERSION`
    and the torch version. ``batch_slices`` and ``progress`` do not change the result and are not part of the
    key. The file stores the result, the key and a checksum; it is written atomically
    (:func:`src_training.checkpoint.atomic_write_bytes`). A file that cannot be read, has the wrong key,
    shape or dtype, or fails its checksum is ignored, recomputed and overwritten.

    Parameters
    ----------
    hu, pixel_spacing_mm, n0, seed
        As in :func:`simulate_ldct`.
    cache_dir : path-like
        Folder for cache files (created if needed).
    **kw
        Other keyword arguments of :func:`simulate_ldct`.

    Returns
    -------
    ndarray float32, same shape as ``hu``
        Low-dose HU (identical to the uncached call).

    Raises
    ------
    SimulationError
        As :func:`simulate_ldct`. An unwritable cache folder only logs a warning.
    """
    allowed = {"geometry", "n_views", "bin_mm", "filter_name", "electronic_noise_std", "mode", "fov_tolerance",
               "batch_slices", "progress", "first_index"}
    unknown = set(kw) - allowed
    if unknown:
        raise TypeError(f"cached_simulate_ldct() got unexpected keyword argument(s): {sorted(unknown)}")
    arr = _check_array(hu, (2, 3), "The CT volume")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    geom = _geometry(kw.get("geometry"), kw.get("n_views"), kw.get("bin_mm"), kw.get("filter_name"))
    sigma, mode, tol = _check_common(kw.get("electronic_noise_std", 0.0), kw.get("mode", DEFAULT_MODE),
                                     kw.get("fov_tolerance", DEFAULT_FOV_TOLERANCE))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed = {seed!r} must be a non-negative integer.")
    key = _cache_key(arr, spacing, n0v, seed, geom, sigma, mode, tol, kw.get("first_index", 0))
    path = Path(cache_dir) / f"ldct_{key}.npz"

    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                data = np.array(z["ldct"])
                ok = (
                    str(z["key"]) == key
                    and str(z["checksum"]) == _digest(data)
                    and data.shape == arr.shape
                    and data.dtype == np.float32
                )
            if ok:
                return data
            log.warning("Low-dose cache file %s does not match its checksum/key; recomputing.", path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("Low-dose cache file %s is unreadable (%s); recomputing.", path, exc)

    result = simulate_ldct(arr, pixel_spacing_mm, n0, seed=seed, **kw)
    buf = io.BytesIO()
    np.savez(buf, ldct=result, key=np.array(key), checksum=np.array(_digest(result)))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("Could not write the low-dose cache file %s (%s); continuing without cache.", path, exc)
    return result
