"""Low-dose CT simulation from image-domain (reconstructed) CT slices.

This is the standard "simple low-dose simulation" (Zeng et al., "A simple low-dose x-ray CT simulation
from high-dose scan", IEEE Trans. Nucl. Sci. 62(5):2226-2233, 2015), with the LoDoPaB-CT conventions for
the count floor (Leuschner et al., "LoDoPaB-CT, a benchmark dataset for low-dose computed tomography
reconstruction", Sci. Data 8:109, 2021). It is what LIDnet (Chen et al., ACM MM 2021) calls adding noise
of level ``N0``. Parallel-beam geometry; the projector is scikit-image (``skimage.transform.radon`` /
``iradon``), no hand-written Radon transform.

Model, per slice (all steps in float64, output float32)::

    HU    <- max(HU, -1000)                          # air; padding values -1024/-2048/-3024 become air
    mu     = MU_WATER_PER_MM * (1 + HU / 1000)       # /mm, MU_WATER_PER_MM = 0.0192 /mm (~70 keV)
    p      = radon(mu) * pixel_spacing_mm            # line integrals, dimensionless
    lambda = N0 * exp(-p)                            # expected counts per detector bin and view
    I      = Poisson(lambda) + Normal(0, sigma_e^2)  # sigma_e = electronic_noise_std (counts), default 0
    I      = max(I, COUNT_FLOOR)                     # COUNT_FLOOR = 0.1 count (LoDoPaB sets 0 counts to 0.1)
    p~     = -log(I / N0)
    mode "full":       mu~ = FBP(p~) / pixel_spacing_mm          (ramp filter)
    mode "noise_only": mu~ = mu + FBP(p~ - p) / pixel_spacing_mm (exact noise insertion: FBP is linear)
    HU~    = 1000 * (mu~ / MU_WATER_PER_MM - 1)

Flux convention: ``N0`` is the expected number of incident photons per detector bin (bin width = one
pixel) per view, as in Zeng et al. (I0) and LoDoPaB (N0 = 4096). The reconstructed noise variance scales
roughly as ``exp(p) / (N0 * n_views * pixel_spacing_mm**2)``, so the same ``N0`` gives more noise with
fewer views or smaller pixels: keep ``n_views`` at its default when comparing noise levels.

Why ``mode="noise_only"`` is the default: the input is already a reconstructed image. Re-projecting and
re-reconstructing it (``mode="full"``) adds the simulator's own resolution loss (two interpolations, the
ramp filter's discretisation) and edge streaks even at infinite dose, so a denoiser trained on
(full-mode LDCT, NDCT) pairs partly learns to undo the simulator instead of the dose. ``noise_only``
keeps the NDCT exactly and adds only the (object-dependent, correlated, streaky) dose noise and the log
bias, which is what a real lower-dose scan of the same patient differs by, to first order. ``N0=inf``
then returns the input exactly. As in LIDnet and LoDoPaB, the NDCT is treated as noise-free: its own
noise is kept and the simulated noise is added on top (Zeng et al.'s exact dose-fraction formula would
need the original scan's I0, which image-domain data do not carry).

Measured on a real chest slice (pyradiomics lung1, 512^2 at 0.57 mm, and 2x2-binned 256^2 at 1.14 mm),
added-noise std in a uniform soft-tissue window, default views: N0 = 1e3 / 3e3 / 1e4 / 1e5 gives about
210 / 125 / 60 / 19 HU at 1.14 mm and 310 / 178 / 92 / 29 HU at 0.57 mm. N0 ~ 1e5 is therefore close to
a routine-dose scan, N0 = 1000 (LIDnet's lung setting) an ultra-low-dose one (~1 % dose) with streaks
behind the shoulders but no photon starvation (mean counts >= ~6 on the most attenuated rays).

Scan field of view: ``radon(circle=True)`` assumes zero attenuation outside the circle inscribed in the
square image (non-square slices are first zero-padded to a centred square). Material outside that
circle whose largest line integral is at most ``fov_tolerance`` (default 0.05: air, blankets, thin
clothing; it only changes the expected counts of a few tangential rays by < 5 %, i.e. the noise level
there, never the image) is left out of the projections; anything more (table, arms, a body touching the
edge) makes the slice be zero-padded to the smallest square whose inscribed circle holds every pixel
above -1000 HU, simulated there and cropped back. Pixels outside the circle are returned unchanged, so
nothing is lost, and the output always has the input's shape.

Number of views: default ``ceil(pi/2 * n_bins)`` over 180 degrees, ``n_bins`` = side of the (padded)
square (one bin per pixel): the textbook angular sampling condition for an object filling the field of
view (Kak & Slaney, "Principles of Computerized Tomographic Imaging", ch. 5: N_views ~ pi/2 * N_bins for
parallel beam over 180 deg; "2 x bins x pi/2" quoted for 360 deg rotations is the same angular density).
256x256 slices -> 403 views, 512x512 -> 805 views.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes
from .errors import SimulationError

__all__ = [
    "MU_WATER_PER_MM",
    "HU_MIN",
    "COUNT_FLOOR",
    "DEFAULT_MODE",
    "SIMULATOR_VERSION",
    "default_n_views",
    "slice_rng",
    "hu_to_mu",
    "mu_to_hu",
    "simulate_ldct_slice",
    "simulate_ldct",
    "cached_simulate_ldct",
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
SIMULATOR_VERSION = "lidnet-ldct-sim/1"
#: Largest line integral (dimensionless) of material outside the scan circle that is left out instead of
#: padding the slice (0.05: expected counts of the few tangential rays concerned change by < 5 %).
DEFAULT_FOV_TOLERANCE = 0.05

Mode = Literal["noise_only", "full"]
_MODES = ("noise_only", "full")


# ----------------------------------------------------------------------------------------------- helpers
def default_n_views(n_bins: int) -> int:
    """Default number of views over 180 degrees for ``n_bins`` detector bins: ``ceil(pi/2 * n_bins)``.

    Parameters
    ----------
    n_bins : int
        Detector bins (one per pixel of the square, possibly padded, slice).

    Returns
    -------
    int
        E.g. 403 for 256 bins, 805 for 512 bins (Kak & Slaney, ch. 5, angular sampling condition).
    """
    return int(math.ceil(math.pi / 2.0 * int(n_bins)))


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
        raise SimulationError(
            f"Pixel spacing {pixel_spacing_mm!r}: give one number, (y, x) or (z, y, x) in mm."
        )
    if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise SimulationError(
            f"Pixel spacing {pixel_spacing_mm!r} mm must be positive and finite; check the CT header."
        )
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
            f"N0 = {n0!r}: the incident photon count per detector bin must be > 0 (e.g. 1000 for "
            "low dose, 1e5 near full dose), or inf/None for no dose noise."
        )
    return val


def _check_common(n_views, electronic_noise_std, mode, fov_tolerance) -> tuple:
    if n_views is not None:
        if isinstance(n_views, bool) or not isinstance(n_views, (int, np.integer)) or n_views < 2:
            raise SimulationError(f"n_views = {n_views!r} must be an integer >= 2 (or None for the default).")
        n_views = int(n_views)
    try:
        sigma = float(electronic_noise_std)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"electronic_noise_std {electronic_noise_std!r} is not a number.") from exc
    if not math.isfinite(sigma) or sigma < 0:
        raise SimulationError(
            f"electronic_noise_std = {electronic_noise_std!r} counts must be >= 0 and finite (0 = none)."
        )
    if mode not in _MODES:
        raise SimulationError(f"mode = {mode!r}: choose 'noise_only' (default) or 'full'.")
    try:
        tol = float(fov_tolerance)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"fov_tolerance {fov_tolerance!r} is not a number.") from exc
    if not math.isfinite(tol) or tol < 0:
        raise SimulationError(f"fov_tolerance = {fov_tolerance!r} must be >= 0 (0 = always pad).")
    return n_views, sigma, mode, tol


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
    """Side ``S`` of the square and offsets ``(oy, ox)`` of the slice in it.

    Start with the smallest centred square. If the attenuation outside its inscribed circle (skimage's
    ``(i - S//2)**2 + (j - S//2)**2 <= (S//2)**2``) has a largest line integral (estimated at 2-pixel
    resolution every 2 degrees) above ``fov_tolerance``, grow the square until every pixel with mu > 0 lies
    inside the circle."""
    ny, nx = mu2d.shape
    side = max(ny, nx)
    oy, ox = (side - ny) // 2, (side - nx) // 2
    c = side // 2
    yy, xx = np.ogrid[:ny, :nx]
    out_circle = (yy + oy - c) ** 2 + (xx + ox - c) ** 2 > c * c
    mu_out = np.where(out_circle, mu2d, 0.0)
    if not np.any(mu_out > 0):
        return side, oy, ox
    if fov_tolerance > 0:
        from skimage.transform import radon

        small = mu_out[: ny - ny % 2, : nx - nx % 2]
        small = small.reshape(small.shape[0] // 2, 2, small.shape[1] // 2, 2).mean(axis=(1, 3))
        est = radon(small, theta=np.arange(0.0, 180.0, 2.0), circle=False, preserve_range=True)
        if float(est.max()) * 2.0 * spacing <= fov_tolerance:
            return side, oy, ox
    iy, ix = np.nonzero(mu2d > 0)
    iy = iy.astype(np.float64)
    ix = ix.astype(np.float64)
    while True:
        oy, ox = (side - ny) // 2, (side - nx) // 2
        c = side // 2
        r2 = float(np.max((iy + oy - c) ** 2 + (ix + ox - c) ** 2))
        if r2 <= c * c:
            return side, oy, ox
        side = max(side + 1, 2 * int(math.ceil(math.sqrt(r2))))


def _circle_mask(side: int) -> np.ndarray:
    c = side // 2
    yy, xx = np.ogrid[:side, :side]
    return (yy - c) ** 2 + (xx - c) ** 2 <= c * c


def _radon(img: np.ndarray, theta: np.ndarray, threads: int) -> np.ndarray:
    """skimage radon (circle=True), optionally split over views in threads (skimage's warp releases the GIL;
    each view is computed by the same code, so the result is bit-identical to a single call)."""
    from skimage.transform import radon

    if threads <= 1 or theta.size < 2 * threads:
        return radon(img, theta=theta, circle=True, preserve_range=True)
    chunks = np.array_split(theta, threads)
    with ThreadPoolExecutor(max_workers=threads) as ex:
        parts = list(ex.map(lambda t: radon(img, theta=t, circle=True, preserve_range=True), chunks))
    return np.concatenate(parts, axis=1)


def _fbp(sino: np.ndarray, theta: np.ndarray, side: int) -> np.ndarray:
    """skimage iradon, ramp filter, linear interpolation, circle=True, output (side, side)."""
    from skimage.transform import iradon

    return iradon(
        sino, theta=theta, output_size=side, filter_name="ramp", interpolation="linear", circle=True,
        preserve_range=True,
    )


def _as_generator(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    raise SimulationError(f"seed = {seed!r}: give None, a non-negative integer or a numpy Generator.")


# ----------------------------------------------------------------------------------------------- one slice
def _simulate_slice(hu2d, spacing, n0, rng, n_views, sigma_e, mode, fov_tol, threads) -> np.ndarray:
    if mode == "noise_only" and math.isinf(n0):
        return hu2d.astype(np.float32, copy=True)  # FBP(p - p) = 0 exactly
    ny, nx = hu2d.shape
    hu = hu2d.astype(np.float64, copy=False)
    mu_in = hu_to_mu(hu)
    side, oy, ox = _fov_square(mu_in, spacing, fov_tol)
    circle = _circle_mask(side)
    inside = circle[oy:oy + ny, ox:ox + nx]  # output pixels covered by the scan circle
    mu = np.zeros((side, side), dtype=np.float64)
    mu[oy:oy + ny, ox:ox + nx] = mu_in
    mu[~circle] = 0.0  # outside the scan circle: only material within fov_tolerance is left out

    nv = default_n_views(side) if n_views is None else n_views
    theta = np.linspace(0.0, 180.0, nv, endpoint=False)
    p = _radon(mu, theta, threads) * spacing  # dimensionless line integrals, (side, nv)
    np.maximum(p, 0.0, out=p)  # interpolation can give -1e-17 for air rays

    if math.isinf(n0):
        p_noisy = p
    else:
        lam = n0 * np.exp(-p)
        counts = rng.poisson(lam).astype(np.float64)
        if sigma_e > 0:
            counts += rng.normal(0.0, sigma_e, size=counts.shape)
        np.maximum(counts, COUNT_FLOOR, out=counts)
        p_noisy = -np.log(counts / n0)

    if mode == "noise_only":
        d_mu = _fbp(p_noisy - p, theta, side)[oy:oy + ny, ox:ox + nx] / spacing
        out = hu + (1000.0 / MU_WATER_PER_MM) * d_mu  # outside the circle iradon returns 0: unchanged
    else:
        mu_rec = _fbp(p_noisy, theta, side)[oy:oy + ny, ox:ox + nx] / spacing
        out = np.where(inside, mu_to_hu(mu_rec), np.maximum(hu, HU_MIN))
    return out.astype(np.float32)


def simulate_ldct_slice(
    hu2d: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int | np.random.Generator | None = None,
    n_views: int | None = None,
    electronic_noise_std: float = 0.0,
    mode: Mode = DEFAULT_MODE,
    fov_tolerance: float = DEFAULT_FOV_TOLERANCE,
    workers: int | None = None,
) -> np.ndarray:
    """Simulate a low-dose CT slice from a normal-dose slice (Zeng et al. 2015; see module docstring).

    Parameters
    ----------
    hu2d : ndarray (y, x)
        Normal-dose slice in HU, any real dtype, finite. Values below -1000 HU are clipped to -1000 (air)
        for the simulation. Need not be square.
    pixel_spacing_mm : float or (dy, dx) or (dz, dy, dx)
        In-plane pixel size in mm (> 0, square pixels: dy and dx within 1 %).
    n0 : float or None
        Incident photons per detector bin per view (counts). Lower = more noise; LIDnet uses 3000 and 1000.
        ``None`` or ``inf``: no Poisson noise (checks the projector/FBP error only).
    seed : None, int >= 0 or numpy.random.Generator
        Randomness of the counts; an int gives reproducible output. Use :func:`slice_rng` to reproduce
        slice ``i`` of :func:`simulate_ldct`.
    n_views : int or None
        Views over 180 degrees; default ``ceil(pi/2 * n_bins)`` (:func:`default_n_views`). The noise level
        depends on it (per-view flux convention).
    electronic_noise_std : float
        Standard deviation of additive Gaussian electronic noise, in counts (Zeng et al.: sigma_e^2 ~ 10).
        Ignored when ``n0`` is infinite.
    mode : {"noise_only", "full"}
        ``"noise_only"`` (default): NDCT + FBP(p~ - p), the NDCT's resolution is kept and N0=inf returns the
        input exactly. ``"full"``: FBP(p~) (re-reconstruction, blurs and adds FBP error).
    fov_tolerance : float
        Largest line integral (dimensionless) of material outside the scan circle that may be left out of
        the projections instead of padding the slice (default 0.05; 0 = pad whenever anything above
        -1000 HU lies outside the circle). Only the noise level of a few tangential rays depends on it.
    workers : int or None
        Threads that share the forward projection of this slice (result is identical for any value);
        None = all cores.

    Returns
    -------
    ndarray float32 (y, x)
        Low-dose slice in HU, same shape as ``hu2d``. Pixels outside the scan circle are returned
        unchanged in ``noise_only`` mode and clipped to >= -1000 HU in ``full`` mode.

    Raises
    ------
    SimulationError
        NaN/Inf in the input, not 2-D, non-positive/NaN N0, non-positive spacing, bad n_views, negative
        electronic noise, unknown mode, bad seed.
    """
    arr = _check_array(hu2d, (2,), "The slice")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    n_views, sigma, mode, tol = _check_common(n_views, electronic_noise_std, mode, fov_tolerance)
    rng = _as_generator(seed)
    threads = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    return _simulate_slice(arr, spacing, n0v, rng, n_views, sigma, mode, tol, threads)


# ----------------------------------------------------------------------------------------------- volumes
def simulate_ldct(
    hu: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int = 0,
    n_views: int | None = None,
    electronic_noise_std: float = 0.0,
    mode: Mode = DEFAULT_MODE,
    fov_tolerance: float = DEFAULT_FOV_TOLERANCE,
    workers: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    first_index: int = 0,
) -> np.ndarray:
    """Simulate low-dose CT for every slice of a volume (or one slice), reproducibly per slice.

    Slice ``k`` (``k = first_index + position along z``) uses the generator
    ``np.random.default_rng(np.random.SeedSequence([seed, k]))`` (:func:`slice_rng`), so any slice can be
    re-simulated alone (``simulate_ldct(hu[k], ..., first_index=k)`` or :func:`simulate_ldct_slice` with
    ``seed=slice_rng(seed, k)``) and gives the same values; the result does not depend on ``workers``.
    Formula, units and sources: see the module docstring and :func:`simulate_ldct_slice`.

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x)
        Normal-dose HU, finite.
    pixel_spacing_mm : float or (dy, dx) or (dz, dy, dx)
        In-plane pixel size in mm.
    n0 : float or None
        Incident photons per detector bin per view; None/inf = no noise.
    seed : int >= 0
        Base seed.
    n_views, electronic_noise_std, mode, fov_tolerance
        As in :func:`simulate_ldct_slice`.
    workers : int or None
        Threads (skimage's projector releases the GIL; threads measured ~2x faster than serial on 2
        cores, processes not needed). None = ``os.cpu_count()``. With one slice the threads share its
        projection instead.
    progress : callable(done, total) or None
        Called in the calling thread after each finished slice. An exception raised by it stops the
        simulation (unstarted slices are cancelled) and propagates.
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
    n_views, sigma, mode, tol = _check_common(n_views, electronic_noise_std, mode, fov_tolerance)
    for name, val in (("seed", seed), ("first_index", first_index)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 0:
            raise SimulationError(f"{name} = {val!r} must be a non-negative integer.")
    vol = arr[None] if arr.ndim == 2 else arr
    nz = vol.shape[0]
    n_workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    out = np.empty(vol.shape, dtype=np.float32)

    def one(z: int, threads: int) -> None:
        rng = slice_rng(seed, first_index + z)
        out[z] = _simulate_slice(vol[z], spacing, n0v, rng, n_views, sigma, mode, tol, threads)

    if nz == 1 or n_workers == 1:
        threads = n_workers if nz == 1 else 1
        for z in range(nz):
            one(z, threads)
            if progress is not None:
                progress(z + 1, nz)
    else:
        with ThreadPoolExecutor(max_workers=min(n_workers, nz)) as ex:
            futures = [ex.submit(one, z, 1) for z in range(nz)]
            try:
                for done, fut in enumerate(as_completed(futures), start=1):
                    fut.result()
                    if progress is not None:
                        progress(done, nz)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return out[0] if arr.ndim == 2 else out


# ----------------------------------------------------------------------------------------------- cache
def _cache_key(arr: np.ndarray, spacing: float, n0: float, seed: int, n_views, sigma, mode, tol, first_index):
    import skimage

    h = hashlib.blake2b(digest_size=20)
    meta = {
        "version": SIMULATOR_VERSION,
        "skimage": skimage.__version__,
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
        "spacing": repr(float(spacing)),
        "n0": repr(float(n0)),
        "seed": int(seed),
        "n_views": n_views,
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
    spacing, N0, seed, n_views, electronic noise, mode, fov_tolerance, first_index,
    :data:`SIMULATOR_VERSION` and the scikit-image version. ``workers`` and ``progress`` do not change the
    result and are not part of the key. The file stores the result, the key and a checksum; it is written
    atomically (:func:`src_training.checkpoint.atomic_write_bytes`). A file that cannot be read, has the
    wrong key, shape or dtype, or fails its checksum is ignored, recomputed and overwritten.

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
        Low-dose HU (bit-identical to the uncached call).

    Raises
    ------
    SimulationError
        As :func:`simulate_ldct`. An unwritable cache folder only logs a warning.
    """
    unknown = set(kw) - {"n_views", "electronic_noise_std", "mode", "fov_tolerance", "workers", "progress",
                         "first_index"}
    if unknown:
        raise TypeError(f"cached_simulate_ldct() got unexpected keyword argument(s): {sorted(unknown)}")
    arr = _check_array(hu, (2, 3), "The CT volume")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    n_views, sigma, mode, tol = _check_common(
        kw.get("n_views"), kw.get("electronic_noise_std", 0.0), kw.get("mode", DEFAULT_MODE),
        kw.get("fov_tolerance", DEFAULT_FOV_TOLERANCE),
    )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed = {seed!r} must be a non-negative integer.")
    key = _cache_key(arr, spacing, n0v, seed, n_views, sigma, mode, tol, kw.get("first_index", 0))
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
