"""Command line of napari-lidnet: ``lidnet <command>`` (also ``python -m src_training <command>``).

Every action of the napari plugin is available here, so a GUI session and a script give the same results:

- ``lidnet demo``      the main job on the bundled real chest CT: simulate LDCT, train a baseline denoiser and
                       its LIDnet version (collaborative training, Algorithm 1), evaluate, write a report.
- ``lidnet reproduce`` the paper's Tables 2-4 and Fig. 3: every denoiser's baseline and LIDnet version over
                       three seeds (mean and interval), CNN vs GAN form, collaborative vs simultaneous training.
- ``lidnet study``     Eq. 8 reduction x lambda_1 x perceptual loss over seeds: when does the ROI loss help.
- ``lidnet pretrain-detector``  train the NDCT detectors the project ships (LIDnet's Faster R-CNN, the FCOS judge).
- ``lidnet train``     collaborative (or baseline) training from a JSON configuration, the command the plugin's
                       Train widget launches in a separate process (``torchrun``-ready).
- ``lidnet simulate``  low-dose simulation of a CT volume at incident flux N0.
- ``lidnet denoise``   apply a trained denoiser checkpoint to a CT volume.
- ``lidnet detect``    apply a trained detector checkpoint; writes lesion boxes as CSV.
- ``lidnet dataset index``  scan a folder of CT series + annotations (VOC, CSV, COCO, LUNA16), split the
                       patients into train/val/test and write a manifest (``train_data: manifest:PATH#train``).
- ``lidnet gui``       open napari with the sample loaded and every widget docked.

Errors a user can cause are printed as one line (``error: ...``) with exit status 2, never a traceback.
``simulate``, ``denoise`` and ``detect`` check that ``--out`` can be written (not there without
``--overwrite``, a writable folder, an ending that holds the result, an input whose geometry and DICOM tags a
derived series can carry) before the computation, so a bad destination fails in seconds, not after it.

The core is imported at start-up (a few seconds: torch); only ``lidnet gui`` imports napari / Qt, inside its
command, so that the headless core never imports Qt.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .annotations import write_boxes_csv
from .config import TrainConfig
from .data.index import index_dataset
from .demo import run_demo
from .distributed import shutdown_distributed
from .errors import ConfigError, CTWriteError, LidnetError, MultipleSeriesError, OutputExistsError
from .experiment import FAST_BUDGET
from .inference import denoise_volume, detect_slices, load_denoiser, load_detector
from .io import CTVolume, load_ct, write_dicom_series, write_volume
from .io._writing import check_destination, check_volume_output
from .io.dicom_writer import check_dicom_series_output, series_window
from .models.registry import display_name
from .pretrain import RECIPES, remeasure, run_pretraining
from .reproduce import run_reproduction
from .simulation import SIMULATOR_VERSION, ScanGeometry, n0_for_noise_sigma, simulate_ldct, soft_tissue_noise_sigma
from .study import run_study, run_study_parallel, study_workers
from .training import run_training
from .working_size import detect_at_size, working_size


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(
        out_dir=args.out,
        fast=args.fast,
        n0=args.n0,
        seed=args.seed,
        device=args.device,
        denoiser=args.denoiser,
        cache_dir=args.cache_dir,
        loss_reduction=args.loss_reduction,
    )
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    if args.measure_only:
        if not args.out:
            raise ConfigError("--measure-only needs --out: the shipped weights file to measure again.")
        rec = remeasure(args.out, device=args.device, note=args.measure_only)
        m = rec["measured"]["eval_all_lesions"]
        print(f"{args.out}: AP-50 {100 * m['ap50']:.1f} % [{100 * m['ap50_ci']['low']:.1f}, "
              f"{100 * m['ap50_ci']['high']:.1f}] on the evaluation NDCT; record rewritten")
        return 0
    recipe = RECIPES[args.arch]
    changes = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("backbone", args.backbone),
                                 ("batch_size", args.batch_size)) if v is not None}
    recipe = replace(recipe, **changes)
    out = args.out or f"{args.arch}_ndct.pt"
    command = "lidnet pretrain-detector " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    run_pretraining(recipe, out, run_dir=args.run_dir, device=args.device, overwrite=args.overwrite,
                    command=command)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    reductions = list(dict.fromkeys(args.reductions))
    workers = args.workers if args.workers is not None else study_workers(args.device, len(reductions))
    if workers > 1 and len(reductions) > 1:
        run_study_parallel(args.out, reductions=reductions, seeds=args.seed, n0=args.n0, device=args.device,
                           cache_dir=args.cache_dir, fast=args.fast)
    else:
        run_study(args.out, seeds=args.seed, n0=args.n0, device=args.device, cache_dir=args.cache_dir,
                  budget=FAST_BUDGET if args.fast else None, reductions=reductions)
    return 0


def _split_names(text):
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _cmd_reproduce(args: argparse.Namespace) -> int:
    run_reproduction(
        out_dir=args.out,
        denoisers=_split_names(args.denoisers),
        gan_denoisers=_split_names(args.gan_denoisers),
        fig3_denoiser=args.fig3_denoiser,
        fast=args.fast,
        seeds=args.seed,
        n0=args.n0,
        device=args.device,
        cache_dir=args.cache_dir,
        loss_reduction=args.loss_reduction,
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    config = TrainConfig.load_json(args.config)
    overrides = {k: getattr(args, k, None) for k in ("form", "strategy", "perceptual", "baseline_loss", "task_network",
                                                     "loss_reduction")}
    if getattr(args, "stream", False):
        overrides["streaming"] = True
    if any(v is not None for v in overrides.values()):
        config = TrainConfig.from_dict({**config.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    try:  # under torchrun every process runs this (docs/distributed.md)
        return int(run_training(config, args.out, resume=args.resume, method=args.method) or 0)
    finally:
        shutdown_distributed()


def _refuse_existing_output(out: str, overwrite: bool) -> None:
    """Fail before any work when ``--out`` exists (a file, or a non-empty folder) and ``--overwrite`` is not
    given: the user's earlier output is never replaced by accident (raises ``OutputExistsError``)."""
    p = Path(out)
    if overwrite or not p.exists() or (p.is_dir() and not any(p.iterdir())):
        return
    raise OutputExistsError(f"{p} already exists; nothing was done. Choose another --out, or add --overwrite.")


