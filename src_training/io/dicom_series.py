"""DICOM series for :mod:`src_training.io`: the series of a folder (:func:`list_series`; found by
:mod:`~src_training.io.dicom_scan`) or of a list of selected files, choosing one (localizer (scout) series
skipped with a warning, damaged files named as the likely missing slices), and stacking its slices into one
volume.

Each file is parsed once (:func:`~src_training.io.dicom_header._parse_dicom`); localizer images inside the
series are dropped, the slices are ordered by increasing position along the slice normal ``row x column``,
checked to be one volume (same size and orientation; no duplicate, evenly spaced:
:func:`~src_training.io.slice_geometry.check_slice_positions`), a gantry tilt is corrected by shifting slices
in-plane, each slice is converted to HU with its own rescale (:mod:`~src_training.io.series_checks`), and the
pixels are decoded one slice at a time into one preallocated float32 array (or lazily, a dask array decoded
per slice); the middle slice is cross-checked against SimpleITK. Single DICOM files are loaded here too; a
multi-frame file (alone, or the only file of a series) goes to
:func:`~src_training.io.enhanced_ct.load_multiframe`. What is refused, corrected or reported:
docs/reliability.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pydicom

from ..errors import CTLoadError, MultipleSeriesError
from .dicom_files import is_dicom_directory_file
from .dicom_header import (
    _check_modality,
    _has_pixel_tag,
    _incomplete_image,
    _metadata_from_dataset,
    _n_frames,
    _numbers,
    _parse_dicom,
    _read_header,
    _slice_metadata,
    _transfer_syntax,
)
from .dicom_pixels import _check_decoder, _decode_slice, _sitk_slice_check
from .dicom_scan import Damaged, Scan, _scan_files, _scan_folder
from .enhanced_ct import load_multiframe
from .series_checks import _drop_localizers, _series_rescales
from .slice_geometry import check_slice_positions, stack_drift
from .volume import CTVolume, SeriesInfo


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """List the DICOM series in a folder (not recursive).

    Parameters
    ----------
    folder : path-like
        A folder with DICOM files (any file names; non-DICOM files are ignored). Legacy files without the
        128-byte preamble count (:func:`~src_training.io.is_dicom_file`); media directory files (DICOMDIR,
        DIRFILE) are never listed nor reported.

    Returns
    -------
    list of SeriesInfo
        One entry per SeriesInstanceUID found by SimpleITK/GDCM (``GetGDCMSeriesIDs``), then per series that
        only pydicom reads among the files GDCM left out, with description, modality and ImageType read by
        pydicom from the first file (``SeriesInfo.is_localizer`` marks scout series); empty when no DICOM
        series is found.

    Raises
    ------
    CTLoadError
        If ``folder`` does not exist or is not a folder.
    """
    return _scan_folder(folder, None).series


def _direction_from_iop(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and normal (row x column) directions of ImageOrientationPatient (PS3.3 C.7.6.2.1.1), row
    and column scaled to unit length when they are not degenerate (the caller checks the normal)."""
    r = np.asarray([float(v) for v in iop[:3]], dtype=np.float64)
    c = np.asarray([float(v) for v in iop[3:6]], dtype=np.float64)
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    if 0.5 < nr < 2 and 0.5 < nc < 2:
        r, c = r / nr, c / nc
    n = np.cross(r, c)
    return r, c, n


def _listing(series: Sequence[SeriesInfo]) -> str:
    return "\n".join(f"  - {s}" for s in series)


def _choose_series(scan: Scan, series_uid: str | None, root: str, warnings_out: list[str]) -> SeriesInfo:
    """The series to load from ``scan``: ``series_uid``'s, else the only image series (localizer series
    skipped with a warning).

    Raises
    ------
    MultipleSeriesError
        Several image series and no ``series_uid`` (``.series`` lists every series, localizers included).
    CTLoadError
        ``series_uid`` not found; it, or every series, is a localizer (scout).
    """
    series = scan.series
    if series_uid is not None:
        matches = [s for s in series if s.series_uid == series_uid]
        if not matches:
            raise CTLoadError(
                f"Series {series_uid} is not in {root}. Choose one of the series found:\n{_listing(series)}"
            )
        chosen = matches[0]
        if chosen.is_localizer:
            kind = "\\".join(chosen.image_type)
            raise CTLoadError(
                f"Series {series_uid} in {root} is a localizer (scout) series (ImageType {kind}): a 2-D "
                "overview used to plan the scan, not a CT volume. Choose the CT series of the same study."
            )
        return chosen
    images = [s for s in series if not s.is_localizer]
    scouts = [s for s in series if s.is_localizer]
    if not images:
        raise CTLoadError(
            f"{root} holds only localizer (scout) images: 2-D overviews used to plan the scan, not CT volumes. "
            f"Choose the folder of the CT series of the same study.\n{_listing(scouts)}"
        )
    if len(images) > 1:
        extra = f"\n  (and {len(scouts)} localizer (scout) series, not volumes)" if scouts else ""
        raise MultipleSeriesError(
            f"{root} holds {len(images)} DICOM series; choose one series:\n{_listing(images)}{extra}", series
        )
    for s in scouts:
        warnings_out.append(
            f"skipped localizer (scout) series {s.series_uid} '{s.description or '(no description)'}' "
            f"({s.n_files} file(s)): a 2-D overview, not part of the volume."
        )
    return images[0]


