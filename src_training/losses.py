"""Loss functions of LIDnet (Chen et al., "Low-dose CT denoising with lesion-aware ...", ACM MM 2021,
arXiv:2104.08845).

* :func:`recon_loss` -- pixel reconstruction loss, the mean absolute error (first term of Eq. 8).
* :func:`roi_perceptual_loss` -- the ROI perceptual loss of Eq. 4: backbone features of the denoised
  image and of the normal-dose image are compared inside the top-K region proposals of the detector.
* :func:`detection_loss` -- the detection loss of the (frozen) detector on the denoised image: the
  sum of torchvision's Faster R-CNN losses (Eq. 5-7; third term of Eq. 8).
* :func:`lidnet_generator_loss` -- Eq. 8, ``L = L_rec + lambda_1 L_roi + lambda_2 L_det``.

All images are ``(B, 1, H, W)`` float32 tensors on the [0, 1] scale (HU clipped to the model's
``hu_range`` and scaled, see :func:`src_training.windowing.hu_to_unit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

from .errors import ConfigError

#: FPN levels the ROI perceptual loss pools from (the levels torchvision's Faster R-CNN box head uses).
ROI_FEATURE_LEVELS: tuple[str, ...] = ("0", "1", "2", "3")


def recon_loss(denoised: Tensor, ndct: Tensor) -> Tensor:
    """Pixel reconstruction loss: mean absolute error (L1), first term of Eq. 8 of the LIDnet paper.

    Parameters
    ----------
    denoised : Tensor (B, 1, H, W) float32, [0, 1]
        Denoiser output F(x).
    ndct : Tensor (B, 1, H, W) float32, [0, 1]
        Normal-dose target y.

    Returns
    -------
    Tensor, scalar
        ``mean(|F(x) - y|)`` over all pixels of the batch (unit: [0, 1] scale).

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if denoised.shape != ndct.shape:
        raise ValueError(f"recon_loss: shapes differ, denoised {tuple(denoised.shape)} vs NDCT {tuple(ndct.shape)}")
    return F.l1_loss(denoised, ndct)


def roi_perceptual_loss(
    feat_denoised: Mapping[str, Tensor],
    feat_ndct: Mapping[str, Tensor],
    proposals: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    output_size: int = 7,
) -> Tensor:
    """ROI perceptual loss, Eq. 4 of the LIDnet paper.

    For every proposal box ``b`` (top-K RPN proposals of the detector run on the denoised image), the
    FPN features of the denoised image ``T(F(x))`` and of the normal-dose image ``T(y)`` are pooled
    to ``d x 7 x 7`` with RoIAlign (box -> FPN level by the Faster R-CNN / FPN rule, Eq. 1 of the FPN
    paper, exactly as torchvision's box head does), and

    ``L_roi = mean_b ||RoI_b(T(F(x))) - RoI_b(T(y))||_F^2 / (w h d)``

    with ``w = h = output_size`` and ``d`` the channel count; i.e. the mean of the squared difference
    over all pooled elements. The mean runs over all boxes of the batch (K per image when every image
    has K proposals, which is the mean over K and over the batch).

    ``T(y)`` is treated as a constant (detached; compute it under ``torch.no_grad()``). Only feature
    values inside the boxes matter (RoIAlign samples bilinearly at points inside each box).

    Parameters
    ----------
    feat_denoised : mapping str -> Tensor (B, d, h_l, w_l)
        FPN features of the denoised batch (keys ``'0'..'3'`` used, ``'pool'`` ignored); keeps the
        autograd graph to the denoiser.
    feat_ndct : mapping str -> Tensor (B, d, h_l, w_l)
        FPN features of the normal-dose batch, same shapes.
    proposals : sequence of Tensor (K_i, 4) float32
        Per image, boxes ``xyxy`` in input pixels (the padded batch's coordinates). Detached. ``K_i`` may
        be 0.
    image_sizes : sequence of (H, W)
        Image sizes before padding, as in :class:`src_training.models.detector.RPNOutput`.
    output_size : int
        RoIAlign output size (7 as in Faster R-CNN's box head).

    Returns
    -------
    Tensor, scalar float32
        The loss; ``0`` (still attached to ``feat_denoised`` so ``backward`` works) when there is no
        proposal in the batch.

    Raises
    ------
    ValueError
        If the feature maps lack a level, shapes differ, or the number of proposal lists does not match
        the batch.
    """
    names = list(ROI_FEATURE_LEVELS)
    for name in names:
        if name not in feat_denoised or name not in feat_ndct:
            raise ValueError(f"roi_perceptual_loss: feature level '{name}' missing (have {list(feat_denoised)})")
        if feat_denoised[name].shape != feat_ndct[name].shape:
            raise ValueError(
                f"roi_perceptual_loss: level '{name}' shapes differ: "
                f"{tuple(feat_denoised[name].shape)} vs {tuple(feat_ndct[name].shape)}"
            )
    batch = feat_denoised[names[0]].shape[0]
    if len(proposals) != batch or len(image_sizes) != batch:
        raise ValueError(
            f"roi_perceptual_loss: {len(proposals)} proposal lists and {len(image_sizes)} image sizes "
            f"for a batch of {batch}"
        )
    ref = feat_denoised[names[0]]
    boxes = [p.detach().to(device=ref.device, dtype=ref.dtype).reshape(-1, 4) for p in proposals]
    if sum(int(b.shape[0]) for b in boxes) == 0:
        # No proposal anywhere: zero loss that still has a graph (sum of all levels times 0).
        return sum(feat_denoised[n].sum() for n in names) * 0.0
    # A fresh pooler per call: MultiScaleRoIAlign caches its scales on first use, and the padded
    # image size may change between calls.
    pooler = MultiScaleRoIAlign(names, output_size, sampling_ratio=2)
    sizes = [(int(h), int(w)) for h, w in image_sizes]
    pooled_dn = pooler({n: feat_denoised[n] for n in names}, boxes, sizes)
    with torch.no_grad():
        pooled_nd = pooler({n: feat_ndct[n].detach() for n in names}, boxes, sizes)
    return F.mse_loss(pooled_dn, pooled_nd)