def _load_input(args: argparse.Namespace) -> CTVolume:
    """``load_ct(INPUT, --series-uid)``; several series without ``--series-uid`` -> a message naming the option
    and listing the series (UID, description, modality, files)."""
    try:
        return load_ct(args.input, series_uid=args.series_uid)
    except MultipleSeriesError as exc:
        if not exc.series:
            raise
        listing = "\n".join(f"  - {s}" for s in exc.series)
        raise MultipleSeriesError(
            f"{args.input} holds {len(exc.series)} DICOM series; choose one with --series-uid UID:\n{listing}",
            exc.series,
        ) from exc


#: ``--out`` endings that are neither a volume file ``write_volume`` writes nor a folder: refused at once.
_NOT_OUTPUT_ENDINGS: tuple[str, ...] = (
    ".mhd", ".raw", ".dcm", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".npy", ".npz",
    ".csv", ".json", ".txt", ".pt", ".pth", ".h5", ".hdf5", ".hdr", ".img", ".mat", ".zip", ".gz", ".pdf",
)


def _output_kind(out: str) -> str:
    """``"volume"`` (.nii/.nii.gz/.nrrd/.mha) or ``"dicom"`` (a folder: derived DICOM series) for ``--out``.

    Raises CTWriteError for an ending that cannot hold the result (.mhd, .dcm, .png, .npy, ...)."""
    p = Path(out)
    name = p.name.lower()
    if any(name.endswith(e) for e in (".nii.gz", ".nii", ".nrrd", ".mha")):
        return "volume"
    if p.is_dir():
        return "dicom"
    if name.endswith(".mhd"):
        raise CTWriteError(f"--out {out}: a MetaImage .mhd + .raw pair cannot be replaced safely; use .mha (one "
                           "file), .nii.gz, or a folder for a derived DICOM series. Nothing was done.")
    if name.endswith((".dcm", ".ima")):
        raise CTWriteError(f"--out {out}: a DICOM series is a folder of files, one per slice; give a folder name "
                           "(without the ending). Nothing was done.")
    ending = next((e for e in _NOT_OUTPUT_ENDINGS if name.endswith(e)), None)
    if ending is not None:
        raise CTWriteError(f"--out {out}: a {ending} file cannot hold a CT volume; give a folder (a derived DICOM "
                           "series) or a .nii.gz, .nii, .nrrd or .mha file. Nothing was done.")
    return "dicom"


