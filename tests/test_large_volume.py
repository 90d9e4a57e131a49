"""Memory behaviour of the loaders on a modest volume (256 x 256 x 64, 16 MiB as float32).

``load_ct`` decodes DICOM slice by slice into one preallocated float32 array: the peak of Python/numpy
allocations (tracemalloc) stays within 1.3 x one float32 copy of the volume. Volume files share
SimpleITK's float32 buffer (numpy allocates no copy; ITK's own buffer is invisible to tracemalloc). The
napari reader returns a lazy dask array above its threshold and then decodes only the slices shown.
benchmarks/large_volume.py measures the same on 512 x 512 x 600.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from src_training.io import load_ct, write_dicom_series, write_volume

SHAPE = (64, 256, 256)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    rng = np.random.default_rng(0)
    hu = rng.integers(-1024, 2000, size=SHAPE).astype(np.int16)
    folder = tmp_path_factory.mktemp("big") / "series"
    write_dicom_series(hu, folder, spacing=(1.0, 0.7, 0.7), series_description="memory test",
                       image_type=("ORIGINAL", "PRIMARY"))
    return folder, hu


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_dicom_series_peak_memory_one_float32_copy(series):
    folder, hu = series
    vol, peak = _peak(lambda: load_ct(folder))
    one = np.prod(SHAPE) * 4
    assert vol.hu.dtype == np.float32 and vol.hu.shape == SHAPE
    np.testing.assert_array_equal(vol.hu, hu.astype(np.float32))
    assert peak <= 1.3 * one, f"peak {peak / 2**20:.1f} MiB for a {one / 2**20:.1f} MiB volume"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_volume_file_shares_sitk_buffer(tmp_path, series, suffix):
    _, hu = series
    p = write_volume(hu.astype(np.float32), tmp_path / f"v{suffix}", (1.0, 0.7, 0.7))
    vol, peak = _peak(lambda: load_ct(p))
    one = np.prod(SHAPE) * 4
    np.testing.assert_array_equal(vol.hu, hu.astype(np.float32))
    assert not vol.hu.flags.owndata and vol.hu.flags.writeable  # SimpleITK's buffer, no numpy copy
    assert peak <= 0.5 * one, f"numpy-side peak {peak / 2**20:.1f} MiB"  # NaN scan streams 4 MiB chunks
    vol.hu[0, 0, 0] = 5.0  # writable and stays valid after the SimpleITK image went out of scope
    assert float(vol.hu[0, 0, 0]) == 5.0


def test_reader_returns_lazy_array_above_threshold(series, monkeypatch):
    pytest.importorskip("napari")
    import napari_lidnet._reader as rd
    import src_training.io.dicom_series as series_loader  # where the loader calls _decode_slice

    folder, hu = series
    [(eager, _, _)] = rd.read_ct(str(folder))
    assert isinstance(eager, np.ndarray)  # 16 MiB < 512 MiB threshold
    monkeypatch.setattr(rd, "LAZY_THRESHOLD_BYTES", 8 * 2**20)
    calls = []
    real = series_loader._decode_slice
    monkeypatch.setattr(series_loader, "_decode_slice", lambda f, *a, **k: (calls.append(f), real(f, *a, **k))[1])
    [(lazy, kw, kind)] = rd.read_ct(str(folder))
    assert type(lazy).__module__.startswith("dask") and lazy.shape == SHAPE and lazy.dtype == np.float32
    n_open = len(calls)
    assert n_open <= 2  # only the middle slice (HU cross-check) was decoded to open it
    np.testing.assert_array_equal(np.asarray(lazy[10]), hu[10].astype(np.float32))
    assert len(calls) == n_open + 1  # showing one slice decodes one slice
    np.testing.assert_array_equal(np.asarray(lazy), eager)


def test_viewer_opens_lazy_series(series, monkeypatch, make_napari_viewer, lidnet_manifest):
    """napari takes the lazy (dask) layer from the reader: the layer is added and a slice is shown."""
    pytest.importorskip("napari")
    import napari_lidnet._reader as rd

    folder, hu = series
    monkeypatch.setattr(rd, "LAZY_THRESHOLD_BYTES", 8 * 2**20)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(folder), plugin="napari-lidnet")
    assert type(layer.data).__module__.startswith("dask") and layer.data.shape == SHAPE
    viewer.dims.set_point(0, 5 * layer.scale[0])
    np.testing.assert_array_equal(np.asarray(layer.data[5]), hu[5].astype(np.float32))
    # contrast limits come from the CT window (soft tissue 400/40 here), not from scanning the lazy data
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)
