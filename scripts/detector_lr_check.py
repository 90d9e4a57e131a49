"""Which detector learning rate for LIDnet's T3 phase, starting from the shipped NDCT detector?

The paper uses Adam 5e-3 for its detector. This script fine-tunes copies of the shipped Faster R-CNN for
``--steps`` steps (Adam, batch 4 lesion-centred crops of the training case ``lung1``, the demo's data) at each
learning rate and prints the AP-50 of the result (95 % bootstrap interval over slices), next to the AP before
fine-tuning, on a VALIDATION set made from the training patient: the ``lung1`` NDCT with other synthetic
nodules (data seed 1). The evaluation case ``lung2`` is never used, so the choice does not leak the test set.
Used once to choose the demo's lr_detector (docs/reproduction.md).

    .venv/bin/python scripts/detector_lr_check.py [--steps 40] [--lrs 5e-3 1e-3 1e-4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_training.experiment import DEMO_BUDGET, load_data  # noqa: E402
from src_training.pretrain import FRCNN_SAMPLING, detector_ap  # noqa: E402
from src_training.protocol import DETECTOR_FILE, shipped_weights  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lrs", type=float, nargs="+", default=[5e-3, 1e-3, 1e-4])
    args = ap.parse_args()
    from src_training.data import SliceDataset
    from src_training.models.detector import build_detector
    from src_training.training import DetectorTrainer

    from src_training.data import prepare_case
    from src_training.protocol import IMAGE_SIZE, TRAIN_NODULES

    data = load_data(DEMO_BUDGET, n0=1000.0, cache_dir=Path(__file__).resolve().parents[1] / "sample_data/.cache")
    val = prepare_case("sample:lung1", seed=1, image_size=IMAGE_SIZE, synthetic_nodules_per_slice=TRAIN_NODULES,
                       simulate=False)
    path = shipped_weights(DETECTOR_FILE)
    det0 = build_detector("resnet18", weights_path=path, **FRCNN_SAMPLING).eval()
    r0 = detector_ap(det0, val)
    print(f"shipped detector: AP-50 {100 * r0['ap50']:.1f} % [{100 * r0['ap50_ci']['low']:.1f}, "
          f"{100 * r0['ap50_ci']['high']:.1f}] on the validation set (lung1 NDCT, other nodules)")
    for lr in args.lrs:
        cfg = DEMO_BUDGET.config(t1=args.steps, t2=0, t3=0, rounds=0, lr_detector=lr, device="cpu")
        ds = SliceDataset([data.train], cfg.hu_range, crop_size=cfg.crop_size, seed=0,
                          lesion_crop_fraction=cfg.lesion_crop_fraction)
        det = build_detector("resnet18", weights_path=path, **FRCNN_SAMPLING)
        tr = DetectorTrainer(cfg, ds, detector=det, device="cpu")
        try:
            losses = [e.losses["det"] for e in tr.run() if e.event == "step"]
        except Exception as exc:  # noqa: BLE001 - a diverged run is a result here
            print(f"lr {lr:g}: training failed ({exc})")
            continue
        r = detector_ap(tr.detector.eval(), val)
        print(f"lr {lr:g}: {args.steps} steps, det loss {losses[0]:.3f} -> {losses[-1]:.3f}; AP-50 "
              f"{100 * r['ap50']:.1f} % [{100 * r['ap50_ci']['low']:.1f}, {100 * r['ap50_ci']['high']:.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
