"""DICOM series for :mod:`src_training.io`: finding the series of a folder (:func:`list_series`, via
SimpleITK/GDCM ``GetGDCMSeriesIDs``), choosing one, and stacking its slices into one volume.

Each file is parsed once (:func:`~src_training.io.dicom_header._parse_dicom`); the slices are ordered by
increasing position along the slice normal ``row x column``, checked to be one volume (same size and
orientation, no duplicate, evenly spaced: a missing slice is reported with its position), a gantry tilt is
corrected by shifting slices in-plane, and the pixels are decoded one slice at a time into one preallocated
float32 array (or lazily, a dask array decoded per slice); the middle slice is cross-checked against
SimpleITK. Single DICOM files (one slice, or a multi-frame file) are loaded here too. What is refused,
corrected or reported: docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk

from ..errors import CTLoadError, MultipleSeriesError
from ._library import _QuietSitk, _short
from .dicom_header import (
    _check_modality,
    _has_pixel_tag,
    _metadata_from_dataset,
    _n_frames,
    _numbers,
    _parse_dicom,
    _read_header,
    _transfer_syntax,
)
from .dicom_pixels import _check_decoder, _decode_slice, _rescale, _sitk_slice_check
from .volume import CTVolume, SeriesInfo, _check_finite


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """List the DICOM series in a folder (not recursive).

    Parameters
    ----------
    folder : path-like
        A folder with DICOM files (any file names; non-DICOM files are ignored).

    Returns
    -------
    list of SeriesInfo
        One entry per SeriesInstanceUID found by SimpleITK/GDCM (``GetGDCMSeriesIDs``), with description and
        modality read by pydicom (``dcmread(stop_before_pixels=True)``) from the first file; empty when no
        DICOM series is found.

    Raises
    ------
    CTLoadError
        If ``folder`` does not exist or is not a folder.
    """
    return _list_series(folder, None)


def _list_series(folder: str | os.PathLike, parsed: dict[str, pydicom.Dataset] | None) -> list[SeriesInfo]:
    """:func:`list_series`; when ``parsed`` is a dict, the first file of each series is parsed whole
    (:func:`_parse_dicom`) and kept there (path -> dataset) so that loading does not parse it again."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CTLoadError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of the series.")
    with _QuietSitk():
        try:
            uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(f"Cannot scan {folder} for DICOM series ({_short(exc)}).") from exc
        out: list[SeriesInfo] = []
        for uid in uids:
            try:
                files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            except Exception as exc:  # noqa: BLE001
                raise CTLoadError(f"Cannot list the files of series {uid} in {folder} ({_short(exc)}).") from exc
            description, modality = "", ""
            for f in files[:1]:
                try:
                    if parsed is None:
                        ds = pydicom.dcmread(f, stop_before_pixels=True)
                    else:
                        ds = parsed[str(f)] = _parse_dicom(f)
                    description = str(ds.get("SeriesDescription", "") or "")
                    modality = str(ds.get("Modality", "") or "")
                except Exception:  # noqa: BLE001 - reported when the series is loaded
                    pass
            out.append(SeriesInfo(uid, description, modality, len(files), files))
    return out


