"""The low-dose noise model of :mod:`src_training.simulation` and its public entry points
:func:`simulate_ldct_slice` and :func:`simulate_ldct`.

Owns the units (HU <-> linear attenuation, :func:`hu_to_mu`, :func:`mu_to_hu`), the counts (Poisson at N0
photons per ray, optional Gaussian electronic noise, the count floor, the log), the two modes, the per-slice
random generators (:func:`slice_rng`), the argument checks shared by the entry points, and
:data:`SIMULATOR_VERSION`. Geometry: :mod:`~src_training.simulation.geometry`; projector:
:mod:`~src_training.simulation.projector`. Model, per slice (float64 where it matters, output float32 HU)::

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

Sources (Zeng et al. 2015; LoDoPaB-CT's count floor) and why ``noise_only`` is the default: the package
docstring of :mod:`src_training.simulation`.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SimulationError
from .geometry import DEFAULT_FOV_TOLERANCE, ScanGeometry, _filter_response, _fov_square, _geometry, _n_bins
from .projector import _backproject, _project, _theta


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


Mode = Literal["noise_only", "full"]


_MODES = ("noise_only", "full")


def slice_rng(seed: int, slice_index: int) -> np.random.Generator:
    """The random generator :func:`simulate_ldct` uses for slice ``slice_index`` of a volume.

    ``np.random.default_rng(np.random.SeedSequence([seed, slice_index]))``: any slice can be re-simulated on
    its own (pass this to :func:`simulate_ldct_slice` as ``seed``) and equals the volume's slice.
    """
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(slice_index)]))


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """HU -> linear attenuation (/mm, float64): ``MU_WATER_PER_MM * (1 + max(HU, -1000) / 1000)``.

    ``hu``: array-like of any shape, HU; returns an ndarray float64 of the same shape, /mm."""
    return MU_WATER_PER_MM * (1.0 + np.maximum(np.asarray(hu, dtype=np.float64), HU_MIN) / 1000.0)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    """Linear attenuation (/mm) -> HU (float64): ``1000 * (mu / MU_WATER_PER_MM - 1)``.

    ``mu``: array-like of any shape, /mm; returns an ndarray float64 of the same shape, HU (not clipped)."""
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


def _as_generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise SimulationError(f"seed = {seed!r}: give None, a non-negative integer or a numpy Generator.")


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
