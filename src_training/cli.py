"""Command line of napari-lidnet: ``lidnet <command>`` (also ``python -m src_training <command>``).

Every action of the napari plugin is available here, so a GUI session and a script give the same results:

- ``lidnet demo``      the main job on the bundled real chest CT: simulate LDCT, train a baseline denoiser and
                       its LIDnet version (collaborative training, Algorithm 1), evaluate, write a report.
- ``lidnet reproduce`` the paper's Tables 2-4 and Fig. 3: every denoiser's baseline and LIDnet version on one
                       budget and seed, CNN vs GAN form, collaborative vs simultaneous training.
- ``lidnet train``     collaborative (or baseline) training from a JSON configuration, the command the plugin's
                       Train widget launches in a separate process (``torchrun``-ready).
- ``lidnet simulate``  low-dose simulation of a CT volume at incident flux N0.
- ``lidnet denoise``   apply a trained denoiser checkpoint to a CT volume.
- ``lidnet detect``    apply a trained detector checkpoint; writes lesion boxes as CSV.
- ``lidnet dataset index``  scan a folder of CT series + annotations (VOC, CSV, COCO, LUNA16), split the
                       patients into train/val/test and write a manifest (``train_data: manifest:PATH#train``).
- ``lidnet gui``       open napari with the sample loaded and every widget docked.

Errors a user can cause are printed as one line (``error: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import LidnetError


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        out_dir=args.out,
        fast=args.fast,
        n0=args.n0,
        seed=args.seed,
        device=args.device,
        denoiser=args.denoiser,
        backbone=args.backbone,
        cache_dir=args.cache_dir,
    )
    return 0


def _split_names(text):
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import REPRO_BUDGETS, run_reproduction

    run_reproduction(
        out_dir=args.out,
        budget=None if args.fast else REPRO_BUDGETS[args.budget],
        denoisers=_split_names(args.denoisers),
        gan_denoisers=_split_names(args.gan_denoisers),
        fig3_denoiser=args.fig3_denoiser,
        fast=args.fast,
        seeds=args.seed,
        n0=args.n0,
        device=args.device,
        backbone=args.backbone,
        cache_dir=args.cache_dir,
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .training import run_training

    config = TrainConfig.load_json(args.config)
    overrides = {k: getattr(args, k, None) for k in ("form", "strategy", "perceptual", "baseline_loss", "task_network")}
    if getattr(args, "stream", False):
        overrides["streaming"] = True
    if any(v is not None for v in overrides.values()):
        config = TrainConfig.from_dict({**config.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    from .distributed import shutdown_distributed

    try:  # under torchrun every process runs this (docs/distributed.md)
        return int(run_training(config, args.out, resume=args.resume, method=args.method) or 0)
    finally:
        shutdown_distributed()


def _refuse_existing_output(out: str, overwrite: bool) -> None:
    """Fail before any work when ``--out`` exists (a file, or a non-empty folder) and ``--overwrite`` is not
    given: the user's earlier output is never replaced by accident (raises ``OutputExistsError``)."""
    from .errors import OutputExistsError

    p = Path(out)
    if overwrite or not p.exists() or (p.is_dir() and not any(p.iterdir())):
        return
    raise OutputExistsError(f"{p} already exists; nothing was done. Choose another --out, or add --overwrite.")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .io import load_ct, write_volume
    from .simulation import simulate_ldct

    _refuse_existing_output(args.out, args.overwrite)
    vol = load_ct(args.input, series_uid=args.series_uid)

    def progress(done: int, total: int) -> None:
        print(f"\rsimulating slice {done}/{total}", end="", file=sys.stderr, flush=True)

    ldct = simulate_ldct(vol.hu, vol.spacing[1], args.n0, seed=args.seed, progress=progress)
    print(file=sys.stderr)
    write_volume(ldct, args.out, spacing=vol.spacing, origin=vol.origin, direction=vol.direction,
                 overwrite=args.overwrite)
    print(f"LDCT (N0={args.n0:g}, seed={args.seed}) written to {args.out}")
    return 0


