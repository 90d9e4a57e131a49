"""Noise level of :mod:`src_training.simulation` in HU: the soft-tissue mask and the measured noise sigma
(:func:`soft_tissue_mask`, :func:`soft_tissue_noise_sigma`), the analytic sigma of the discrete FBP
(:func:`predicted_noise_sigma_hu`), and the N0 that gives a wanted sigma (:func:`n0_for_noise_sigma`,
``lidnet simulate --noise-sigma``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import SimulationError
from .geometry import DEFAULT_GEOMETRY, ScanGeometry, _filter_response
from .noise import MU_WATER_PER_MM, _check_array, simulate_ldct_slice


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
