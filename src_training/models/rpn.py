"""Region proposal network that also returns its objectness scores, and the top-K proposals of a batch.

LIDnet (Chen et al., ACM MM 2021, arXiv 2104.08845) compares detector features of the denoised and the
normal-dose image inside the detector's top-K region proposals (the ROI perceptual loss, Eq. 4; K = 5).
torchvision's :class:`~torchvision.models.detection.rpn.RegionProposalNetwork` computes the proposals'
objectness probabilities in ``filter_proposals`` but its ``forward`` returns only the boxes.
:class:`TopKRegionProposalNetwork` subclasses it and overrides only ``filter_proposals`` (to keep the
scores when asked) -- the forward pass, the losses and the state-dict keys are torchvision's own -- and adds
:meth:`TopKRegionProposalNetwork.forward_with_scores`. :func:`top_k_proposals` cuts the NMS output to K.

Box invariants (every box this module returns): ``xyxy`` float32 in input pixels (x = column, y = row,
edges at pixel borders) of the un-resized, zero-padded batch, clipped to each image's ``(H, W)``, boxes
smaller than 1e-3 px removed, sorted by objectness (descending) -- the order of torchvision's
``batched_nms`` output -- and detached (Faster R-CNN does not back-propagate through the proposals).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from .freezing import training_flag

__all__ = ["RPNOutput", "TopKRegionProposalNetwork", "top_k_proposals"]


@dataclass
class RPNOutput:
    """FPN features and top-K RPN proposals of a batch.

    Attributes
    ----------
    features : OrderedDict[str, Tensor]
        FPN maps ``'0', '1', '2', '3', 'pool'`` (strides 4, 8, 16, 32, 64), each ``(B, 256, h, w)``
        float32, computed from the normalised, zero-padded batch (padded to a multiple of 32 at the
        bottom/right). The autograd graph back to the input images is kept (except under ``no_grad``).
    proposals : list[Tensor]
        Per image ``(K, 4)`` float32 ``xyxy`` boxes in input pixels, clipped to the image, detached,
        sorted by objectness (descending). ``K = min(k, number of proposals left after NMS)``.
    objectness : list[Tensor]
        Per image ``(K,)`` float32 objectness probabilities in [0, 1] (sigmoid of the RPN logits),
        detached, descending.
    image_sizes : list[tuple[int, int]]
        ``(H, W)`` of each input image (before padding), in pixels.
    """

    features: "OrderedDict[str, Tensor]"
    proposals: list[Tensor]
    objectness: list[Tensor]
    image_sizes: list[tuple[int, int]]


def top_k_proposals(boxes: list[Tensor], scores: list[Tensor], k: int) -> tuple[list[Tensor], list[Tensor]]:
    """The first ``k`` proposals and probabilities of each image (the RPN's NMS output is sorted by score).

    Parameters
    ----------
    boxes : list of Tensor (n_i, 4)
        Per image, proposals ``xyxy`` in input pixels, sorted by objectness (descending).
    scores : list of Tensor (n_i,)
        The matching objectness probabilities in [0, 1].
    k : int
        Proposals kept per image (>= 1).

    Returns
    -------
    (list[Tensor], list[Tensor])
        ``(min(k, n_i), 4)`` float32 boxes and ``(min(k, n_i),)`` float32 probabilities per image, detached.
    """
    return [b[:k].detach().float() for b in boxes], [s[:k].detach().float() for s in scores]


class TopKRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN whose :meth:`forward_with_scores` also returns the objectness of the proposals.

    Same constructor, forward, losses and parameters as
    :class:`~torchvision.models.detection.rpn.RegionProposalNetwork` (``FasterRCNN``'s ``rpn``), so
    torchvision and napari-lidnet detector state dicts load unchanged. ``torchvision``'s ``FasterRCNN``
    builds its RPN itself (it takes ``rpn_*`` settings, not an ``rpn=`` module): :meth:`from_rpn` makes this
    subclass from the one it built, sharing its head and anchor generator.

    Notes
    -----
    :meth:`forward_with_scores` passes the scores from ``filter_proposals`` back through an attribute of
    the module while it runs: do not call it on the same module from two threads at once.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_scores = False
        self._scores: Optional[list[Tensor]] = None

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork) -> "TopKRegionProposalNetwork":
        """A :class:`TopKRegionProposalNetwork` with ``rpn``'s head, anchor generator and every setting.

        The head and anchor generator are the same module objects (no new parameters, same state-dict keys);
        the box coder, matcher, sampler, pre/post-NMS top-n, NMS/score thresholds and ``min_size`` are
        copied, and the training flag too.
        """
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
        )
        new.box_coder = rpn.box_coder
        new.box_similarity = rpn.box_similarity
        new.proposal_matcher = rpn.proposal_matcher
        new.fg_bg_sampler = rpn.fg_bg_sampler
        new.min_size = rpn.min_size
        new.train(rpn.training)
        return new

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's ``filter_proposals`` (per-level top-n, clip, small/low boxes removed, NMS per level,
        post-NMS top-n), recording the scores for :meth:`forward_with_scores`.

        Returns per image boxes ``(n_i, 4)`` float32 xyxy input pixels, sorted by objectness (descending),
        and their probabilities ``(n_i,)`` in [0, 1].
        """
        boxes, scores = super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        if self._keep_scores:
            self._scores = scores
        return boxes, scores

    def forward_with_scores(
        self,
        images: ImageList,
        features: "OrderedDict[str, Tensor]",
        targets: Optional[list[dict[str, Tensor]]] = None,
        *,
        training: bool,
    ) -> tuple[list[Tensor], list[Tensor], dict[str, Tensor]]:
        """The RPN forward pass with a chosen behaviour; returns proposals, their objectness and the losses.

        Parameters
        ----------
        images : ImageList
            The transformed batch (``tensors`` (B, 3, H', W') padded, ``image_sizes`` (H, W) per image).
        features : OrderedDict[str, Tensor]
            FPN maps of the batch.
        targets : list of dict, optional
            Per image ``boxes`` (n, 4) float32 xyxy pixels (``n`` may be 0); required when ``training``.
        training : bool
            True: training behaviour (training pre/post-NMS top-n, the RPN losses computed); False: eval
            behaviour (eval top-n, no losses). Whatever the module's own mode, which is restored after.

        Returns
        -------
        (list[Tensor], list[Tensor], dict[str, Tensor])
            Per image proposals ``(n_i, 4)`` float32 xyxy input pixels sorted by objectness (descending),
            detached; their objectness probabilities ``(n_i,)`` float32 in [0, 1], detached; the losses
            ``loss_objectness`` and ``loss_rpn_box_reg`` (with graph) when ``training``, else ``{}``.

        Raises
        ------
        ValueError
            ``training`` without ``targets`` (torchvision's message).
        """
        with training_flag(self, bool(training)):
            self._keep_scores, self._scores = True, None
            try:
                boxes, losses = self(images, features, targets)
                scores = self._scores
            finally:
                self._keep_scores, self._scores = False, None
        assert scores is not None and len(scores) == len(boxes)
        return boxes, scores, losses
