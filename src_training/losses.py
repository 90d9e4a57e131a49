"""Loss functions of LIDnet (Chen et al., "Low-dose CT denoising with lesion-aware ...", ACM MM 2021,
arXiv:2104.08845).

* :func:`recon_loss` -- pixel reconstruction loss, the absolute error (first term of Eq. 8), summed over each
  image's pixels and averaged over the batch as the paper writes it (``reduction="paper"``) or averaged over
  pixels (``"normalised"``).
* :func:`roi_perceptual_loss` -- the ROI perceptual loss of Eq. 4: backbone features of the denoised
  image and of the normal-dose image are compared inside the top-K region proposals of the detector.
* :func:`detection_loss` -- the detection loss of the (frozen) detector on the denoised image: the
  sum of torchvision's Faster R-CNN losses (RPN + box-head terms; third term of Eq. 8).
* :func:`lidnet_generator_loss` -- Eq. 8, ``L = L_rec + lambda_1 L_roi + lambda_2 L_det``.

``REDUCTIONS``: ``"paper"`` reproduces Eq. 8 as printed; ``"normalised"`` makes every term scale-free (the
per-pixel MAE and the feature losses relative to the NDCT feature energy), see
:class:`src_training.config.TrainConfig` ``loss_reduction``.

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
        Image sizes before padding, as in :class:`src_training.models.detector.RPNOutput`.
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


# ============================================================================ GAN form (Eq. 5, Eq. 7)


def gradient_penalty(
    critic: torch.nn.Module,
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    *,
    lambda_gp: float = 10.0,
) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al., NeurIPS 2017, Eq. 3; the penalty of LIDnet's Eq. 7).

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per image, and

    ``GP = lambda_gp * mean_i (||grad_x C(x_hat_i)||_2 - 1)^2``.

    For a linear critic ``C(x) = <w, x>`` the gradient is ``w`` everywhere, so ``GP = lambda_gp *
    (||w|| - 1)^2`` exactly.

    Parameters
    ----------
    critic : nn.Module
        Maps ``(B, C, H, W)`` to ``(B,)`` or ``(B, 1)`` scores.
    real : Tensor (B, C, H, W)
        NDCT images y ([0, 1] scale). Treated as constants (detached).
    fake : Tensor (B, C, H, W)
        Denoised images F(x), same shape. Treated as constants (detached).
    generator : torch.Generator, optional
        Source of ``eps`` (default: torch's global RNG, which the trainers save for exact resumption).
    lambda_gp : float >= 0
        The penalty weight (paper: 10).

    Returns
    -------
    Tensor, scalar
        The penalty, with a graph to the critic's parameters (``create_graph=True``).

    Raises
    ------
    ValueError
        If ``real`` and ``fake`` differ in shape.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: shapes differ, real {tuple(real.shape)} vs fake {tuple(fake.shape)}")
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype, device="cpu")
    eps = eps.to(real.device)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(b, -1).norm(2, dim=1)
    return float(lambda_gp) * ((norms - 1.0) ** 2).mean()


def wgan_critic_loss(
    critic: torch.nn.Module,
    real: Tensor,
    fake: Tensor,
    *,
    lambda_gp: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Critic loss of WGAN-GP, LIDnet's Eq. 7: ``L_C = E[C(F(x))] - E[C(y)] + GP``.

    Parameters
    ----------
    critic : nn.Module
        ``(B, 1, H, W) -> (B,)`` scores.
    real, fake : Tensor (B, 1, H, W), [0, 1]
        NDCT y and denoised F(x) (detached: the denoiser is not updated by this loss).
    lambda_gp : float
        Gradient-penalty weight (paper: 10).
    generator : torch.Generator, optional
        RNG of the interpolation weights (see :func:`gradient_penalty`).

    Returns
    -------
    (Tensor, dict)
        The loss (to minimise over the critic) and floats ``{"critic", "gp", "wdist"}`` where ``wdist =
        E[C(y)] - E[C(F(x))]`` is the critic's estimate of the Wasserstein-1 distance.
    """
    s_real = critic(real.detach()).reshape(-1).mean()
    s_fake = critic(fake.detach()).reshape(-1).mean()
    gp = gradient_penalty(critic, real, fake, generator, lambda_gp=lambda_gp)
    loss = s_fake - s_real + gp
    return loss, {"critic": float(loss.detach()), "gp": float(gp.detach()), "wdist": float((s_real - s_fake).detach())}


def wgan_generator_loss(scores_fake: Tensor) -> Tensor:
    """Adversarial term of the denoiser (generator) in LIDnet's GAN form (Eq. 5): ``-E[C(F(x))]``.

    Parameters
    ----------
    scores_fake : Tensor (B,) or (B, 1)
        Critic scores of the denoised batch, with a graph to the denoiser.

    Returns
    -------
    Tensor, scalar
        ``-mean(scores_fake)`` (unweighted; the trainer multiplies by ``lambda_adv``).
    """
    return -scores_fake.reshape(-1).mean()


# ============================================================================ ablation: global perceptual


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


# ============================================================================ TOD-Net task losses


def dice_loss(logits: Tensor, masks: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss of a binary segmentation (Milletari et al., V-Net, 3DV 2016, Eq. 1), the task loss
    of the segmentation downstream network of TOD-Net (Zhang et al., MICCAI 2021).

    ``L = 1 - mean_i (2 sum(p_i m_i) + eps) / (sum p_i + sum m_i + eps)``, ``p = sigmoid(logits)``,
    per image i (an image without lesion and an empty prediction scores Dice 1).

    Parameters
    ----------
    logits : Tensor (B, 1, H, W)
        Segmenter output before the sigmoid.
    masks : Tensor (B, 1, H, W), {0, 1} float
        Lesion masks.
    eps : float
        Smoothing constant (pixels).

    Returns
    -------
    Tensor, scalar in [0, 1]

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if logits.shape != masks.shape:
        raise ValueError(f"dice_loss: shapes differ, logits {tuple(logits.shape)} vs masks {tuple(masks.shape)}")
    p = torch.sigmoid(logits).flatten(1)
    m = masks.to(p.dtype).flatten(1)
    dice = (2.0 * (p * m).sum(1) + eps) / (p.sum(1) + m.sum(1) + eps)
    return 1.0 - dice.mean()


def todnet_loss(recon: Tensor, task: Tensor, lambda_task: float) -> tuple[Tensor, dict[str, float]]:
    """Task-oriented denoiser loss of TOD-Net (Zhang et al., "Task-Oriented Low-Dose CT Image Denoising",
    MICCAI 2021): ``L = L_rec + lambda_task * L_task`` with ``L_task`` the loss of a frozen downstream
    network on F(x). (TOD-Net adds this term to WGAN and VGG-perceptual terms; here it is added to the
    project's MAE reconstruction loss so the comparison with LIDnet's Eq. 8 changes one thing.)

    Parameters
    ----------
    recon, task : Tensor, scalar
        :func:`recon_loss` and the task loss (:func:`detection_loss` or :func:`dice_loss`).
    lambda_task : float >= 0

    Returns
    -------
    (Tensor, dict)
        Total with graph and floats ``{"total", "rec", "task"}``.

    Raises
    ------
    ConfigError
        If ``lambda_task`` is negative or not finite.
    """
    if not (float(lambda_task) >= 0.0 and float(lambda_task) < float("inf")):
        raise ConfigError(f"lambda_task must be a finite number >= 0, got {lambda_task}.")
    total = recon + float(lambda_task) * task
    return total, {"total": float(total.detach()), "rec": float(recon.detach()), "task": float(task.detach())}
