"""Tests of src_training.simulation (low-dose CT simulation: Poisson counts in the sinogram, stated geometry).

Small phantoms (64x64, 3 mm pixels: a 180 x 190 mm water-like ellipse with a lung-like and a bone-like
insert) keep every call at ~10-50 ms.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter, minimum_filter

from src_training import simulation as sim
from src_training.errors import LidnetError, SimulationError
from src_training.simulation import (
    cached_simulate_ldct,
    simulate_ldct,
    simulate_ldct_slice,
    slice_rng,
)

SPACING = 3.0  # mm


def phantom(n: int = 64, fill_corners: bool = False, outside: float = -1000.0) -> np.ndarray:
    """(n, n) float32 HU: soft-tissue (40 HU) ellipse, lung (-800) and bone (700) inserts, air outside."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    hu = np.full((n, n), outside, np.float32)
    body = (yy / (0.44 * n)) ** 2 + (xx / (0.47 * n)) ** 2 <= 1
    hu[np.ones_like(body) if fill_corners else body] = 40.0
    hu[((yy + 0.12 * n) / (0.12 * n)) ** 2 + ((xx + 0.2 * n) / (0.12 * n)) ** 2 <= 1] = -800.0
    hu[((yy - 0.18 * n) / (0.07 * n)) ** 2 + ((xx - 0.2 * n) / (0.07 * n)) ** 2 <= 1] = 700.0
    return hu


# uniform 40 HU region of phantom(64): below the centre, left of the bone insert
ROI = (slice(36, 50), slice(22, 40))


def flat_mask(hu: np.ndarray, size: int = 7) -> np.ndarray:
    """Pixels whose size x size neighbourhood is uniform (away from every edge, image border = air)."""
    return maximum_filter(hu, size, mode="constant", cval=-1000) == minimum_filter(hu, size, mode="constant",
                                                                                   cval=-1000)


def test_roi_is_uniform():
    hu = phantom()
    assert np.all(hu[ROI] == 40.0)


@pytest.mark.parametrize("mode", ["noise_only", "full"])
def test_noise_grows_as_n0_falls(mode):
    hu = phantom()
    stds = [float(simulate_ldct_slice(hu, SPACING, n0, seed=3, mode=mode)[ROI].std()) for n0 in (1e5, 1e4, 1e3)]
    assert stds[0] < stds[1] < stds[2], stds
    # quantum noise: std ~ 1/sqrt(N0), i.e. x3.16 per decade (the log bias makes it a bit more at 1e3)
    for lo, hi in zip(stds, stds[1:]):
        assert 2.0 < hi / lo < 5.0, stds


def test_noise_only_mean_unbiased_at_moderate_dose():
    hu = phantom()
    out = simulate_ldct_slice(hu, SPACING, 1e5, seed=0)
    assert abs(float(out[ROI].mean()) - 40.0) < 10.0


@pytest.mark.parametrize("n0", [None, float("inf")])
def test_infinite_dose_noise_only_is_exact(n0):
    hu = phantom(outside=-2048.0)  # padding values outside the body too
    out = simulate_ldct_slice(hu, SPACING, n0, mode="noise_only")
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_array_equal(out, hu)
    np.testing.assert_array_equal(simulate_ldct(np.stack([hu, hu]), SPACING, n0), np.stack([hu, hu]))


@pytest.mark.parametrize("fill_corners", [False, True])
def test_infinite_dose_full_mode_within_fbp_error(fill_corners):
    """Re-projecting and FBP-reconstructing a pixel image is not the identity. Bounds (measured 70 / 10 HU
    for the ellipse, 44 / 8 HU with the corners filled):
    - whole slice RMSE < 100 HU: the 1000-1700 HU edges are smoothed by two linear interpolations
      (radon's rotation, back-projection), ~0.5-1 pixel, i.e. hundreds of HU on the ~15 % edge pixels;
    - RMSE < 15 HU (~1 % of the largest jump) where the 7x7 neighbourhood is uniform: only ramp-filter
      ringing from distant edges remains, no structural error.
    With the corners filled the slice must be padded (tissue outside the scan circle): this checks that the
    padding loses nothing and the output keeps the input shape."""
    hu = phantom(fill_corners=fill_corners)
    out = simulate_ldct_slice(hu, SPACING, None, mode="full")
    assert out.shape == hu.shape and out.dtype == np.float32
    err = out - hu
    assert np.sqrt(np.mean(err**2)) < 100.0
    flat = flat_mask(hu)
    assert flat.mean() > 0.4
    assert np.sqrt(np.mean(err[flat] ** 2)) < 15.0
    assert abs(float(err[ROI].mean())) < 5.0
    if fill_corners:
        assert abs(float(out[4:10, 4:10].mean()) - 40.0) < 30.0  # corner tissue reconstructed, not dropped


def test_padding_when_tissue_outside_circle_gives_noise_there():
    hu = phantom(fill_corners=True)
    out = simulate_ldct_slice(hu, SPACING, 1e4, seed=0)
    assert out.shape == hu.shape
    assert out[:5, :5].std() > 1.0  # corners lie inside the (padded) scan circle: they get noise too