def _direction_from_iop(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray([float(v) for v in iop[:3]], dtype=np.float64)
    c = np.asarray([float(v) for v in iop[3:6]], dtype=np.float64)
    n = np.cross(r, c)
    return r, c, n


def _load_dicom_folder(
    folder: Path, series_uid: str | None, *, lazy: bool = False, on_slice_error: Callable | None = None
) -> CTVolume:
    parsed: dict[str, pydicom.Dataset] = {}  # files already parsed (path -> dataset), parsed once
    series = _list_series(folder, parsed)
    if not series:
        n_entries = sum(1 for _ in folder.iterdir())
        sub = [p.name for p in folder.iterdir() if p.is_dir()]
        hint = f" It has sub-folders ({', '.join(sorted(sub)[:5])}); choose the one with the images." if sub else ""
        if n_entries == 0:
            raise CTLoadError(f"The folder {folder} is empty. Choose the folder that holds the DICOM files.")
        # A lone corrupt .dcm file: give pydicom's reason.
        dcm = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
        for p in dcm[:1]:
            _read_header(p)
        raise CTLoadError(
            f"No readable DICOM series in {folder} ({n_entries} entries inspected): the files are not DICOM "
            f"images or are corrupt.{hint}"
        )
    if series_uid is None:
        if len(series) > 1:
            listing = "\n".join(f"  - {s}" for s in series)
            raise MultipleSeriesError(
                f"{folder} holds {len(series)} DICOM series; choose one (series_uid=...):\n{listing}", series
            )
        chosen = series[0]
    else:
        matches = [s for s in series if s.series_uid == series_uid]
        if not matches:
            listing = "\n".join(f"  - {s}" for s in series)
            raise CTLoadError(f"Series {series_uid} is not in {folder}. Series found:\n{listing}")
        chosen = matches[0]
    # Files GDCM left out of every series (truncated or corrupt DICOM files): those of this series are
    # loaded with it (pydicom then decodes them or names them); unreadable ones are reported in the warnings / the error.
    listed = {os.path.abspath(f) for s in series for f in s.files}
    unreadable: list[str] = []
    extra: list[str] = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or os.path.abspath(p) in listed:
            continue
        if not (p.suffix.lower() in (".dcm", ".ima", ".dicom") or pydicom.misc.is_dicom(p)):
            continue
        try:
            ds = _parse_dicom(p)
        except Exception:  # noqa: BLE001
            unreadable.append(p.name)
            continue
        if not ds.get("SeriesInstanceUID", None):  # cut before its identifiers
            unreadable.append(p.name)
        elif str(ds.SeriesInstanceUID) == chosen.series_uid and "Rows" in ds:
            extra.append(str(p))
            parsed[str(p)] = ds
    where = f"series {chosen.series_uid} in {folder}"
    try:
        vol = _load_series_files(
            list(chosen.files) + extra, where, str(folder), lazy=lazy, on_slice_error=on_slice_error, parsed=parsed
        )
    except CTLoadError as exc:
        if unreadable:
            raise CTLoadError(
                f"{exc} ({len(unreadable)} file(s) of the folder are not readable DICOM and may be the missing "
                f"slices: {', '.join(unreadable[:5])})"
            ) from exc
        raise
    if unreadable:
        vol.metadata["warnings"].append(
            f"ignored {len(unreadable)} unreadable DICOM file(s): {', '.join(unreadable[:5])}"
        )
    return vol


def _load_series_files(
    files: Sequence[str],
    where: str,
    source: str,
    *,
    fmt: str = "dicom-series",
    lazy: bool = False,
    on_slice_error: Callable | None = None,
    parsed: dict[str, pydicom.Dataset] | None = None,
) -> CTVolume:
    # Each file is parsed once (pixel data deferred); ``parsed`` holds those already parsed while listing.
    parsed = parsed or {}
    headers = [(str(f), parsed[str(f)] if str(f) in parsed else _parse_dicom(f)) for f in files]
    warnings_out: list[str] = []
    _check_modality(headers[0][1], where)
    for k, (f, ds) in enumerate(headers):
        _check_modality(ds, f)
        # (a file with Rows but without PixelData further on is named when its pixels are decoded)
        if "Rows" not in ds or (k == 0 and not _has_pixel_tag(f, ds)):
            raise CTLoadError(f"{f} has no pixel data (not an image). Remove it from the folder.")
        spp = int(_numbers(ds, "SamplesPerPixel", 1, f))
        if spp != 1:
            raise CTLoadError(
                f"{f} is a colour image ({spp} samples per pixel, {ds.get('PhotometricInterpretation', '?')}), "
                "e.g. a screenshot or secondary capture; a CT slice has one grey value (HU) per pixel."
            )
        if _n_frames(ds) > 1 and len(headers) > 1:
            raise CTLoadError(
                f"{where}: {f} holds {_n_frames(ds)} frames; multi-frame files in a series are not supported "
                "(load that single file instead)."
            )
        _check_decoder(_transfer_syntax(ds), f)
    # Exact copies of a file (same SOPInstanceUID) are kept once.
    seen: dict[str, str] = {}
    unique = []
    for f, ds in headers:
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            warnings_out.append(f"{Path(f).name} is a copy of {Path(seen[sop]).name} (same SOPInstanceUID): ignored.")
            continue
        if sop:
            seen[sop] = f
        unique.append((f, ds))
    headers = unique
    # Consistent slice size and orientation.
    sizes = {(int(_numbers(ds, "Rows", 0, f)), int(_numbers(ds, "Columns", 0, f))) for f, ds in headers}
    if len(sizes) > 1:
        raise CTLoadError(f"{where}: the slices have different sizes {sorted(sizes)}; this is not one CT volume.")
    ny, nx = next(iter(sizes))
    if ny < 1 or nx < 1:
        raise CTLoadError(f"{where}: Rows/Columns missing or zero in {headers[0][0]}; not an image.")
    have_geom = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers)
    shifts: list[tuple[float, float] | None] = [None] * len(headers)
    f0, ds0 = headers[0]
    if "PixelSpacing" not in ds0:
        warnings_out.append("PixelSpacing absent: 1 mm pixels assumed (distances and areas are then not in mm).")
    ps = _numbers(ds0, "PixelSpacing", [1.0, 1.0], f0, n=2, positive=True)
    tilt_tag = _numbers(ds0, "GantryDetectorTilt", 0.0, f0)
    if have_geom:
        iop0 = np.asarray(_numbers(ds0, "ImageOrientationPatient", None, f0, n=6))
        ipp = np.asarray([_numbers(ds, "ImagePositionPatient", None, f, n=3) for f, ds in headers], dtype=np.float64)
        iops = [np.asarray(_numbers(ds, "ImageOrientationPatient", None, f, n=6)) for f, ds in headers]
        if iop0.size != 6 or ipp.shape[1:] != (3,) or not (np.all(np.isfinite(iop0)) and np.all(np.isfinite(ipp))):
            raise CTLoadError(f"{where}: ImagePositionPatient/ImageOrientationPatient are malformed in {headers[0][0]}.")
        for (f, _), iop in zip(headers[1:], iops[1:]):
            if iop.size != 6 or np.max(np.abs(iop - iop0)) > 1e-3:
                raise CTLoadError(f"{where}: {f} has a different ImageOrientationPatient; this is not one volume.")
        r, c, n = _direction_from_iop(iop0)
        if np.linalg.norm(n) < 0.5:
            raise CTLoadError(f"{where}: ImageOrientationPatient {list(iop0)} is degenerate (rows parallel to columns).")
        n = n / np.linalg.norm(n)
        pos = ipp @ n
        order = np.argsort(pos, kind="stable")
        headers = [headers[i] for i in order]
        pos = pos[order]
        ipp = ipp[order]
    else:
        inst = [_numbers(ds, "InstanceNumber", None, f) for f, ds in headers]
        if len(headers) > 1 and (any(v is None for v in inst) or len(set(inst)) != len(inst)):
            raise CTLoadError(
                f"{where}: the files have no ImagePositionPatient and their InstanceNumbers are missing or repeated, "
                "so the slice order is unknown. Re-export the series with its geometry tags."
            )
        headers = [headers[i] for i in np.argsort([v or 0 for v in inst], kind="stable")]
        r, c, n = np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0, 1])
        pos = None
        if len(headers) > 1:
            warnings_out.append("no ImagePositionPatient: slices ordered by InstanceNumber, spacing from SliceThickness.")
    first = headers[0][1]
    dz = _numbers(first, "SpacingBetweenSlices", 0.0, headers[0][0]) if len(headers) == 1 else 0.0
    dz = dz if dz > 0 else _numbers(first, "SliceThickness", 1.0, headers[0][0])
    if not dz > 0:
        warnings_out.append(f"SliceThickness {dz:g} mm is not positive: 1 mm assumed.")
        dz = 1.0
    tilt_deg = 0.0
    if pos is not None and len(pos) > 1:
        diffs = np.diff(pos)
        dup = np.nonzero(diffs < 1e-3)[0]
        if dup.size:
            i = int(dup[0])
            raise CTLoadError(
                f"{where}: {headers[i][0]} and {headers[i + 1][0]} are at the same position {pos[i]:.2f} mm along "
                "the slice normal (duplicated slice, or two series sharing a SeriesInstanceUID). Remove the "
                "duplicate or load the series from a clean export."
            )
        dz = float(np.median(diffs))
        bad = np.nonzero(np.abs(diffs - dz) > max(0.1 * dz, 0.01))[0]
        if bad.size:
            i = int(bad[0])
            n_missing = int(round(diffs[i] / dz)) - 1
            if n_missing >= 1 and abs(diffs[i] - dz * (n_missing + 1)) <= max(0.1 * dz, 0.01):
                expected = ", ".join(f"{pos[i] + dz * (j + 1):.2f}" for j in range(min(n_missing, 5)))
                what = f"about {n_missing} missing slice(s) (expected at {expected} mm)"
                todo = "Load the complete series (all files) and try again."
            else:
                what = "uneven slice spacing"
                todo = ("Slices are not resampled to an even grid; load a series reconstructed with constant "
                        "spacing (or one of its parts).")
            raise CTLoadError(
                f"{where}: gap of {diffs[i]:.2f} mm between slice positions {pos[i]:.2f} mm "
                f"({Path(headers[i][0]).name}) and {pos[i + 1]:.2f} mm ({Path(headers[i + 1][0]).name}) where the "
                f"spacing is {dz:.2f} mm elsewhere: {what}. {todo}"
            )
        # Gantry tilt: slice origins drift in-plane along the stack (the normal of the slices is not the
        # direction in which they are stacked). Corrected by shifting each slice back onto slice 0's column.
        off = ipp - ipp[0]
        inplane = off - np.outer(off @ n, n)
        drift = np.column_stack([inplane @ c / ps[0], inplane @ r / ps[1]])  # (rows, columns) pixels
        if np.max(np.abs(inplane)) > max(0.01, 0.01 * min(ps)):
            along = pos - pos[0]
            per_mm = np.linalg.lstsq(along[:, None], inplane, rcond=None)[0][0]
            if np.max(np.abs(inplane - np.outer(along, per_mm))) > max(0.05, 0.1 * min(ps)):
                raise CTLoadError(
                    f"{where}: the slice positions (ImagePositionPatient) do not lie on a straight line; the slices "
                    "cannot be stacked into one volume. Re-export the series."
                )
            tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
            # slice k's pixel (i, j) lies where slice 0's grid has (i + drift_r, j + drift_c): shift by +drift
            shifts = [(float(d[0]), float(d[1])) for d in drift]
            warnings_out.append(
                f"gantry tilt of {tilt_deg:.1f} deg (GantryDetectorTilt {tilt_tag:g}): slices shifted in-plane onto an "
                "orthogonal grid (linear interpolation; voxels from outside the scan set to -1024 HU)."
            )
    elif abs(tilt_tag) > 1e-3 and pos is None:
        raise CTLoadError(
            f"{where}: GantryDetectorTilt is {tilt_tag:g} deg and ImagePositionPatient is missing, so the tilt cannot "
            "be corrected. Re-export the series with its geometry tags."
        )
    sorted_files = [f for f, _ in headers]
    rescales = [_rescale(ds, f, warnings_out) for f, ds in headers]
    nz = len(sorted_files)
    mid = nz // 2
    ts_mid = _transfer_syntax(headers[mid][1])
    datasets = [ds for _, ds in headers]
    mid_slice = _decode_slice(sorted_files[mid], (ny, nx), *rescales[mid], shifts[mid], ds=datasets[mid])
    status = _sitk_slice_check(
        sorted_files[mid],
        mid_slice if shifts[mid] is None
        else _decode_slice(sorted_files[mid], (ny, nx), *rescales[mid], None, ds=datasets[mid]),
        *rescales[mid], ts_mid, where,
    )
    if lazy:
        hu = _lazy_stack(sorted_files, (ny, nx), rescales, shifts, mid, mid_slice, on_slice_error)
    else:
        hu = np.empty((nz, ny, nx), dtype=np.float32)
        for k, f in enumerate(sorted_files):
            if k == mid:
                hu[k] = mid_slice
            else:
                _decode_slice(f, (ny, nx), *rescales[k], shifts[k], out=hu[k], ds=datasets[k])
    del mid_slice
    origin = tuple(float(v) for v in ipp[0]) if have_geom else (0.0, 0.0, 0.0)
    direction = (r[0], c[0], n[0], r[1], c[1], n[1], r[2], c[2], n[2])
    meta = _metadata_from_dataset(first)
    meta.update(
        source_path=source,
        format=fmt,
        n_slices=nz,
        hu_check=status,
        files=list(sorted_files),
        warnings=warnings_out,
    )
    if tilt_deg:
        meta["gantry_tilt_corrected_deg"] = tilt_deg
    if ny * nx * nz and len(headers) == 1:
        meta["warnings"].append("single slice: loaded as a one-slice volume.")
    return CTVolume(
        hu=hu,
        spacing=(float(dz), float(ps[0]), float(ps[1])),
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=meta,
        source=source,
    )