def _load_dicom_folder(
    folder: Path, series_uid: str | None, *, lazy: bool = False, on_slice_error: Callable | None = None
) -> CTVolume:
    parsed: dict[str, pydicom.Dataset] = {}  # files already parsed (path -> dataset), parsed once
    scan = _scan_folder(folder, parsed)
    if not scan.series:
        n_entries = sum(1 for _ in folder.iterdir())
        sub = [p.name for p in folder.iterdir() if p.is_dir()]
        hint = f" It has sub-folders ({', '.join(sorted(sub)[:5])}); choose the one with the images." if sub else ""
        if n_entries == 0:
            raise CTLoadError(f"The folder {folder} is empty. Choose the folder that holds the DICOM files.")
        dcm = [d for d in scan.damaged if Path(d.path).suffix.lower() == ".dcm"]
        if len(scan.damaged) == 1 and dcm:  # a lone damaged .dcm file: its own message
            _raise_unreadable(dcm[0].path)
        damaged = f" Damaged: {_names_of(scan.damaged)}." if scan.damaged else ""
        raise CTLoadError(
            f"No readable DICOM series in {folder} ({n_entries} entries inspected): the files are not DICOM "
            f"images or are corrupt.{damaged}{hint}"
        )
    return _load_scanned(scan, series_uid, str(folder), parsed, lazy=lazy, on_slice_error=on_slice_error)


def _load_dicom_files(
    paths: Sequence[str | os.PathLike], series_uid: str | None, *, lazy: bool = False,
    on_slice_error: Callable | None = None,
) -> CTVolume:
    """Several selected DICOM files -> one volume (their series; several series: ``series_uid`` chooses)."""
    files = list(dict.fromkeys(str(Path(p)) for p in paths))  # a file selected twice counts once
    parents = {str(Path(f).parent) for f in files}
    root = f"the selection of {len(files)} files" + (f" in {next(iter(parents))}" if len(parents) == 1 else "")
    parsed: dict[str, pydicom.Dataset] = {}
    scan = _scan_files(files, parsed)
    if not scan.series:
        if len(scan.damaged) == 1:
            _raise_unreadable(scan.damaged[0].path)
        what = (f": {_names_of(scan.damaged)}" if scan.damaged
                else " (only directory files or DICOM objects without images)")
        raise CTLoadError(
            f"No file of {root} is a readable DICOM image{what}. Choose the files of one CT series (or its folder)."
        )
    source = next(iter(parents)) if len(parents) == 1 else os.path.commonpath(files)
    return _load_scanned(scan, series_uid, root, parsed, lazy=lazy, on_slice_error=on_slice_error,
                         source=source)


def _raise_unreadable(path: str) -> None:
    """Raise the message of one file that cannot be read (not DICOM, or damaged)."""
    _read_header(path)  # raises the file's own message when pydicom cannot parse it
    raise CTLoadError(
        f"{path} holds no image: it has no pixel data (a DICOM object that is not an image, or an image file cut "
        f"inside its header, before its pixel data). Choose a CT image file or its folder, or re-export the series."
    )


def _names_of(damaged: Sequence[Damaged]) -> str:
    shown = ", ".join(str(d) for d in damaged[:5])
    return shown + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")


def _are_damaged(damaged: Sequence[Damaged]) -> str:
    """``"IM_5.dcm is damaged (cut inside its header)"`` / ``"A (...), B (...) are damaged"``."""
    if len(damaged) == 1:
        return f"{Path(damaged[0].path).name} is damaged ({damaged[0].reason})"
    return f"{_names_of(damaged)} are damaged"