def _cmd_denoise(args: argparse.Namespace) -> int:
    from .inference import denoise_volume, load_denoiser
    from .io import load_ct, write_dicom_series, write_volume

    _refuse_existing_output(args.out, args.overwrite)
    vol = load_ct(args.input, series_uid=args.series_uid)
    model, config = load_denoiser(args.checkpoint, device=args.device)
    hu_range = tuple(config.get("hu_range", (-1024.0, 1024.0)))
    out = denoise_volume(model, vol.hu, hu_range, batch_size=args.batch_size)
    dest = Path(args.out)
    name = str(config.get("denoiser", "denoiser"))
    if dest.suffix.lower() in (".nii", ".gz", ".nrrd", ".mha", ".mhd"):
        write_volume(out, dest, spacing=vol.spacing, origin=vol.origin, direction=vol.direction,
                     overwrite=args.overwrite)
    else:
        write_dicom_series(out, dest, spacing=vol.spacing, reference=vol, overwrite=args.overwrite,
                           series_description=f"{name} denoised ({Path(args.checkpoint).name})")
    print(f"denoised volume written to {dest}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    import numpy as np

    from .annotations import write_boxes_csv
    from .inference import detect_slices, load_detector
    from .io import load_ct

    _refuse_existing_output(args.out, args.overwrite)
    vol = load_ct(args.input, series_uid=args.series_uid)
    detector, config = load_detector(args.checkpoint, device=args.device)
    hu_range = tuple(config.get("hu_range", (-1024.0, 1024.0)))
    boxes, scores = {}, {}
    for result in detect_slices(detector, vol.hu, hu_range, k=args.k, score_thresh=args.score_thresh):
        z = int(result["slice"])
        if len(result["boxes"]):
            boxes[z] = np.asarray(result["boxes"], dtype=np.float32)
            scores[z] = np.asarray(result["scores"], dtype=np.float32)
    write_boxes_csv(boxes, args.out, scores=scores, overwrite=args.overwrite)
    print(f"{sum(len(b) for b in boxes.values())} detections on {len(boxes)} slices written to {args.out}")
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    import warnings

    from .datasets import index_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = index_dataset(args.folder, args.out, args.annotations, args.format, val=args.val,
                                 test=args.test, seed=args.seed, patient_rule=args.patient_rule)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    cases = manifest["cases"]
    counts = {s: sum(c["split"] == s for c in cases) for s in ("train", "val", "test")}
    patients = {s: len({c["patient_id"] for c in cases if c["split"] == s}) for s in counts}
    print(f"{len(cases)} series of {len({c['patient_id'] for c in cases})} patients, "
          f"{sum(c['n_boxes'] for c in cases)} boxes ({manifest['annotations']['format']}); "
          + ", ".join(f"{s}: {counts[s]} series / {patients[s]} patients" for s in counts)
          + f"; {sum(c['n_boxes'] == 0 for c in cases)} series without boxes. Manifest written to {args.out}")
    return 0


def _cmd_gui(args: argparse.Namespace) -> int:
    try:
        from napari_lidnet._launch import main as gui_main
    except ImportError as exc:  # napari not installed
        raise LidnetError(f"The GUI needs napari: pip install 'napari-lidnet[gui]' ({exc}).") from exc
    return int(gui_main() or 0)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``lidnet`` argument parser (sub-commands demo, train, simulate, denoise, detect, gui)."""
    parser = argparse.ArgumentParser(prog="lidnet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="main job on the bundled real chest CT (simulate, co-train, evaluate, report)")
    p.add_argument("--out", default="lidnet-report", help="report folder (default: lidnet-report)")
    p.add_argument("--fast", action="store_true", help="tiny budget (tests, a quick look): ~1 minute")
    p.add_argument("--n0", type=float, default=1000.0, help="incident flux N0 of the simulated LDCT (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    p.add_argument("--denoiser", default=None, help="denoiser (default: the demo's CPU choice, see --help of demo)")
    p.add_argument("--backbone", default=None, help="detector backbone: resnet50 (paper), resnet34, resnet18")
    p.add_argument("--cache-dir", default=None, help="where simulated LDCT is cached (default sample_data/.cache)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("reproduce", help="the paper's Tables 2-4 and Fig. 3: every denoiser, baseline vs LIDnet")
    p.add_argument("--out", default="lidnet-reproduction", help="report folder (default: lidnet-reproduction)")
    p.add_argument("--fast", action="store_true", help="tiny budget (tests): the numbers mean nothing")
    p.add_argument("--budget", default="cpu", choices=["cpu", "small"],
                   help="cpu: 256 px, T1=100, T2=30, T3=10 (default); small: 128 px, all 8 denoisers in ~30 min "
                        "on 2 cores, but the detector does not learn at that size (docs/reproduction.md)")
    p.add_argument("--denoisers", default=None, help="comma-separated denoiser names (default: all registered)")
    p.add_argument("--gan-denoisers", default=None,
                   help="denoisers of Table 4, CNN vs GAN form (default: the first denoiser; '' = none)")
    p.add_argument("--fig3-denoiser", default=None, help="denoiser of Fig. 3 (default: the first denoiser)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="training seed(s) (default 0)")
    p.add_argument("--n0", type=float, default=1000.0, help="incident flux N0 of the simulated LDCT (default 1000)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    p.add_argument("--backbone", default=None, help="detector backbone: resnet50 (paper), resnet34, resnet18")
    p.add_argument("--cache-dir", default=None, help="where simulated LDCT is cached (default sample_data/.cache)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("train", help="collaborative (LIDnet) or baseline training from a JSON config")
    p.add_argument("--config", required=True, help="TrainConfig JSON file")
    p.add_argument("--out", required=True, help="run folder (progress.jsonl, checkpoints)")
    p.add_argument("--resume", default=None, help="trainer_state.pt to resume from")
    p.add_argument("--method", default="lidnet", choices=["lidnet", "baseline", "detector", "todnet"],
                   help="lidnet (Algorithm 1), baseline, detector (NDCT only) or todnet (TOD-Net task loss)")
    p.add_argument("--form", default=None, choices=["cnn", "gan"], help="override the config's form (Eq. 8 / Eq. 5)")
    p.add_argument("--strategy", default=None, choices=["collaborative", "simultaneous"],
                   help="override the config's strategy (simultaneous = ablation of Fig. 3)")
    p.add_argument("--perceptual", default=None, choices=["roi", "global", "none"],
                   help="override the config's perceptual loss (roi = Eq. 4)")
    p.add_argument("--baseline-loss", dest="baseline_loss", default=None, choices=["mae", "published"],
                   help="override the config's baseline loss")
    p.add_argument("--task-network", dest="task_network", default=None, choices=["detector", "segmentation"],
                   help="override the config's TOD-Net downstream network")
    p.add_argument("--stream", action="store_true",
                   help="stream slices from memory-mapped caches on disk (config 'streaming'; for data larger than RAM)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("simulate", help="simulate low-dose CT (Poisson noise in the sinogram at flux N0)")
    p.add_argument("input", help="DICOM folder/file, NIfTI, NRRD or MHA")
    p.add_argument("--n0", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series-uid", default=None, help="choose one series in a folder holding several")
    p.add_argument("--out", required=True, help="output volume (.nii.gz, .nrrd, .mha)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("denoise", help="denoise a CT volume with a trained checkpoint")
    p.add_argument("input")
    p.add_argument("--checkpoint", required=True, help="denoiser.pt")
    p.add_argument("--out", required=True, help="a folder (derived DICOM series) or .nii.gz/.nrrd/.mha")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--series-uid", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.set_defaults(func=_cmd_denoise)

    p = sub.add_parser("detect", help="detect lesions with a trained detector; boxes to CSV")
    p.add_argument("input")
    p.add_argument("--checkpoint", required=True, help="detector.pt")
    p.add_argument("--out", required=True, help="boxes CSV")
    p.add_argument("--device", default="auto")
    p.add_argument("--k", type=int, default=5, help="top-K RPN proposals kept per slice")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--series-uid", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("dataset", help="index a folder of CT series + annotations into a split manifest")
    dsub = p.add_subparsers(dest="dataset_command", required=True)
    q = dsub.add_parser("index", help="scan series, attach boxes, split by patient, write dataset.json")
    q.add_argument("folder", help="folder of CT series (DICOM folders, NIfTI/NRRD/MHA files), searched recursively")
    q.add_argument("--annotations", default=None,
                   help="VOC folder, box CSV, COCO .json or LUNA16 .csv (default: boxes.csv beside each series)")
    q.add_argument("--format", default=None, choices=["voc", "csv", "coco", "luna16"],
                   help="annotation format (default: detected from the path)")
    q.add_argument("--out", required=True, help="manifest JSON to write (train_data: manifest:OUT#train)")
    q.add_argument("--val", type=float, default=0.2, help="fraction of patients in val (default 0.2)")
    q.add_argument("--test", type=float, default=0.2, help="fraction of patients in test (default 0.2)")
    q.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    q.add_argument("--patient-rule", dest="patient_rule", default="file",
                   help="patient of files / series without PatientID: file, folder or regex:<pattern>")
    q.set_defaults(func=_cmd_dataset)

    p = sub.add_parser("gui", help="open napari with the sample and all widgets")
    p.set_defaults(func=_cmd_gui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lidnet``. Returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LidnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
