"""LIDnet's training changes the denoiser differently from the baseline's, and only through Eq. 8's extra terms.

Same initial denoiser, same data, same seed, one denoiser step each (LIDnet: T2 of Algorithm 1 with the
detector frozen; baseline: the reconstruction loss alone). With lambda_1 = lambda_2 = 0, Eq. 8 reduces to the
reconstruction term and the two updates must be identical (so the comparison itself is sound); with the
paper's weights the ROI perceptual and detection terms must move the weights elsewhere.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from src_training.config import TrainConfig
from src_training.data import CaseArrays, SliceDataset
from src_training.models.denoisers import build_denoiser
from src_training.models.detector import build_detector
from src_training.training import BaselineTrainer, CollaborativeTrainer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _case() -> CaseArrays:
    rng = np.random.default_rng(0)
    nd = np.full((2, 64, 64), -800.0, np.float32)
    nd[:, 8:56, 8:56] = 30.0
    nd[:, 20:32, 24:38] = 120.0
    boxes = {z: np.array([[24, 20, 38, 32]], np.float32) for z in range(2)}
    ld = nd + rng.normal(0, 60, nd.shape).astype(np.float32)
    return CaseArrays("synthetic", nd, ld, boxes, (2.0, 0.7, 0.7))


def _detector():
    torch.manual_seed(1)
    det = build_detector("resnet18", rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                         rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
                         box_batch_size_per_image=16)
    det.model.roi_heads.box_head = TwoMLPHead(256 * 7 * 7, 64)
    det.model.roi_heads.box_predictor = FastRCNNPredictor(64, 2)
    return det


def _step(trainer_cls, denoiser, lambdas, **kw):
    config = TrainConfig(denoiser="cpce", detector_backbone="resnet18", t1=0, t2=1, t3=0, rounds=1, batch_size=2,
                         lr_denoiser=1e-3, seed=0, device="cpu", checkpoint_every=0, lambda_roi=lambdas[0],
                         lambda_det=lambdas[1])
    ds = SliceDataset([_case()], config.hu_range, seed=0)
    trainer = trainer_cls(config, ds, denoiser=copy.deepcopy(denoiser), device="cpu", **kw)
    events = [e for e in trainer.run() if e.event == "step"]
    assert len(events) == 1
    return {k: v.detach().clone() for k, v in trainer.denoiser.state_dict().items()}, events[0]


def test_lidnet_update_differs_from_the_baseline_only_through_roi_and_detection_terms():
    torch.manual_seed(0)
    den = build_denoiser("cpce", filters=8, zero_init_last=False)
    start = {k: v.detach().clone() for k, v in den.state_dict().items()}
    base, ev_b = _step(BaselineTrainer, den, (5.0, 5.0))
    lid0, ev_0 = _step(CollaborativeTrainer, den, (0.0, 0.0), detector=_detector())
    lid, ev_l = _step(CollaborativeTrainer, den, (5.0, 5.0), detector=_detector())

    def delta(a):
        return torch.cat([(a[k] - start[k]).flatten().double() for k in start if start[k].is_floating_point()])

    d_base, d_lid0, d_lid = delta(base), delta(lid0), delta(lid)
    assert d_base.norm() > 0  # the baseline step moved the weights
    # Eq. 8 with lambda_1 = lambda_2 = 0 is the baseline's reconstruction loss: the same update
    torch.testing.assert_close(d_lid0, d_base, rtol=1e-5, atol=1e-7)
    # with the paper's weights the ROI and detection terms change the update
    assert (d_lid - d_base).norm() > 1e-3 * d_base.norm()
    assert ev_l.losses["roi"] > 0 and ev_l.losses["det"] > 0
    assert ev_l.grad_shares["roi"] > 0 and ev_l.grad_shares["det"] > 0
    assert ev_l.losses["rec"] == pytest.approx(ev_b.losses["rec"], rel=1e-5)  # same images, same start
