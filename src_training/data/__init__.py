"""Training data of LIDnet: sources -> labelled volumes -> cases (NDCT + simulated LDCT + boxes) -> slices.

One concept per module:

- :mod:`~src_training.data.sources`: the only parser of training source strings (``sample:``, ``manifest:``,
  ``.npz``, CT path) -> :class:`LabeledVolume`; :func:`expand_sources` (manifest splits -> cases).
- :mod:`~src_training.data.cases`: :class:`CaseArrays`, :func:`prepare_case` (nodules and simulation on the
  native grid, then resampling), :func:`case_options` (the one map config -> data pipeline), :func:`prepare_cases`.
- :mod:`~src_training.data.slices`: :class:`SliceDataset`, :func:`crop_boxes`, :func:`collate_slices`.
- :mod:`~src_training.data.streaming`: :class:`StreamingSliceDataset` (memory-mapped slice caches).
- :mod:`~src_training.data.manifest`: the data set manifest (JSON layout, read/write, :func:`split_patients`).
- :mod:`~src_training.data.index`: ``lidnet dataset index`` (:func:`scan_series`, :func:`attach_annotations`,
  :func:`build_manifest`, :func:`index_dataset`).

Training data follow the paper (Chen et al., ACM MM 2021, arXiv:2104.08845, Sec. 4.1): LDCT simulated from
NDCT (Poisson noise at incident flux N0 in the projection domain), 2-D slices, lesion boxes as detection targets.
"""

from .cases import CaseArrays, case_options, prepare_case, prepare_cases, resample_slices
from .index import attach_annotations, build_manifest, detect_annotation_format, index_dataset, scan_series
from .manifest import (
    ANNOTATION_FORMATS,
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    SPLITS,
    SeriesRecord,
    read_manifest,
    split_patients,
    write_manifest,
)
from .slices import SliceDataset, Target, collate_slices, crop_boxes
from .sources import (
    SOURCE_KINDS,
    LabeledVolume,
    boxes_csv_for,
    expand_sources,
    load_manifest_case,
    load_source,
    manifest_case_sources,
    parse_manifest_source,
    source_files,
    source_kind,
)
from .streaming import CachedCase, StreamingSliceDataset

__all__ = [
    "ANNOTATION_FORMATS", "MANIFEST_FORMAT", "MANIFEST_VERSION", "SOURCE_KINDS", "SPLITS", "CachedCase",
    "CaseArrays", "LabeledVolume", "SeriesRecord", "SliceDataset", "StreamingSliceDataset", "Target",
    "attach_annotations", "boxes_csv_for", "build_manifest", "case_options", "collate_slices", "crop_boxes",
    "detect_annotation_format", "expand_sources", "index_dataset", "load_manifest_case", "load_source",
    "manifest_case_sources", "parse_manifest_source", "prepare_case", "prepare_cases", "read_manifest",
    "resample_slices", "scan_series", "source_files", "source_kind", "split_patients", "write_manifest",
]
