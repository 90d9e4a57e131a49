"""Slice datasets for training: (LDCT, NDCT, lesion boxes) triplets as tensors.

:class:`SliceDataset` serves every axial slice of one or more :class:`~src_training.data.cases.CaseArrays`
(slices with and without lesions) as ``(ldct (1,H,W), ndct (1,H,W), target)`` tensors on the networks'
[0, 1] scale, optionally as random crops; :func:`collate_slices` batches them for the denoiser and the
torchvision Faster R-CNN detector. :class:`src_training.data.streaming.StreamingSliceDataset` serves the same
items from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..windowing import DEFAULT_HU_RANGE, hu_to_unit
from .cases import CaseArrays

Target = dict[str, torch.Tensor]



def crop_boxes(
    boxes: np.ndarray, x0: int, y0: int, size_x: int, size_y: int, min_fraction: float = 0.5
) -> np.ndarray:
    """Boxes of a crop ``[x0, x0+size_x) x [y0, y0+size_y)``: kept when at least ``min_fraction`` of the
    box area lies inside, clipped to the crop and shifted to crop coordinates.

    Parameters
    ----------
    boxes : ndarray (n, 4) float32, xyxy pixels of the full slice
    x0, y0 : int, crop origin (pixels)
    size_x, size_y : int, crop size
    min_fraction : float in (0, 1]

    Returns
    -------
    ndarray (m, 4) float32, m <= n, xyxy in crop pixels, every box with positive width and height.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(b):
        return b
    cx0 = np.clip(b[:, 0], x0, x0 + size_x)
    cy0 = np.clip(b[:, 1], y0, y0 + size_y)
    cx1 = np.clip(b[:, 2], x0, x0 + size_x)
    cy1 = np.clip(b[:, 3], y0, y0 + size_y)
    inter = np.maximum(cx1 - cx0, 0) * np.maximum(cy1 - cy0, 0)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = (inter >= min_fraction * area) & (cx1 > cx0) & (cy1 > cy0)
    out = np.stack([cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0], axis=1)[keep]
    return out.astype(np.float32)