def _lazy_stack(files, shape, rescales, shifts, mid, mid_slice, on_slice_error):
    """A dask array (z, y, x) float32 with one chunk per slice, decoded by :func:`_decode_slice` on use."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask comes with napari
        raise CTLoadError("Lazy loading needs dask (pip install dask); load the volume without lazy=True.") from exc

    def read(k: int) -> np.ndarray:
        try:
            return _decode_slice(files[k], shape, *rescales[k], shifts[k])
        except CTLoadError as exc:
            if on_slice_error is None:
                raise
            on_slice_error(exc)
            return np.full(shape, -1024.0, dtype=np.float32)

    slices = [
        da.from_array(mid_slice, chunks=shape) if k == mid
        else da.from_delayed(dask.delayed(read, pure=True)(k), shape=shape, dtype=np.float32)
        for k in range(len(files))
    ]
    return da.stack(slices)


def _load_dicom_file(path: Path, *, lazy: bool = False, on_slice_error: Callable | None = None) -> CTVolume:
    ds = _parse_dicom(path)
    _check_modality(ds, str(path))
    if not _has_pixel_tag(str(path), ds):
        raise CTLoadError(f"{path} is a DICOM file without pixel data (not an image). Choose an image file or folder.")
    if _n_frames(ds) <= 1:
        return _load_series_files([str(path)], str(path), str(path), fmt="dicom-file", lazy=lazy,
                                  on_slice_error=on_slice_error, parsed={str(path): ds})
    return _load_multiframe_file(path, ds)


def _load_multiframe_file(path: Path, ds: pydicom.Dataset) -> CTVolume:
    """A multi-frame DICOM file: pixels decoded by pydicom frame by frame, geometry from SimpleITK."""
    from pydicom.pixels import iter_pixels

    spp = int(_numbers(ds, "SamplesPerPixel", 1, path))
    if spp != 1:
        raise CTLoadError(f"{path} is a colour image ({spp} samples per pixel); a CT has one HU value per pixel.")
    _check_decoder(_transfer_syntax(ds), path)
    warnings_out: list[str] = []
    slope, inter = _rescale(ds, path, warnings_out)
    nz, ny, nx = _n_frames(ds), int(_numbers(ds, "Rows", 0, path)), int(_numbers(ds, "Columns", 0, path))
    if ny < 1 or nx < 1:
        raise CTLoadError(f"{path}: Rows/Columns missing or zero; not an image.")
    hu = np.empty((nz, ny, nx), dtype=np.float32)
    try:
        k = -1
        for k, frame in enumerate(iter_pixels(str(path))):
            if k >= nz or frame.shape != (ny, nx):
                raise ValueError(f"frame {k} has shape {frame.shape}, expected {(ny, nx)}")
            np.multiply(frame, np.float32(slope), out=hu[k], casting="unsafe")
            hu[k] += np.float32(inter)
        if k != nz - 1:
            raise ValueError(f"{k + 1} frames decoded, NumberOfFrames is {nz}")
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(f"Cannot decode the pixels of {path}: the file is corrupt or truncated ({_short(exc)}).") from exc
    _check_finite(hu, str(path))
    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            sp, o, d = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
        except Exception:  # noqa: BLE001 - geometry unknown: identity, reported
            sp, o, d = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
            warnings_out.append("geometry of the multi-frame file unknown: 1 mm voxels assumed.")
    if len(sp) < 3:
        sp, o, d = (*sp, 1.0), (*o, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    meta = _metadata_from_dataset(ds)
    meta.update(source_path=str(path), format="dicom-file", n_slices=nz, hu_check="skipped (multi-frame file)",
                warnings=warnings_out)
    return CTVolume(
        hu=hu,
        spacing=(float(sp[2]), float(sp[1]), float(sp[0])),
        origin=tuple(float(v) for v in o),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in d),
        metadata=meta,
        source=str(path),
    )
