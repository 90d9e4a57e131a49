"""Loss functions of LIDnet's single-CNN form (Chen et al., "LIDnet: lesion-inspired denoising network",
ACM MM 2021, arXiv:2104.08845): Eq. 4 and Eq. 8, and the global-perceptual ablation of Eq. 4.

* :func:`recon_loss` -- pixel reconstruction loss, the absolute error (first term of Eq. 8), summed over each
  image's pixels and averaged over the batch as the paper writes it (``reduction="paper"``) or averaged over
  pixels (``"normalised"``).
* :func:`roi_perceptual_loss` -- the ROI perceptual loss of Eq. 4: backbone features of the denoised
  image and of the normal-dose image are compared inside the top-K region proposals of the detector.
* :func:`detection_loss` -- the detection loss of the (frozen) detector on the denoised image: the
  sum of torchvision's Faster R-CNN losses (RPN + box-head terms; third term of Eq. 8).
* :func:`lidnet_generator_loss` -- Eq. 8, ``L = L_rec + lambda_1 L_roi + lambda_2 L_det``.
* :func:`global_perceptual_loss` -- ablation: Eq. 4 over the whole FPN maps (no proposals).

``REDUCTIONS``: ``"paper"`` reproduces Eq. 8 as printed; ``"normalised"`` makes every term scale-free (the
per-pixel MAE and the feature losses relative to the NDCT feature energy), see
:class:`src_training.config.TrainConfig` ``loss_reduction``.

All images are ``(B, 1, H, W)`` float32 tensors on the [0, 1] scale (HU clipped to the model's
``hu_range`` and scaled, see :func:`src_training.windowing.hu_to_unit`); boxes are ``xyxy`` float32 in
input pixels (:class:`src_training.models.rpn.RPNOutput`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

from ..errors import ConfigError

__all__ = [
    "REDUCTIONS",
    "ROI_FEATURE_LEVELS",
    "detection_loss",
    "global_perceptual_loss",
    "lidnet_generator_loss",
    "recon_loss",
    "roi_perceptual_loss",
]

#: FPN levels the ROI perceptual loss pools from (the levels torchvision's Faster R-CNN box head uses).
ROI_FEATURE_LEVELS: tuple[str, ...] = ("0", "1", "2", "3")

#: Reductions of Eq. 8's terms (see the module docstring).
REDUCTIONS: tuple[str, ...] = ("paper", "normalised")

_EPS = 1e-12


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    return reduction


def recon_loss(denoised: Tensor, ndct: Tensor, reduction: str = "normalised") -> Tensor:
    """Pixel reconstruction loss, first term of Eq. 8 of the LIDnet paper (absolute error, "MAE" per the
    paper's appendix).

    Parameters
    ----------
    denoised : Tensor (B, 1, H, W) float32, [0, 1]
        Denoiser output F(x).
    ndct : Tensor (B, 1, H, W) float32, [0, 1]
        Normal-dose target y.
    reduction : str
        ``"paper"``: ``(1/N) sum_i ||F(x_i) - y_i||_1``, the absolute error summed over each image's pixels and
        averaged over the N images of the batch, as Eq. 8 is printed. ``"normalised"`` (default here, the
        per-pixel mean the baselines use): ``mean(|F(x) - y|)`` over all pixels of the batch; the paper form
        divided by H x W.

    Returns
    -------
    Tensor, scalar
        Unit: the [0, 1] scale (times pixels for ``"paper"``).

    Raises
    ------
    ValueError
        If the shapes differ or ``reduction`` is unknown.
    """
    if denoised.shape != ndct.shape:
        raise ValueError(f"recon_loss: shapes differ, denoised {tuple(denoised.shape)} vs NDCT {tuple(ndct.shape)}")
    if _check_reduction(reduction) == "paper":
        return (denoised - ndct).abs().flatten(1).sum(dim=1).mean()
    return F.l1_loss(denoised, ndct)


def roi_perceptual_loss(
    feat_denoised: Mapping[str, Tensor],
    feat_ndct: Mapping[str, Tensor],
    proposals: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    *,
    output_size: int = 7,
    reduction: str = "paper",
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
        Image sizes before padding, as in :class:`src_training.models.rpn.RPNOutput`.
    output_size : int
        RoIAlign output size (7 as in Faster R-CNN's box head).
    reduction : str
        ``"paper"`` (default): Eq. 4 as above. ``"normalised"``: the same divided by the mean squared pooled
        NDCT feature ``mean_b ||RoI_b(T(y))||^2 / (w h d)`` (a relative error, independent of the detector's
        feature scale).

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
    _check_reduction(reduction)
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
    loss = F.mse_loss(pooled_dn, pooled_nd)
    if reduction == "normalised":
        loss = loss / (pooled_nd.pow(2).mean() + _EPS)
    return loss


def detection_loss(loss_dict: Mapping[str, Tensor]) -> Tensor:
    """Sum of torchvision's Faster R-CNN losses (the detection loss, third term of Eq. 8 of the LIDnet paper).

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


def global_perceptual_loss(feat_denoised: Mapping[str, Tensor], feat_ndct: Mapping[str, Tensor],
                           reduction: str = "paper") -> Tensor:
    """Global perceptual loss, the ablation of Eq. 4 without the proposals: the same mean squared
    feature difference as :func:`roi_perceptual_loss`, over the whole FPN maps.

    ``L_glob = (1/4) sum_{l in 0..3} mean(|T_l(F(x)) - T_l(y)|^2)`` (each FPN level weighs the same, as
    the ROI loss averages boxes whichever level they pool from).

    Parameters
    ----------
    feat_denoised : mapping str -> Tensor (B, d, h_l, w_l)
        FPN features of the denoised batch (keys ``'0'..'3'``; ``'pool'`` ignored), with graph.
    feat_ndct : mapping str -> Tensor (B, d, h_l, w_l)
        FPN features of the NDCT batch (constants).
    reduction : str
        ``"paper"`` (default) as above; ``"normalised"``: each level's term divided by ``mean(T_l(y)^2)``.

    Returns
    -------
    Tensor, scalar

    Raises
    ------
    ValueError
        If a level is missing, shapes differ or ``reduction`` is unknown.
    """
    _check_reduction(reduction)
    terms = []
    for name in ROI_FEATURE_LEVELS:
        if name not in feat_denoised or name not in feat_ndct:
            raise ValueError(f"global_perceptual_loss: feature level '{name}' missing (have {list(feat_denoised)})")
        a, b = feat_denoised[name], feat_ndct[name]
        if a.shape != b.shape:
            raise ValueError(f"global_perceptual_loss: level '{name}' shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        term = F.mse_loss(a, b.detach())
        if reduction == "normalised":
            term = term / (b.detach().pow(2).mean() + _EPS)
        terms.append(term)
    return torch.stack(terms).mean()
