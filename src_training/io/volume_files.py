"""Volume files for :mod:`src_training.io`: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and
MetaImage (``.mha``, ``.mhd``) read and written through SimpleITK.

Reading: :func:`_load_volume_file` (called by :func:`~src_training.io.load_ct`) casts to float32 while
reading and shares SimpleITK's buffer (no second copy); NaN in a float NIfTI (which ITK silently turns into
0) is found by streaming the raw file. Writing: :func:`write_volume`, atomic (temporary file beside the
destination, then ``os.replace``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import CTLoadError, CTWriteError, OutputExistsError
from ._library import _QuietSitk, _short
from ._writing import _check_direction, _check_hu_array, _check_spacing, _fix_mode
from .volume import CTVolume, _check_finite


#: File name endings read as volumes (not DICOM) by :func:`load_ct`, lower case.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _is_volume_path(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _volume_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return "metaimage"


def _nifti_nonfinite_count(path: Path, chunk_bytes: int = 1 << 20) -> int:
    """Count NaN/Inf in the raw data of a float NIfTI-1/2 file, streaming it in chunks of ``chunk_bytes``.

    ITK's NIfTI reader silently turns NaN into 0, so the raw voxels are checked here (0 for integer data
    or a header this minimal parser does not understand; SimpleITK then reports real corruption). Memory
    use is one chunk, whatever the size of the file.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(540)
            if len(raw) < 348:
                return 0
            for endian in ("<", ">"):
                size = int(np.frombuffer(raw[:4], dtype=f"{endian}i4")[0])
                if size == 348:
                    dim = np.frombuffer(raw[40:56], dtype=f"{endian}i2").astype(np.int64)
                    datatype = int(np.frombuffer(raw[70:72], dtype=f"{endian}i2")[0])
                    offset = int(np.frombuffer(raw[108:112], dtype=f"{endian}f4")[0])
                    break
                if size == 540 and len(raw) >= 540:
                    datatype = int(np.frombuffer(raw[12:14], dtype=f"{endian}i2")[0])
                    dim = np.frombuffer(raw[16:80], dtype=f"{endian}i8").astype(np.int64)
                    offset = int(np.frombuffer(raw[168:176], dtype=f"{endian}i8")[0])
                    break
            else:
                return 0
            kinds = {16: "f4", 64: "f8"}
            if datatype not in kinds or not 1 <= dim[0] <= 7 or offset < len(raw) and offset < 348:
                return 0
            count = int(np.prod(dim[1 : dim[0] + 1]))
            dt = np.dtype(f"{endian}{kinds[datatype]}")
            if count <= 0 or offset < 0:
                return 0
            # position the stream at the voxel data
            if offset >= len(raw):
                fh.read(offset - len(raw))
                pending = b""
            else:
                pending = raw[offset:]
            n_bad, left = 0, count * dt.itemsize
            step = max(dt.itemsize, chunk_bytes - chunk_bytes % dt.itemsize)
            while left > 0:
                buf = pending + fh.read(min(step, left) - len(pending))
                pending = b""
                if not buf:
                    break  # truncated: SimpleITK reports it
                buf = buf[: len(buf) - len(buf) % dt.itemsize]
                data = np.frombuffer(buf, dtype=dt)
                n_bad += int(data.size - np.count_nonzero(np.isfinite(data)))
                left -= len(buf)
            return n_bad
    except (OSError, EOFError, ValueError):
        return 0