class SliceDataset(Dataset):
    """Every axial slice of one or more cases as ``(ldct, ndct, target)``.

    Parameters
    ----------
    cases : sequence of CaseArrays
    hu_range : (float, float)
        HU range scaled to [0, 1] (:func:`src_training.windowing.hu_to_unit`).
    crop_size : int or None
        Random square crops of this size (deterministic per seed, epoch and item; see
        :meth:`set_epoch`); None or >= the slice size = whole slices.
    seed : int
        Crop seed.
    min_box_fraction : float
        A box is kept in a crop when at least this fraction of its area is inside (then clipped).
    lesion_slices_only : bool
        Only slices with at least one box (default False: slices without lesions are included, with
        empty targets, as negatives for the detector).
    lesion_crop_fraction : float in [0, 1]
        Probability that a crop of a slice with lesions is centred on one of them (a random box, centre
        jittered by up to a quarter of the crop size; LIDnet's losses need lesions inside the crop); the other
        crops are uniform. 0 (default) = uniform crops only.

    Items
    -----
    ``dataset[i]`` or ``dataset[(i, epoch)]`` returns

    - ``ldct``: Tensor (1, H, W) float32 in [0, 1],
    - ``ndct``: Tensor (1, H, W) float32 in [0, 1],
    - ``target``: ``{"boxes": FloatTensor (n, 4) xyxy pixels, "labels": Int64Tensor (n,) of 1}``, n >= 0.

    ``dataset.index[i]`` is ``(case_index, slice_index)``.

    Raises
    ------
    ConfigError
        No cases / no slices, or invalid ``hu_range`` / ``crop_size``.
    """

    def __init__(
        self,
        cases: Sequence[CaseArrays],
        hu_range: tuple[float, float] = DEFAULT_HU_RANGE,
        *,
        crop_size: Optional[int] = None,
        seed: int = 0,
        min_box_fraction: float = 0.5,
        lesion_slices_only: bool = False,
        lesion_crop_fraction: float = 0.0,
    ):
        if isinstance(cases, CaseArrays):
            cases = [cases]
        self.cases = list(cases)
        if not self.cases:
            raise ConfigError("SliceDataset needs at least one case.")
        self.hu_range = (float(hu_range[0]), float(hu_range[1]))
        if not self.hu_range[1] > self.hu_range[0]:
            raise ConfigError(f"hu_range must be increasing, got {hu_range}.")
        if crop_size is not None and int(crop_size) < 1:
            raise ConfigError(f"crop_size must be a positive number of pixels, got {crop_size}.")
        self.crop_size = None if crop_size is None else int(crop_size)
        self.seed = int(seed)
        self.min_box_fraction = float(min_box_fraction)
        if not 0.0 <= float(lesion_crop_fraction) <= 1.0:
            raise ConfigError(f"lesion_crop_fraction must be in [0, 1], got {lesion_crop_fraction}.")
        self.lesion_crop_fraction = float(lesion_crop_fraction)
        self.epoch = 0
        self.index: list[tuple[int, int]] = [
            (ci, z)
            for ci, c in enumerate(self.cases)
            for z in range(c.n_slices)
            if not lesion_slices_only or len(c.boxes.get(z, ())) > 0
        ]
        if not self.index:
            raise ConfigError("The training cases hold no usable slice (no slice with lesion boxes?).")

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by ``dataset[i]`` to draw crops (``dataset[(i, epoch)]`` overrides it)."""
        self.epoch = int(epoch)

    def _slice_arrays(self, ci: int, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NDCT (H, W) HU, LDCT (H, W) HU and boxes (n, 4) of slice ``z`` of case ``ci`` (the hook
        :class:`src_training.data.streaming.StreamingSliceDataset` overrides to read from disk)."""
        case = self.cases[ci]
        return case.ndct_hu[z], case.ldct_hu[z], case.boxes.get(z, np.zeros((0, 4), np.float32))

    def __getitem__(self, item):
        if isinstance(item, (tuple, list)):
            i, epoch = int(item[0]), int(item[1])
        else:
            i, epoch = int(item), self.epoch
        nd, ld, boxes = self._slice_arrays(*self.index[i])
        h, w = nd.shape
        cs = self.crop_size
        if cs is not None and (cs < h or cs < w):
            ch, cw = min(cs, h), min(cs, w)
            rng = np.random.default_rng([self.seed, epoch, i])
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            if self.lesion_crop_fraction > 0 and len(boxes) and rng.random() < self.lesion_crop_fraction:
                b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[int(rng.integers(len(boxes)))]
                cy = 0.5 * (b[1] + b[3]) + rng.uniform(-0.25, 0.25) * ch
                cx = 0.5 * (b[0] + b[2]) + rng.uniform(-0.25, 0.25) * cw
                y0 = int(np.clip(round(cy - ch / 2), 0, h - ch))
                x0 = int(np.clip(round(cx - cw / 2), 0, w - cw))
            nd = nd[y0:y0 + ch, x0:x0 + cw]
            ld = ld[y0:y0 + ch, x0:x0 + cw]
            boxes = crop_boxes(boxes, x0, y0, cw, ch, self.min_box_fraction)
        ldct = torch.from_numpy(hu_to_unit(np.ascontiguousarray(ld), self.hu_range))[None]
        ndct = torch.from_numpy(hu_to_unit(np.ascontiguousarray(nd), self.hu_range))[None]
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        target = {"boxes": b, "labels": torch.ones((b.shape[0],), dtype=torch.int64)}
        return ldct, ndct, target


def collate_slices(items: Sequence[tuple[torch.Tensor, torch.Tensor, Target]]):
    """Batch dataset items.

    Returns
    -------
    (ldct (B,1,H,W) float32, ndct (B,1,H,W) float32, targets list of B dicts boxes/labels)

    Raises
    ------
    ConfigError
        If the slices have different sizes (set ``image_size`` or ``crop_size`` in the configuration).
    """
    shapes = {tuple(it[0].shape) for it in items}
    if len(shapes) != 1:
        raise ConfigError(
            f"Training slices of different sizes in one batch ({sorted(shapes)}); set image_size or crop_size "
            f"in the configuration."
        )
    ldct = torch.stack([it[0] for it in items])
    ndct = torch.stack([it[1] for it in items])
    targets = [{"boxes": it[2]["boxes"], "labels": it[2]["labels"]} for it in items]
    return ldct, ndct, targets