def test_non_square_slice_keeps_shape():
    hu = phantom(64)[8:56, :]  # (48, 64)
    for mode in ("noise_only", "full"):
        out = simulate_ldct_slice(hu, SPACING, 1e4, seed=0, mode=mode)
        assert out.shape == (48, 64) and np.isfinite(out).all()


def test_seeds():
    hu = phantom()
    a = simulate_ldct_slice(hu, SPACING, 3000, seed=11)
    b = simulate_ldct_slice(hu, SPACING, 3000, seed=11)
    c = simulate_ldct_slice(hu, SPACING, 3000, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g = simulate_ldct_slice(hu, SPACING, 3000, seed=np.random.default_rng(11))
    np.testing.assert_array_equal(g, a)


def test_volume_slice_equals_slice_alone_and_batching_does_not_matter():
    vol = np.stack([phantom(), phantom()[::-1].copy(), phantom(fill_corners=True)])
    calls = []
    v2 = simulate_ldct(vol, (5.0, SPACING, SPACING), 2000, seed=7, batch_slices=1, progress=lambda d, t: calls.append((d, t)))
    v1 = simulate_ldct(vol, SPACING, 2000, seed=7, batch_slices=8)
    # batching changes only float32 rounding in the projector (measured <= 1.3e-4 HU)
    np.testing.assert_allclose(v1, v2, rtol=0, atol=1e-3)
    assert v2.shape == vol.shape and v2.dtype == np.float32
    assert calls == [(1, 3), (2, 3), (3, 3)]
    for k in range(3):
        alone = simulate_ldct_slice(vol[k], SPACING, 2000, seed=slice_rng(7, k))
        np.testing.assert_array_equal(v2[k], alone)  # batch_slices=1: exactly the single-slice computation
        np.testing.assert_array_equal(v2[k], simulate_ldct(vol[k], SPACING, 2000, seed=7, first_index=k))
    assert not np.array_equal(v2[0] - vol[0], v2[1][::-1] - vol[1][::-1])  # slices get different noise


def test_electronic_noise_adds_noise():
    hu = phantom()
    a = simulate_ldct_slice(hu, SPACING, 1e4, seed=1)
    b = simulate_ldct_slice(hu, SPACING, 1e4, seed=1, electronic_noise_std=30.0)
    assert b[ROI].std() > a[ROI].std()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hu2d=np.where(np.eye(64, dtype=bool), np.nan, phantom())),
        dict(hu2d=np.where(np.eye(64, dtype=bool), np.inf, phantom())),
        dict(hu2d=np.zeros((2, 8, 8), np.float32)),
        dict(hu2d=np.zeros(8, np.float32)),
        dict(n0=0),
        dict(n0=-5.0),
        dict(n0=float("nan")),
        dict(pixel_spacing_mm=0.0),
        dict(pixel_spacing_mm=-1.0),
        dict(pixel_spacing_mm=(0.5, 0.8)),
        dict(n_views=1),
        dict(electronic_noise_std=-1.0),
        dict(mode="sinogram"),
        dict(seed=-3),
    ],
)
def test_bad_input_raises_simulation_error(kwargs):
    args = dict(hu2d=phantom(16), pixel_spacing_mm=SPACING, n0=1000.0)
    args.update(kwargs)
    hu2d, sp, n0 = args.pop("hu2d"), args.pop("pixel_spacing_mm"), args.pop("n0")
    with pytest.raises(SimulationError) as info:
        simulate_ldct_slice(hu2d, sp, n0, **args)
    assert isinstance(info.value, LidnetError) and str(info.value)


def test_volume_bad_input():
    vol = np.stack([phantom(16)] * 2)
    vol[1, 3, 3] = np.nan
    with pytest.raises(SimulationError, match="NaN"):
        simulate_ldct(vol, SPACING, 1000)
    with pytest.raises(SimulationError):
        simulate_ldct(np.zeros((1, 2, 8, 8)), SPACING, 1000)
    with pytest.raises(SimulationError):
        simulate_ldct(vol[:1], SPACING, 1000, seed=-1)


def test_progress_exception_propagates():
    vol = np.stack([phantom(16)] * 4)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_ldct(vol, SPACING, 1000, batch_slices=2, progress=stop)