class _SitkBuffer:
    """Exposes a SimpleITK image's pixel buffer through ``__array_interface__`` and keeps the image alive,
    so ``np.asarray(_SitkBuffer(img))`` is a writable array sharing the image's memory (no copy)."""

    def __init__(self, img: sitk.Image):
        self._img = img
        view = sitk.GetArrayViewFromImage(img)  # read-only view, valid while img lives
        iface = dict(view.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface


def _load_volume_file(path: Path) -> CTVolume:
    fmt = _volume_format(path)
    if fmt == "nifti":
        n_bad = _nifti_nonfinite_count(path)
        if n_bad:
            raise CTLoadError(
                f"{path}: the volume contains {n_bad} NaN or infinite voxel(s). A CT volume must hold finite HU "
                "values; re-export it or fix the file."
            )
    def corrupt(exc: Exception) -> CTLoadError:
        return CTLoadError(
            f"Cannot read {path} as a {fmt} volume: the file is corrupt, truncated or not an image ({_short(exc)})."
        )

    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            n_comp, ndim = reader.GetNumberOfComponents(), reader.GetDimension()
        except Exception as exc:  # noqa: BLE001
            raise corrupt(exc) from exc
        if n_comp != 1:
            raise CTLoadError(
                f"{path} has {n_comp} values per voxel (colour/vector image); a CT volume has one HU value per voxel."
            )
        if ndim not in (2, 3):
            raise CTLoadError(f"{path} is a {ndim}-D image; only 2-D slices and 3-D volumes are supported.")
        try:
            reader.SetOutputPixelType(sitk.sitkFloat32)  # cast while reading: one float32 buffer
            img = reader.Execute()
        except Exception as exc:  # noqa: BLE001
            raise corrupt(exc) from exc
    hu = np.asarray(_SitkBuffer(img))
    meta: dict[str, Any] = {"source_path": str(path), "format": fmt}
    if img.GetDimension() == 2:
        hu = hu[None]
        sp = img.GetSpacing()
        spacing = (1.0, float(sp[1]), float(sp[0]))
        o = img.GetOrigin()
        origin = (float(o[0]), float(o[1]), 0.0)
        d = img.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        meta["warnings"] = [f"{path.name} is a 2-D image: loaded as a one-slice volume (z spacing 1 mm assumed)."]
    else:
        sp = img.GetSpacing()
        spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
        origin = tuple(float(v) for v in img.GetOrigin())
        direction = tuple(float(v) for v in img.GetDirection())
    if hu.size == 0:
        raise CTLoadError(f"{path} holds an empty image.")
    _check_finite(hu, str(path))
    meta["n_slices"] = int(hu.shape[0])
    for key in img.GetMetaDataKeys():
        if key in ("ITK_original_direction", "ITK_original_spacing"):
            continue
        try:
            val = img.GetMetaData(key)
        except Exception:  # noqa: BLE001
            continue
        if len(val) < 200:
            meta.setdefault("header", {})[key] = val
    return CTVolume(
        hu=hu,
        spacing=spacing,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=meta,
        source=str(path),
    )


def write_volume(
    hu: np.ndarray,
    path: str | os.PathLike,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a volume as NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``) or MetaImage (``.mha``), atomically.

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x)
        Float arrays are written as float32 (HU); integer arrays keep their dtype and bool becomes uint8
        (e.g. label maps).
    path : path-like
        Destination; the format follows the extension. ``.mhd`` is refused (two files cannot be replaced
        atomically; use ``.mha``). NRRD and MHA are compressed.
    spacing : (dz, dy, dx) mm
    origin : (x, y, z) mm, optional
        LPS position of the first voxel (SimpleITK order); default (0, 0, 0).
    direction : 9 floats, optional
        SimpleITK direction cosines; default identity.
    overwrite : bool
        Replace an existing file (atomically). Default False: an existing file is never replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CTWriteError
        Unknown extension, NaN/Inf, bad shape/spacing/direction, or the file cannot be written (the
        destination is then untouched).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing written).
    """
    path = Path(path)
    name = path.name.lower()
    ext = next((s for s in (".nii.gz", ".nii", ".nrrd", ".mha") if name.endswith(s)), None)
    if ext is None:
        raise CTWriteError(f"{path}: unsupported extension; use .nii, .nii.gz, .nrrd or .mha.")
    arr = _check_hu_array(hu, str(path))
    sp = _check_spacing(spacing, str(path))
    d = _check_direction(direction)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; nothing was written. Choose another file name, or ask to replace it "
            "(overwrite=True; CLI: --overwrite)."
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing((sp[2], sp[1], sp[0]))
    img.SetOrigin(tuple(float(v) for v in (origin if origin is not None else (0.0, 0.0, 0.0))))
    img.SetDirection(tuple(float(v) for v in d.ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(ext)]}.tmp-", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        with _QuietSitk():
            sitk.WriteImage(img, tmp, useCompression=ext in (".nrrd", ".mha", ".nii.gz"))
        _fix_mode(tmp)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise CTWriteError(f"Cannot write {path}: {_short(exc)}. The destination was not changed.") from exc
    return path