def _window_option(text: str | None):
    """``--window``: a preset name (lung, mediastinum, abdomen, soft_tissue, liver, bone, brain) or ``W,L`` HU;
    None when not given. Raises ConfigError for anything else."""
    if text is None:
        return None
    parts = [t.strip() for t in text.replace(";", ",").split(",")]
    if len(parts) == 2:
        try:
            window = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise ConfigError(f"--window {text}: expected a preset name or 'width,level' in HU, e.g. 1500,-600.") \
                from None
    else:
        window = text.strip()
    series_window(window)  # ConfigError for an unknown preset or a width <= 0
    return window


def _check_output(args: argparse.Namespace, vol: CTVolume, kind: str, **dicom_tags) -> None:
    """Everything that would make writing ``--out`` fail, checked before the computation: the destination
    (exists without --overwrite, a file in the way, not writable), the input's geometry, and for a DICOM
    series every tag copied from the input (the first and last slice are built in memory)."""
    try:
        if kind == "volume":
            check_volume_output(args.out, spacing=vol.spacing, origin=vol.origin, direction=vol.direction,
                                overwrite=args.overwrite)
        else:
            check_dicom_series_output(vol.hu, args.out, spacing=vol.spacing, reference=vol,
                                      overwrite=args.overwrite, **dicom_tags)
    except CTWriteError as exc:
        raise CTWriteError(f"{str(exc).rstrip('.')}. Input: {args.input}; nothing was computed.") from exc


def _write_result(args: argparse.Namespace, hu: np.ndarray, vol: CTVolume, kind: str, **dicom_tags) -> None:
    if kind == "volume":
        write_volume(hu, args.out, spacing=vol.spacing, origin=vol.origin, direction=vol.direction,
                     overwrite=args.overwrite)
    else:
        write_dicom_series(hu, args.out, spacing=vol.spacing, reference=vol, overwrite=args.overwrite,
                           **dicom_tags)