def _load_scanned(
    scan: Scan, series_uid: str | None, root: str, parsed: dict[str, pydicom.Dataset], *, lazy: bool,
    on_slice_error: Callable | None, source: str | None = None,
) -> CTVolume:
    """Choose a series of ``scan``, name its damaged files, and load it (a lone multi-frame file too)."""
    warnings_out: list[str] = []
    chosen = _choose_series(scan, series_uid, root, warnings_out)
    where = f"series {chosen.series_uid} in {root}"
    own = [d for d in scan.damaged if d.series_uid == chosen.series_uid]
    if own:
        one = len(own) == 1
        raise CTLoadError(
            f"{where}: {_are_damaged(own)}: {'it is a slice' if one else 'they are slices'} of this series that "
            f"cannot be read. Re-export the series (or replace {'that file' if one else 'those files'} from a "
            "good copy)."
        )
    unknown = [d for d in scan.damaged if d.series_uid is None and d.maybe_slice]
    others = [d for d in scan.damaged if d.series_uid is None and not d.maybe_slice]
    try:
        if len(chosen.files) == 1 and _n_frames(_header_of(chosen.files[0], parsed)) > 1:
            f = chosen.files[0]
            vol = load_multiframe(Path(f), _header_of(f, parsed), where=where)
        else:
            vol = _load_series_files(chosen.files, where, source or root, lazy=lazy,
                                     on_slice_error=on_slice_error, parsed=parsed)
    except CTLoadError as exc:
        if not unknown:
            raise
        one = len(unknown) == 1
        if "missing slice" in str(exc):
            raise CTLoadError(
                f"{exc} {_are_damaged(unknown)} and {'is' if one else 'are'} probably the missing "
                f"slice{'' if one else 's'}: re-export the series, or replace {'that file' if one else 'those files'} "
                "from a good copy."
            ) from exc
        raise CTLoadError(f"{exc} (also found damaged: {_names_of(unknown)})") from exc
    vol.metadata.setdefault("warnings", [])
    vol.metadata["warnings"][:0] = warnings_out
    if unknown:
        one = len(unknown) == 1
        vol.metadata["warnings"].append(
            f"ignored {len(unknown)} damaged file(s) whose series cannot be read: {_names_of(unknown)}. If "
            f"{'it was a slice' if one else 'they were slices'} at either end of this series, "
            f"{'that slice is' if one else 'those slices are'} missing from the volume."
        )
    if others:
        vol.metadata["warnings"].append(f"ignored {len(others)} selected file(s) that are not DICOM: "
                                        f"{_names_of(others)}.")
    return vol


def _header_of(f: str, parsed: dict[str, pydicom.Dataset]) -> pydicom.Dataset:
    if f not in parsed:
        parsed[f] = _parse_dicom(f)
    return parsed[f]


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
    headers = _drop_localizers(headers, where, warnings_out)
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
        dz = check_slice_positions(pos, [f for f, _ in headers], where)
        # Gantry tilt: slice origins drift in-plane along the stack (the normal of the slices is not the
        # direction in which they are stacked). Corrected by shifting each slice back onto slice 0's column.
        tilted = stack_drift(ipp, pos, n, ps, where)
        if tilted is not None:
            inplane, tilt_deg = tilted
            drift = np.column_stack([inplane @ c / ps[0], inplane @ r / ps[1]])  # (rows, columns) pixels
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
    rescales = _series_rescales(headers, where, warnings_out)
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
        **_slice_metadata(datasets),
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
    if is_dicom_directory_file(path):
        raise CTLoadError(
            f"{path} is a DICOM directory file (DICOMDIR / DIRFILE): an index of the files of a CD or export, "
            "not an image. Open the folder that holds the image files instead."
        )
    ds = _parse_dicom(path)
    _check_modality(ds, str(path))
    if not _has_pixel_tag(str(path), ds):
        if _incomplete_image(ds) and ("Rows" not in ds or len(ds) == 0):
            _raise_unreadable(str(path))
        raise CTLoadError(
            f"{path} is a DICOM file without pixel data (not an image, or an image file cut before its pixel "
            "data). Choose an image file or folder."
        )
    if _n_frames(ds) > 1:
        return load_multiframe(path, ds)
    return _load_series_files([str(path)], str(path), str(path), fmt="dicom-file", lazy=lazy,
                              on_slice_error=on_slice_error, parsed={str(path): ds})