def test_cache_hit_and_corruption(tmp_path, monkeypatch):
    vol = np.stack([phantom(32), phantom(32)[:, ::-1].copy()])
    kw = dict(seed=5, cache_dir=tmp_path, mode="noise_only")
    first = cached_simulate_ldct(vol, 6.0, 1000, **kw)
    files = list(tmp_path.glob("ldct_*.npz"))
    assert len(files) == 1
    np.testing.assert_array_equal(first, simulate_ldct(vol, 6.0, 1000, seed=5))

    real = sim.simulate_ldct
    calls = []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(sim.cache, "simulate_ldct", counting)  # the name cached_simulate_ldct calls
    hit = cached_simulate_ldct(vol, 6.0, 1000, **kw)
    np.testing.assert_array_equal(hit, first)
    assert calls == []

    # a different parameter is a different entry
    cached_simulate_ldct(vol, 6.0, 1000, seed=6, cache_dir=tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("ldct_*.npz"))) == 2

    # truncated / garbage file -> recomputed and rewritten
    files[0].write_bytes(files[0].read_bytes()[:100])
    again = cached_simulate_ldct(vol, 6.0, 1000, **kw)
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 2

    # a readable file with wrong data (checksum mismatch) is not trusted either
    import io

    buf = io.BytesIO()
    with np.load(files[0]) as z:
        np.savez(buf, ldct=z["ldct"] + 1.0, key=z["key"], checksum=z["checksum"])
    files[0].write_bytes(buf.getvalue())
    again = cached_simulate_ldct(vol, 6.0, 1000, **kw)
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 3
    hit = cached_simulate_ldct(vol, 6.0, 1000, **kw)
    assert len(calls) == 3


def test_cache_rejects_bad_input(tmp_path):
    with pytest.raises(SimulationError):
        cached_simulate_ldct(np.full((8, 8), np.nan), 1.0, 1000, seed=0, cache_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def _water_disk(n: int, pixel_mm: float, diameter_mm: float = 200.0) -> np.ndarray:
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * pixel_mm
    return np.where(xx**2 + yy**2 <= (diameter_mm / 2) ** 2, 0.0, -1000.0).astype(np.float32)


@pytest.mark.parametrize("filter_name", ["hann", "ramp"])
def test_noise_in_uniform_phantom_matches_analytic_value(filter_name):
    """Water disk (200 mm) at its centre: the measured sigma of the added noise (3 realisations, 24 x 24 mm ROI)
    equals predicted_noise_sigma_hu for the stated geometry within 10 % (measured 1.007 hann, 1.035 ramp)."""
    geom = sim.ScanGeometry(n_views=1000, bin_mm=1.0, filter_name=filter_name)
    hu = _water_disk(256, 1.0)
    vol = np.stack([hu] * 3)
    out = simulate_ldct(vol, 1.0, 1e4, seed=1, geometry=geom)
    roi = (slice(None), slice(116, 140), slice(116, 140))
    measured = float(np.std((out - vol)[roi]))
    predicted = sim.predicted_noise_sigma_hu(sim.MU_WATER_PER_MM * 200.0, 1e4, geom)
    assert abs(measured / predicted - 1.0) < 0.10, (measured, predicted)


def test_noise_set_by_detector_not_by_pixel_size():
    """The same object at 1.0 and 0.5 mm pixels gets the same noise (bins are the scanner's, not the image's):
    measured 26.3 and 25.4 HU."""
    a_hu = _water_disk(256, 1.0)
    b_hu = _water_disk(512, 0.5)
    a = simulate_ldct_slice(a_hu, 1.0, 1e4, seed=2)
    b = simulate_ldct_slice(b_hu, 0.5, 1e4, seed=2)
    sa = float(np.std((a - a_hu)[116:140, 116:140]))
    sb = float(np.std((b - b_hu)[232:280, 232:280]))
    assert abs(sa / sb - 1.0) < 0.15, (sa, sb)


def test_ramp_filter_is_noisier_than_hann_and_geometry_is_validated():
    hu = phantom()
    hann = simulate_ldct_slice(hu, SPACING, 1e4, seed=4)
    ramp = simulate_ldct_slice(hu, SPACING, 1e4, seed=4, filter_name="ramp")
    assert 1.8 < (ramp - hu)[ROI].std() / (hann - hu)[ROI].std() < 4.0
    assert "1000 views" in sim.DEFAULT_GEOMETRY.describe() and "hann" in sim.DEFAULT_GEOMETRY.describe()
    for bad in (dict(n_views=1), dict(bin_mm=0.0), dict(bin_mm=float("nan")), dict(filter_name="gauss")):
        with pytest.raises(SimulationError):
            sim.ScanGeometry(**bad)


def test_soft_tissue_sigma_and_n0_for_target_sigma():
    hu = _water_disk(128, 2.0, diameter_mm=220.0)
    n0, sigma = sim.n0_for_noise_sigma(hu, 2.0, 40.0, seed=0)
    assert abs(sigma / 40.0 - 1.0) < 0.02 and n0 > 0
    ld = simulate_ldct_slice(hu, 2.0, n0, seed=0)
    assert abs(sim.soft_tissue_noise_sigma(hu, ld) - sigma) < 1e-6
    mask = sim.soft_tissue_mask(hu)
    assert mask.sum() > 0.5 * (hu > -500).sum() and not mask[hu < -500].any()
    with pytest.raises(SimulationError):
        sim.n0_for_noise_sigma(np.full((32, 32), -1000.0, np.float32), 2.0, 40.0)
    with pytest.raises(SimulationError):
        sim.n0_for_noise_sigma(hu, 2.0, -1.0)