def _cmd_simulate(args: argparse.Namespace) -> int:
    _refuse_existing_output(args.out, args.overwrite)
    kind = _output_kind(args.out)
    window = _window_option(args.window)
    vol = _load_input(args)
    geom = ScanGeometry(n_views=args.views, bin_mm=args.bin_mm, filter_name=args.filter)
    _check_output(args, vol, kind, series_description="Simulated LDCT", window=window)
    n0 = args.n0
    if args.noise_sigma is not None:
        mid = vol.hu[vol.hu.shape[0] // 2] if vol.hu.ndim == 3 else vol.hu
        n0, got = n0_for_noise_sigma(mid, vol.spacing[1], args.noise_sigma, geometry=geom, seed=args.seed)
        print(f"N0 = {n0:.0f} photons per ray gives {got:.1f} HU soft-tissue noise on the middle slice "
              f"(asked: {args.noise_sigma:g} HU)", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        print(f"\rsimulating slice {done}/{total}", end="", file=sys.stderr, flush=True)

    ldct = simulate_ldct(vol.hu, vol.spacing[1], n0, seed=args.seed, geometry=geom, mode=args.mode,
                         progress=progress)
    print(file=sys.stderr)
    _write_result(
        args, ldct, vol, kind, series_description=f"Simulated LDCT N0={n0:g} seed={args.seed}", window=window,
        derivation_description=(f"simulated low-dose CT ({SIMULATOR_VERSION}): N0 {n0:g} photons per ray, "
                                f"{geom.describe()}, mode {args.mode}, seed {args.seed}"),
    )
    sigma = soft_tissue_noise_sigma(vol.hu, ldct)
    print(f"LDCT (N0={n0:g} photons per ray, {geom.describe()}, seed={args.seed}; soft-tissue noise sigma "
          f"{sigma:.1f} HU) written to {args.out}")
    return 0


def _denoise_derivation(config: dict, checkpoint: str, size: int | None, shape: tuple[int, ...]) -> str:
    """DerivationDescription of a denoised series: model, training method and step, checkpoint file."""
    name = str(config.get("denoiser", "denoiser"))
    try:
        model = display_name(name)
    except Exception:  # noqa: BLE001 - an unknown name is shown as stored
        model = name
    method = config.get("method")
    step = config.get("step")
    text = f"noise reduction by the {model} denoiser"
    if method or step is not None:
        text += " (" + ", ".join(x for x in (f"{method} training" if method else "",
                                             f"step {step}" if step is not None else "") if x) + ")"
    text += f", checkpoint {Path(checkpoint).name} ({Path(checkpoint).resolve()})"
    if size is not None and tuple(shape[-2:]) != (size, size):
        text += f"; run at {size} x {size} pixels and resampled back to the source grid"
    return text


def _cmd_denoise(args: argparse.Namespace) -> int:
    _refuse_existing_output(args.out, args.overwrite)
    kind = _output_kind(args.out)
    window = _window_option(args.window)
    vol = _load_input(args)
    model, config = load_denoiser(args.checkpoint, device=args.device)
    hu_range = tuple(config.get("hu_range", (-1024.0, 1024.0)))
    size = working_size(config)
    name = str(config.get("denoiser", "denoiser"))
    tags = dict(series_description=f"{name} denoised ({Path(args.checkpoint).name})", window=window,
                derivation_description=_denoise_derivation(config, args.checkpoint, size, vol.hu.shape))
    _check_output(args, vol, kind, **tags)  # before the inference: a bad --out fails in seconds
    # At the network's working size (the shipped models: 256 px), resampled back to the input's grid.
    out = denoise_volume(model, vol.hu, hu_range, batch_size=args.batch_size, image_size=size)
    _write_result(args, out, vol, kind, **tags)
    print(f"denoised volume written to {args.out}")
    return 0


def _cmd_detect(args: argparse.Namespace) -> int:
    _refuse_existing_output(args.out, args.overwrite)
    check_destination(args.out, "boxes CSV")
    vol = _load_input(args)
    detector, config = load_detector(args.checkpoint, device=args.device)
    hu_range = tuple(config.get("hu_range", (-1024.0, 1024.0)))
    boxes, scores = {}, {}
    size = working_size(config)
    if size is not None and tuple(vol.hu.shape[-2:]) != (size, size):  # the detector's working size
        results = detect_at_size(detector, vol.hu, range(vol.hu.shape[0]), size, hu_range, args.k,
                                 args.score_thresh)
    else:
        results = detect_slices(detector, vol.hu, hu_range, k=args.k, score_thresh=args.score_thresh)
    for result in results:
        z = int(result["slice"])
        if len(result["boxes"]):
            boxes[z] = np.asarray(result["boxes"], dtype=np.float32)
            scores[z] = np.asarray(result["scores"], dtype=np.float32)
    # beside the array indices: SOPInstanceUID, InstanceNumber and the LPS mm centre of each box's slice
    write_boxes_csv(boxes, args.out, scores=scores, overwrite=args.overwrite, reference=vol)
    print(f"{sum(len(b) for b in boxes.values())} detections on {len(boxes)} slices written to {args.out}")
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
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


_WINDOW_HELP = ("display window of a DICOM --out: a preset (lung, mediastinum, abdomen, soft_tissue, liver, bone, "
                "brain) or W,L in HU (default: the input's window, else one for its body part, else soft tissue)")


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
    p.add_argument("--denoiser", default=None, help="denoiser (default cpce on the CPU, redcnn on CUDA)")
    p.add_argument("--cache-dir", default=None, help="where simulated LDCT is cached (default sample_data/.cache)")
    p.add_argument("--loss-reduction", dest="loss_reduction", default="paper", choices=["paper", "normalised"],
                   help="Eq. 8 as the paper writes it (default) or with scale-free terms")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("pretrain-detector", help="train an NDCT lesion detector (the shipped ones: faster_rcnn, fcos)")
    p.add_argument("--arch", default="faster_rcnn", choices=["faster_rcnn", "fcos"],
                   help="faster_rcnn (LIDnet's detector, seed 0) or fcos (the independent judge, seed 1)")
    p.add_argument("--out", default=None, help="weights file to write (fp16; recipe JSON beside it)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (recipe: 1200)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--backbone", default=None, help="resnet18 (recipe), resnet34, resnet50")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--run-dir", dest="run_dir", default=None, help="progress/STOP/resume folder (default OUT.run)")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.add_argument("--measure-only", dest="measure_only", default=None, metavar="WHY",
                   help="do not train: measure --out again and rewrite its JSON record (WHY is kept in it)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("study", help="Eq. 8 reduction x lambda_1 x perceptual, over seeds (docs/reproduction.md)")
    p.add_argument("--out", default="lidnet-study")
    p.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--n0", type=float, default=1000.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--fast", action="store_true", help="tiny budget (tests): the numbers mean nothing")
    p.add_argument("--reductions", nargs="+", default=["paper", "normalised"], choices=["paper", "normalised"],
                   help="Eq. 8 reductions to study (default both)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes, one per reduction (default: one per reduction on a multi-core CPU, else 1)")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("reproduce", help="the paper's Tables 2-4 and Fig. 3: every denoiser, baseline vs LIDnet")
    p.add_argument("--out", default="lidnet-reproduction", help="report folder (default: lidnet-reproduction)")
    p.add_argument("--fast", action="store_true", help="tiny budget (tests): the numbers mean nothing")
    p.add_argument("--denoisers", default=None, help="comma-separated denoiser names (default: all registered)")
    p.add_argument("--gan-denoisers", default=None,
                   help="denoisers of Table 4, CNN vs GAN form (default: the first denoiser; '' = none)")
    p.add_argument("--fig3-denoiser", default=None, help="denoiser of Fig. 3 (default: the first denoiser)")
    p.add_argument("--seed", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--n0", type=float, default=1000.0, help="photons per ray of the simulated LDCT (default 1000)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cuda, mps or cpu")
    p.add_argument("--cache-dir", default=None, help="where simulated LDCT is cached (default sample_data/.cache)")
    p.add_argument("--loss-reduction", dest="loss_reduction", default="paper", choices=["paper", "normalised"])
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
    p.add_argument("--loss-reduction", dest="loss_reduction", default=None, choices=["paper", "normalised"],
                   help="override the config's Eq. 8 reduction")
    p.add_argument("--stream", action="store_true",
                   help="stream slices from memory-mapped caches on disk (config 'streaming'; for data larger than RAM)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("simulate", help="simulate low-dose CT (Poisson noise in the sinogram at N0 photons per ray)")
    p.add_argument("input", help="DICOM folder/file, NIfTI, NRRD or MHA (at its native pixel size)")
    p.add_argument("--n0", type=float, default=1000.0, help="photons per ray (detector bin and view), default 1000")
    p.add_argument("--noise-sigma", dest="noise_sigma", type=float, default=None,
                   help="instead of --n0: the soft-tissue noise in HU wanted (N0 is found on the middle slice)")
    p.add_argument("--views", type=int, default=1000, help="views over 180 degrees (default 1000)")
    p.add_argument("--bin-mm", dest="bin_mm", type=float, default=1.0, help="detector bin pitch in mm (default 1.0)")
    p.add_argument("--filter", default="hann", choices=["hann", "ramp", "shepp-logan", "cosine", "hamming"],
                   help="FBP window (default hann)")
    p.add_argument("--mode", default="noise_only", choices=["noise_only", "full"],
                   help="noise_only: NDCT + FBP(noise) (default); full: FBP of the noisy sinogram")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--series-uid", default=None, help="choose one series in a folder holding several")
    p.add_argument("--out", required=True,
                   help="output volume (.nii.gz, .nrrd, .mha) or a folder (derived DICOM series, same study)")
    p.add_argument("--window", default=None, help=_WINDOW_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("denoise", help="denoise a CT volume with a trained checkpoint")
    p.add_argument("input")
    p.add_argument("--checkpoint", required=True, help="denoiser.pt")
    p.add_argument("--out", required=True, help="a folder (derived DICOM series) or .nii.gz/.nrrd/.mha")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--series-uid", default=None, help="choose one series in a folder holding several")
    p.add_argument("--window", default=None, help=_WINDOW_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse)")
    p.set_defaults(func=_cmd_denoise)

    p = sub.add_parser("detect", help="detect lesions with a trained detector; boxes to CSV")
    p.add_argument("input")
    p.add_argument("--checkpoint", required=True, help="detector.pt")
    p.add_argument("--out", required=True,
                   help="boxes CSV (slice, x0, y0, x1, y1, label, score, SOPInstanceUID, InstanceNumber, LPS mm)")
    p.add_argument("--device", default="auto")
    p.add_argument("--k", type=int, default=5, help="top-K RPN proposals kept per slice")
    p.add_argument("--score-thresh", type=float, default=0.5)
    p.add_argument("--series-uid", default=None, help="choose one series in a folder holding several")
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
