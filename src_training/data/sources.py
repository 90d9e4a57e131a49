"""Training sources -> one labelled volume: the only place that parses a source string.

A training or evaluation source (``TrainConfig.train_data`` entries) is one of

- ``"sample:<case>"``: a bundled sample case (:func:`src_training.sample.load_sample_case`);
- ``"manifest:PATH#train"`` (``#val``, ``#test``, ``#all``; no fragment = ``#train``) or one case
  ``"manifest:PATH#case=<id>"`` of a data set manifest written by ``lidnet dataset index``
  (:mod:`src_training.data.manifest`);
- an ``.npz`` with ``hu (z,y,x)``, ``spacing (3,)``, ``boxes (n,5: slice,x0,y0,x1,y1)``;
- a CT path (DICOM folder/file, NIfTI/NRRD/MHA) with its boxes in ``boxes.csv`` inside the folder or
  ``<file>.boxes.csv`` beside the file.

:func:`source_kind` names the kind, :func:`load_source` returns a :class:`LabeledVolume`,
:func:`expand_sources` replaces manifest splits by their cases, :func:`source_files` lists the files a source
reads (cache keys).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..annotations import SliceAnnotations, read_boxes_csv
from ..errors import ConfigError, CTLoadError, LidnetError
from ..io import load_ct
from ..sample import load_sample_case
from .manifest import SPLITS, read_manifest

SOURCE_KINDS = ("sample", "manifest", "npz", "path")


class LabeledVolume(NamedTuple):
    """One NDCT volume with its lesion boxes, as every training source resolves to.

    A named tuple, so ``hu, spacing, boxes = load_source(src)`` unpacks it.

    Attributes
    ----------
    hu : ndarray float32 (z, y, x)
        Normal-dose CT in HU.
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in mm.
    boxes : dict int -> ndarray float32 (n, 4)
        Lesion boxes ``xyxy`` in pixels per slice index (slices without lesions absent; every box is a lesion).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    boxes: dict[int, np.ndarray]


def source_kind(source: str) -> str:
    """The kind of a source string: ``"sample"``, ``"manifest"``, ``"npz"`` or ``"path"`` (see the module
    docstring). Prefixes are case-insensitive; nothing is read."""
    low = str(source).strip().lower()
    if low.startswith("manifest:"):
        return "manifest"
    if low.startswith("sample:"):
        return "sample"
    if low.endswith(".npz"):
        return "npz"
    return "path"