def detection_loss(loss_dict: Mapping[str, Tensor]) -> Tensor:
    """Sum of torchvision's Faster R-CNN losses (the detection loss, Eq. 5-7 of the LIDnet paper).

    Parameters
    ----------
    loss_dict : mapping str -> scalar Tensor
        What :class:`~src_training.models.detector.LesionDetector` returns in training behaviour
        (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``).

    Returns
    -------
    Tensor, scalar
        ``loss_classifier + loss_box_reg + loss_objectness + loss_rpn_box_reg``.

    Raises
    ------
    ValueError
        If ``loss_dict`` is empty (the detector was called in eval behaviour or without targets).
    """
    if not loss_dict:
        raise ValueError(
            "detection_loss: empty loss dict; call the detector in training behaviour with targets"
        )
    values = list(loss_dict.values())
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def lidnet_generator_loss(
    recon: Tensor,
    roi: Tensor,
    det: Tensor,
    lambda_roi: float = 5.0,
    lambda_det: float = 5.0,
) -> tuple[Tensor, dict[str, float]]:
    """Total denoiser loss of LIDnet, Eq. 8: ``L = L_rec + lambda_1 L_roi + lambda_2 L_det``.

    Parameters
    ----------
    recon, roi, det : Tensor, scalar
        :func:`recon_loss`, :func:`roi_perceptual_loss`, :func:`detection_loss`.
    lambda_roi, lambda_det : float >= 0
        ``lambda_1`` and ``lambda_2`` (paper: 5 and 5).

    Returns
    -------
    (Tensor, dict)
        The total (scalar tensor with graph) and its parts as floats:
        ``{"total", "rec", "roi", "det"}`` (unweighted parts).

    Raises
    ------
    ConfigError
        If a weight is negative or not finite.
    """
    for name, val in (("lambda_roi", lambda_roi), ("lambda_det", lambda_det)):
        if not (float(val) >= 0.0 and float(val) < float("inf")):
            raise ConfigError(f"{name} must be a finite number >= 0, got {val}.")
    total = recon + float(lambda_roi) * roi + float(lambda_det) * det
    parts = {
        "total": float(total.detach()),
        "rec": float(recon.detach()),
        "roi": float(roi.detach()),
        "det": float(det.detach()),
    }
    return total, parts