def _boxes_from_rows(rows: np.ndarray, where: str) -> dict[int, np.ndarray]:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return {}
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise CTLoadError(f"{where}: 'boxes' must be an (n, 5) array of slice,x0,y0,x1,y1; got shape {rows.shape}.")
    out: dict[int, list] = {}
    for r in rows:
        if not float(r[0]).is_integer():
            raise CTLoadError(f"{where}: box slice index {r[0]} is not an integer.")
        out.setdefault(int(r[0]), []).append(r[1:5])
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _load_npz(path: Path) -> tuple[np.ndarray, tuple[float, float, float], dict[int, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "hu" not in data:
                raise CTLoadError(f"{path} has no 'hu' array; a training .npz needs hu (z,y,x), spacing (3,), boxes (n,5).")
            hu = np.asarray(data["hu"], dtype=np.float32)
            spacing = tuple(float(s) for s in np.asarray(data["spacing"]).reshape(-1)) if "spacing" in data else (1.0, 1.0, 1.0)
            rows = np.asarray(data["boxes"]) if "boxes" in data else np.zeros((0, 5))
    except CTLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors
        raise CTLoadError(f"Cannot read training file {path}: {exc}") from exc
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3 or not np.all(np.isfinite(hu)):
        raise CTLoadError(f"{path}: 'hu' must be a finite (z, y, x) HU array, got shape {hu.shape}.")
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise CTLoadError(f"{path}: 'spacing' must hold 3 positive values (z, y, x) in mm, got {spacing}.")
    return hu, spacing, _boxes_from_rows(rows, str(path))


def boxes_csv_for(path: str | os.PathLike) -> Path:
    """Where the boxes CSV of a CT source is expected: ``<folder>/boxes.csv`` or ``<file>.boxes.csv``."""
    p = Path(path)
    return p / "boxes.csv" if p.is_dir() else p.with_name(p.name + ".boxes.csv")




def load_source(source: str, *, require_boxes: bool = True) -> LabeledVolume:
    """Load a training source string as a :class:`LabeledVolume` (NDCT HU (z,y,x) float32, spacing (z,y,x) mm,
    boxes per slice).

    Parameters
    ----------
    source : str
        ``"sample:<case>"``, an ``.npz``, a CT path with a boxes CSV beside it, or a data set manifest case
        ``"manifest:PATH#case=<id>"`` (:func:`load_manifest_case`; a split source ``"manifest:PATH#train"``
        is accepted by :func:`src_training.data.cases.prepare_cases`, which expands it with
        :func:`expand_sources`, and here only when the split holds one case). See the module docstring.
    require_boxes : bool
        Raise if a CT path has no boxes CSV (LIDnet needs lesion boxes); otherwise return no boxes.

    Raises
    ------
    ConfigError
        Unknown sample name, or no boxes CSV while ``require_boxes``.
    CTLoadError
        Unreadable CT / npz, invalid boxes.
    """
    source = str(source).strip()
    kind = source_kind(source)
    if kind == "manifest":
        return load_manifest_case(source)
    if kind == "sample":
        name = source.split(":", 1)[1].strip()
        try:
            case = load_sample_case(name)
        except LidnetError:
            raise
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"Unknown sample case '{name}' in train_data ({exc}).") from exc
        vol = case.ndct
        boxes = {int(k): np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in (case.boxes or {}).items()}
        return LabeledVolume(np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing), boxes)
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            f"Training source '{source}' not found. Use 'sample:<case>', a CT folder/file with boxes.csv beside it, "
            f"or an .npz with hu, spacing, boxes."
        )
    if path.suffix.lower() == ".npz":
        return LabeledVolume(*_load_npz(path))
    vol = load_ct(path)
    csv_path = boxes_csv_for(path)
    if csv_path.is_file():
        boxes = read_boxes_csv(csv_path, shape=vol.hu.shape)
    elif require_boxes:
        raise ConfigError(
            f"No lesion boxes for training source {path}: expected {csv_path} (header slice,x0,y0,x1,y1,label). "
            f"Draw boxes in the plugin and save them there, or set synthetic_nodules_per_slice > 0."
        )
    else:
        boxes = {}
    return LabeledVolume(np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing), boxes)


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Training sources with every ``manifest:PATH#split`` replaced by its cases
    (``manifest:PATH#case=<id>``, :func:`manifest_case_sources`); other sources unchanged, order kept.

    Raises
    ------
    ConfigError
        Unreadable manifest or an empty split.
    """
    out: list[str] = []
    for src in sources:
        if source_kind(src) == "manifest":
            out.extend(manifest_case_sources(str(src).strip()))
        else:
            out.append(str(src))
    return out


def source_files(source: str) -> list[Path]:
    """The files a source reads, for cache keys: the manifest of a ``manifest:`` source, the CT path and its
    boxes CSV of a path source (only the path when it does not exist), nothing for a bundled sample."""
    kind = source_kind(source)
    if kind == "manifest":
        return [parse_manifest_source(source)[0]]
    if kind == "sample":
        return []
    p = Path(str(source).strip()).expanduser()
    return [p, boxes_csv_for(p)] if p.exists() else [p]


def parse_manifest_source(source: str) -> tuple[Path, str, Optional[str]]:
    """Split ``"manifest:PATH[#train|#val|#test|#all|#case=ID]"`` into (path, split, case id or None).

    No fragment means ``train``. Raises :class:`ConfigError` on anything else.
    """
    body = str(source).strip()[len("manifest:"):]
    path, _, frag = body.partition("#")
    frag = frag.strip() or "train"
    if not path.strip():
        raise ConfigError(f"Training source {source!r}: give the manifest path, e.g. manifest:/data/ds.json#train.")
    if frag.startswith("case="):
        return Path(path.strip()).expanduser(), "case", frag[5:]
    if frag not in (*SPLITS, "all"):
        raise ConfigError(f"Training source {source!r}: after '#' use train, val, test, all or case=<id>.")
    return Path(path.strip()).expanduser(), frag, None


def manifest_case_sources(source: str) -> list[str]:
    """One ``manifest:PATH#case=<id>`` source per case of the split named in ``source``.

    Raises
    ------
    ConfigError
        Bad manifest, or the split holds no case.
    """
    path, split, case = parse_manifest_source(source)
    if split == "case":
        return [str(source).strip()]
    doc = read_manifest(path)
    ids = [c["id"] for c in doc["cases"] if split == "all" or c["split"] == split]
    if not ids:
        raise ConfigError(f"{path}: the '{split}' split holds no case (choose another split or re-index).")
    return [f"manifest:{path}#case={i}" for i in ids]


def load_manifest_case(source: str) -> LabeledVolume:
    """Load one case ``manifest:PATH#case=<id>``: NDCT HU ``(z, y, x)`` float32, spacing ``(z, y, x)`` mm,
    boxes per slice (``(n, 4)`` float32 xyxy pixels; labels are not kept: every box is a lesion).

    The series is read with :func:`src_training.io.load_ct` from ``root / series_path`` (SeriesInstanceUID
    chosen for DICOM folders).

    Raises
    ------
    ConfigError
        Unknown case id, or the series' size differs from the manifest (re-index).
    CTLoadError
        Unreadable series.
    """
    path, split, case_id = parse_manifest_source(source)
    doc = read_manifest(path)
    if split != "case":
        ids = manifest_case_sources(source)
        if len(ids) != 1:
            raise ConfigError(
                f"{source} names {len(ids)} cases; use prepare_cases (or one source per case, '#case=<id>')."
            )
        _, _, case_id = parse_manifest_source(ids[0])
    case = next((c for c in doc["cases"] if c["id"] == case_id), None)
    if case is None:
        raise ConfigError(f"{path} has no case '{case_id}'.")
    root = Path(doc.get("root") or path.parent)
    if not root.is_absolute():
        root = path.parent / root
    series = root / case["series_path"]
    uid = case.get("series_uid") if case.get("kind") == "dicom" else None
    vol = load_ct(series, series_uid=uid)
    if list(vol.hu.shape) != [int(v) for v in case["shape"]]:
        raise ConfigError(
            f"{series}: the series is {tuple(vol.hu.shape)} but the manifest {path} says {tuple(case['shape'])}; "
            "the data changed since indexing: run 'lidnet dataset index' again."
        )
    ann = SliceAnnotations.from_rows(case["boxes"], where=f"{path}, case {case_id}")
    return LabeledVolume(np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing),
                         ann.boxes)  # type: ignore[arg-type]

