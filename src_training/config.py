"""Training configuration of napari-lidnet (:class:`TrainConfig`).

Defaults follow the LIDnet paper (Chen et al., ACM MM 2021, arXiv:2104.08845, Sec. 4.1 and
Algorithm 1) where the paper gives a value: Faster R-CNN detector with a ResNet-50 FPN backbone, K = 5 proposals, lambda_1 = lambda_2 = 5, T1 = T2 = 4000, T3 = 2000, Adam, learning rates
1e-4 (denoiser) and 5e-3 (detector), batch 8, N0 = 1000 (lung CT). The default denoiser is RED-CNN, the
classic LDCT baseline; the paper's tables report WGAN-VGG, CPCE, MAP-NN, SSMS and Res-HLF, not RED-CNN.

The configuration is saved as ``RUN_DIR/config.json`` and inside every checkpoint (``"config"``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .checkpoint import atomic_write_text
from .errors import ConfigError

from .models.denoisers import DENOISERS

#: Denoiser names accepted by ``TrainConfig.denoiser``: every key of ``models.denoisers.DENOISERS``.
DENOISER_NAMES = tuple(DENOISERS)
DETECTOR_BACKBONES = ("resnet50", "resnet34", "resnet18")  # as models.detector.BACKBONES
OPTIMIZERS = ("adam", "sgd")
FORMS = ("cnn", "gan")  # LIDnet's CNN form (Eq. 8) or GAN form (Eq. 5, WGAN-GP critic of Eq. 7)
STRATEGIES = ("collaborative", "simultaneous")  # Algorithm 1, or the ablation of Fig. 3
PERCEPTUALS = ("roi", "global", "none")  # Eq. 4 in the top-K proposals, over whole FPN maps, or dropped
BASELINE_LOSSES = ("mae", "published")  # baseline with the reconstruction loss only (this project's control) or its published loss
TASK_NETWORKS = ("detector", "segmentation")  # TOD-Net's frozen downstream network
LOSS_REDUCTIONS = ("paper", "normalised")  # Eq. 8 as the paper writes it, or scale-free terms
LR_SCHEDULES = ("constant", "cosine")
SIM_FILTERS = ("hann", "ramp", "shepp-logan", "cosine", "hamming")  # as simulation.FILTERS


@dataclass
class TrainConfig:
    """Every knob of LIDnet / baseline training.

    Attributes
    ----------
    denoiser : str
        Denoiser architecture: a key of ``models.denoisers.DENOISERS`` (``"redcnn"``, ``"cpce"``, ...;
        RED-CNN is not in the paper's tables, CPCE, WGAN-VGG, MAP-NN, SSMS and Res-HLF are).
    detector_backbone : str
        ResNet depth of the Faster R-CNN FPN backbone (paper: ``"resnet50"``; tests use ``"resnet18"``).
    detector_weights : str or None
        Optional local file with backbone weights for :func:`build_detector` (never downloaded).
    k_proposals : int
        K, the number of top RPN proposals of the ROI perceptual loss (paper: 5; Eq. 4).
    lambda_roi, lambda_det : float
        lambda_1 and lambda_2 of Eq. 8 (paper: 5, 5).
    t1, t2, t3 : int
        Algorithm 1: detector steps on NDCT (T1), denoiser steps per round (T2), detector steps on
        denoised images per round (T3). Paper: 4000, 4000, 2000.
    rounds : int
        Number of (T2, T3) rounds after T1 (paper: 1).
    baseline_steps : int or None
        Denoiser steps of the MAE-only baseline; ``None`` = ``t2 * rounds`` (the same denoiser budget as
        LIDnet). See :attr:`effective_baseline_steps`.
    batch_size : int
        Slices per step (paper: 8).
    lr_denoiser, lr_detector : float
        Learning rates. Paper: 1e-4 and 5e-3, both Adam. Default here: 1e-4 for both, because Adam at
        5e-3 made a from-scratch detector diverge within a few steps in our runs (loss -> NaN); set
        ``lr_detector=5e-3`` to follow the paper exactly (e.g. with a pretrained backbone).
    detector_optimizer : str
        ``"adam"`` (paper) or ``"sgd"`` (momentum :attr:`detector_momentum`). Adam at 5e-3 can be
        unstable on small data; ``"sgd"`` with 5e-3 is torchvision's usual Faster R-CNN recipe.
    detector_momentum : float
        SGD momentum (ignored by Adam).
    grad_clip_norm : float or None
        If set, gradient norm clipping of the network being trained (not in the paper).
    hu_range : (float, float)
        HU range clipped and scaled to [0, 1] for the networks.
    n0 : float
        Incident photon count N0 of the simulated low-dose scan (paper: 1000 lung CT, 3000 PE-CT).
    seed : int
        Seed of everything (model init, data order, crops, synthetic nodules, LDCT simulation).
    image_size : int or None
        Resample every slice to ``image_size x image_size`` pixels (boxes scaled, spacing updated);
        ``None`` keeps the native size (paper: 512).
    crop_size : int or None
        Random square training crops of this size; ``None`` = whole slices.
    synthetic_nodules_per_slice : int
        Synthetic nodules inserted per slice before simulation (0 = none).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    checkpoint_every : int
        Save ``trainer_state.pt`` every this many steps (0 = only at stop/end).
    train_data : list of str
        Training sources: ``"sample:<case>"``, a CT path (boxes CSV beside it), an ``.npz``, or a dataset
        manifest written by ``lidnet dataset index``: ``"manifest:PATH#train"`` (``#val``, ``#test``, ``#all``,
        ``#case=<id>``; see :mod:`src_training.data.manifest`).
    streaming : bool
        Stream slices from per-case float32 ``.npy`` caches on disk (memory-mapped;
        :class:`src_training.data.streaming.StreamingSliceDataset`) instead of holding every case in memory.
        Use it for datasets larger than RAM. Same items, same order as the in-memory dataset.
    cache_dir : str or None
        Folder caching simulated low-dose volumes; ``None`` = ``RUN_DIR/ldct_cache``.
    num_workers : int
        DataLoader worker processes (0 = load in the training process).
    log_every : int
        Write every n-th ``step`` event to ``progress.jsonl`` (all events are still yielded).
    amp : bool
        Mixed precision on CUDA (``torch.autocast`` bf16 where the GPU supports it, else fp16 with a
        GradScaler); ignored on the CPU/MPS. Default False (full fp32, as the paper).
    form : str
        ``"cnn"`` (Eq. 8, default) or ``"gan"``: LIDnet's GAN form (Eq. 5), the T2 denoiser loss gets the
        adversarial term ``lambda_adv * (-mean C(F(x)))`` of a WGAN-GP critic C trained with Eq. 7.
    lambda_gp : float
        WGAN-GP gradient-penalty weight of Eq. 7 (paper and Gulrajani et al. 2017: 10).
    lr_critic : float
        Critic learning rate (paper: 4e-4; Adam, betas (0.5, 0.9) as WGAN-VGG).
    critic_steps : int
        Critic updates per denoiser step (WGAN-GP's n_critic; default 5 as Gulrajani et al. 2017,
        Algorithm 1). The first uses the step's batch, the others the next batches of the data stream.
    lambda_adv : float
        Weight of the denoiser's adversarial term relative to the reconstruction loss (weight 1). The
        paper gives no value; default 1e-3, the adversarial weight SRGAN (Ledig et al., CVPR 2017) uses
        next to a unit-weight content loss, which keeps the unbounded WGAN score from dominating MAE on
        the [0, 1] scale.
    strategy : str
        ``"collaborative"`` (Algorithm 1) or ``"simultaneous"`` (the ablation of Fig. 3): after the same
        T1, ``rounds`` phases ``joint`` of ``t2 + t3`` steps each, so the total step count equals
        Algorithm 1's ``t1 + rounds * (t2 + t3)``. Every joint step updates the denoiser with the frozen
        detector (Eq. 8) and then the detector with the detection loss on the same batch's denoised
        images F(x) (computed before the denoiser's update, detached), never on NDCT.
    perceptual : str
        ``"roi"`` (Eq. 4 in the top-K RPN proposals), ``"global"`` (the same mean squared feature
        difference over the whole FPN maps, levels 0-3) or ``"none"`` (the lambda_1 term dropped).
    baseline_loss : str
        ``"mae"`` (default: the reconstruction loss only, so that baseline and LIDnet differ by Eq. 8's extra
        terms alone; this project's stricter control, NOT the paper's protocol: the paper trained its
        baselines with their own published losses, VGG perceptual weight 100, SSIM weight 50) or
        ``"published"``: each
        baseline with its own published loss (:mod:`src_training.baseline_losses`).
    vgg_weights : str or None
        Local VGG-19 weights file for published perceptual losses (never downloaded).
    task_network : str
        TOD-Net's frozen downstream network: ``"detector"`` (the Faster R-CNN, detection loss) or
        ``"segmentation"`` (a small 2-D U-Net, Dice loss on ellipses inscribed in the lesion boxes).
    task_weights : str or None
        A ``detector.pt`` / ``segmenter.pt`` to load as the downstream network; ``None`` = train it on
        NDCT for ``t1`` steps first (phase T1), then freeze it.
    lambda_task : float
        Weight of TOD-Net's task-oriented loss (default 5, LIDnet's lambda_2, so that TOD-Net with the
        detector differs from LIDnet's CNN form only by the missing ROI term and T3).
    loss_reduction : str
        How the terms of Eq. 8 are reduced. ``"paper"`` (default): as the paper writes Eq. 8, the
        reconstruction term is ``(1/N) sum_i ||F(x_i) - y_i||_1``, the absolute error SUMMED over each image's
        pixels and averaged over the batch (MAE per the appendix); the ROI term is Eq. 4 (mean squared feature
        difference per pooled element, averaged over proposals); the detection term is the detector's loss.
        ``"normalised"``: every term scale-free: the per-pixel mean absolute error, and the ROI (or global)
        feature loss divided by the mean squared NDCT feature in the same boxes (a relative error, so
        lambda_1 keeps its meaning whatever the detector's feature scale). The default is the faithful one,
        and the study of docs/reproduction.md (reduction x lambda_1 x perceptual, 3 seeds, CPU budget)
        measured it sound: with ``"paper"`` the reconstruction term takes 96-99.7 % of the gradient norm and
        no lambda_1 differs from the baseline on AP-50, PSNR or radiomics; with ``"normalised"`` lambda_2 x
        detection takes 50-82 % and costs 1.2-2.7 dB PSNR (AP-50 at most +0.9 points). Note the paper's
        balance also depends on the image size: its term sums 512 x 512 pixels, a 128 px crop sums 16 x
        fewer.
    lr_schedule : str
        ``"constant"`` (default) or ``"cosine"``: each network's learning rate decays to 0 over the steps
        that train it (half cosine), after ``warmup_steps`` linear warm-up steps. Used by
        ``lidnet pretrain-detector``.
    warmup_steps : int
        Linear learning-rate warm-up steps of each network (0 = none).
    grad_shares_every : int
        Measure each loss term's share of the denoiser's gradient norm every this many denoiser steps
        (0 = never; 1 = every step, about +20 % T2 step time). Reported in the progress events
        (``grad_shares``) and in the reports.
    data_seed : int or None
        Seed of the data (LDCT noise realisation, synthetic nodules); None = ``seed``. Fixing it while
        varying ``seed`` varies only the training (initialisation, order, crops), as a multi-seed study wants.
    nodule_diameter_mm : (float, float)
        Range of the synthetic nodule diameters, mm (default 6-24).
    lesion_crop_fraction : float
        Probability that a training crop is centred on a lesion (see :class:`src_training.data.SliceDataset`).
    sim_views, sim_bin_mm, sim_filter
        Scanner geometry of the low-dose simulation (:class:`src_training.simulation.ScanGeometry`): views over
        180 degrees (1000), detector bin pitch at the isocentre in mm (1.0), FBP window (``hann``; ``ramp``,
        ``shepp-logan``, ``cosine``, ``hamming``).
    """

    denoiser: str = "redcnn"
    detector_backbone: str = "resnet50"
    detector_weights: Optional[str] = None
    k_proposals: int = 5
    lambda_roi: float = 5.0
    lambda_det: float = 5.0
    t1: int = 4000
    t2: int = 4000
    t3: int = 2000
    rounds: int = 1
    baseline_steps: Optional[int] = None
    batch_size: int = 8
    lr_denoiser: float = 1e-4
    lr_detector: float = 1e-4
    detector_optimizer: str = "adam"
    detector_momentum: float = 0.9
    grad_clip_norm: Optional[float] = None
    hu_range: tuple[float, float] = (-1024.0, 1024.0)
    n0: float = 1000.0
    seed: int = 0
    image_size: Optional[int] = None
    crop_size: Optional[int] = None
    synthetic_nodules_per_slice: int = 0
    device: str = "auto"
    checkpoint_every: int = 500
    train_data: list[str] = field(default_factory=list)
    cache_dir: Optional[str] = None
    streaming: bool = False
    num_workers: int = 0
    log_every: int = 1
    amp: bool = False
    form: str = "cnn"
    lambda_gp: float = 10.0
    lr_critic: float = 4e-4
    critic_steps: int = 5
    lambda_adv: float = 1e-3
    strategy: str = "collaborative"
    perceptual: str = "roi"
    baseline_loss: str = "mae"
    vgg_weights: Optional[str] = None
    task_network: str = "detector"
    task_weights: Optional[str] = None
    lambda_task: float = 5.0
    loss_reduction: str = "paper"
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_shares_every: int = 1
    data_seed: Optional[int] = None
    nodule_diameter_mm: tuple[float, float] = (6.0, 24.0)
    lesion_crop_fraction: float = 0.0
    sim_views: int = 1000
    sim_bin_mm: float = 1.0
    sim_filter: str = "hann"

    # ------------------------------------------------------------------ derived values
    @property
    def effective_baseline_steps(self) -> int:
        """Baseline denoiser steps: :attr:`baseline_steps`, or ``t2 * rounds`` when it is None."""
        return int(self.baseline_steps) if self.baseline_steps is not None else int(self.t2) * int(self.rounds)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every value; normalise types (``hu_range`` to a float tuple, names to lower case).

        Returns
        -------
        TrainConfig
            ``self`` (for chaining).

        Raises
        ------
        ConfigError
            The first invalid value, with what is allowed.
        """

        def _int(name: str, lo: int, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
                raise ConfigError(f"Config '{name}' must be an integer, got {v!r}.")
            v = int(v)
            if v < lo:
                raise ConfigError(f"Config '{name}' must be >= {lo}, got {v}.")
            setattr(self, name, v)

        def _float(name: str, lo: float, strict: bool, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ConfigError(f"Config '{name}' must be a finite number, got {v!r}.")
            v = float(v)
            if (strict and not v > lo) or (not strict and v < lo):
                raise ConfigError(f"Config '{name}' must be {'>' if strict else '>='} {lo}, got {v}.")
            setattr(self, name, v)

        def _choice(name: str, choices: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if not isinstance(v, str) or v.strip().lower() not in choices:
                raise ConfigError(f"Config '{name}' must be one of {', '.join(choices)}; got {v!r}.")
            setattr(self, name, v.strip().lower())

        _choice("denoiser", DENOISER_NAMES)
        _choice("detector_backbone", DETECTOR_BACKBONES)
        _choice("detector_optimizer", OPTIMIZERS)
        if self.detector_weights is not None and not isinstance(self.detector_weights, str):
            raise ConfigError(f"Config 'detector_weights' must be a file path or null, got {self.detector_weights!r}.")
        _int("k_proposals", 1)
        _float("lambda_roi", 0.0, strict=False)
        _float("lambda_det", 0.0, strict=False)
        for name in ("t1", "t2", "t3", "rounds"):
            _int(name, 0)
        _int("baseline_steps", 0, allow_none=True)
        _int("batch_size", 1)
        _float("lr_denoiser", 0.0, strict=True)
        _float("lr_detector", 0.0, strict=True)
        _float("detector_momentum", 0.0, strict=False)
        if self.detector_momentum >= 1.0:
            raise ConfigError(f"Config 'detector_momentum' must be < 1, got {self.detector_momentum}.")
        _float("grad_clip_norm", 0.0, strict=True, allow_none=True)
        hr = self.hu_range
        if (
            not isinstance(hr, (list, tuple))
            or len(hr) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) for v in hr)
            or not float(hr[1]) > float(hr[0])
        ):
            raise ConfigError(f"Config 'hu_range' must be [low, high] HU with high > low, got {hr!r}.")
        self.hu_range = (float(hr[0]), float(hr[1]))
        _float("n0", 0.0, strict=True)
        _int("seed", 0)
        _int("image_size", 8, allow_none=True)
        _int("crop_size", 8, allow_none=True)
        _int("synthetic_nodules_per_slice", 0)
        if not isinstance(self.device, str):
            raise ConfigError(f"Config 'device' must be a string (auto, cpu, cuda, mps), got {self.device!r}.")
        dev = self.device.strip().lower()
        if not (dev in ("auto", "cpu", "mps", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"Config 'device' must be auto, cpu, cuda, cuda:N or mps; got {self.device!r}.")
        self.device = dev
        _int("checkpoint_every", 0)
        if isinstance(self.train_data, (str, bytes)) or not isinstance(self.train_data, (list, tuple)) or not all(
            isinstance(s, str) and s.strip() for s in self.train_data
        ):
            raise ConfigError(
                f"Config 'train_data' must be a list of sources ('sample:<case>', a CT path, an .npz or "
                f"'manifest:PATH#train'), "
                f"got {self.train_data!r}."
            )
        self.train_data = [str(s) for s in self.train_data]
        if self.cache_dir is not None and not isinstance(self.cache_dir, str):
            raise ConfigError(f"Config 'cache_dir' must be a folder path or null, got {self.cache_dir!r}.")
        if not isinstance(self.streaming, bool):
            raise ConfigError(f"Config 'streaming' (read slices from disk) must be true or false, got {self.streaming!r}.")
        _int("num_workers", 0)
        _int("log_every", 1)
        if not isinstance(self.amp, bool):
            raise ConfigError(f"Config 'amp' (mixed precision on CUDA) must be true or false, got {self.amp!r}.")
        _choice("form", FORMS)
        _float("lambda_gp", 0.0, strict=False)
        _float("lr_critic", 0.0, strict=True)
        _int("critic_steps", 1)
        _float("lambda_adv", 0.0, strict=False)
        _choice("strategy", STRATEGIES)
        _choice("perceptual", PERCEPTUALS)
        _choice("baseline_loss", BASELINE_LOSSES)
        _choice("task_network", TASK_NETWORKS)
        for name in ("vgg_weights", "task_weights"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"Config '{name}' must be a file path or null, got {getattr(self, name)!r}.")
        _float("lambda_task", 0.0, strict=False)
        _choice("loss_reduction", LOSS_REDUCTIONS)
        _choice("lr_schedule", LR_SCHEDULES)
        _int("warmup_steps", 0)
        _int("grad_shares_every", 0)
        _int("data_seed", 0, allow_none=True)
        nd = self.nodule_diameter_mm
        if (
            not isinstance(nd, (list, tuple))
            or len(nd) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) for v in nd)
            or not 0 < float(nd[0]) <= float(nd[1])
        ):
            raise ConfigError(f"Config 'nodule_diameter_mm' must be [min, max] mm with 0 < min <= max, got {nd!r}.")
        self.nodule_diameter_mm = (float(nd[0]), float(nd[1]))
        _float("lesion_crop_fraction", 0.0, strict=False)
        if self.lesion_crop_fraction > 1.0:
            raise ConfigError(f"Config 'lesion_crop_fraction' must be in [0, 1], got {self.lesion_crop_fraction}.")
        _int("sim_views", 2)
        _float("sim_bin_mm", 0.0, strict=True)
        _choice("sim_filter", SIM_FILTERS)
        return self

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``hu_range`` as a list). Loadable with ``torch.load(weights_only=True)``."""
        d = dataclasses.asdict(self)
        d["hu_range"] = [float(v) for v in self.hu_range]
        d["train_data"] = list(self.train_data)
        d["nodule_diameter_mm"] = [float(v) for v in self.nodule_diameter_mm]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build and validate a config from a dict (missing keys take the defaults).

        Raises
        ------
        ConfigError
            Not a dict, unknown keys (listed, with the known ones), or invalid values.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"A training configuration must be a JSON object, got {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown configuration key(s): {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}."
            )
        cfg = cls(**data)
        return cfg.validate()

    def to_json(self) -> str:
        """JSON text (indented, sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Parse JSON text; :class:`ConfigError` on invalid JSON or values."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"The training configuration is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write the config as JSON atomically; returns the path."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a JSON config file.

        Raises
        ------
        ConfigError
            File missing/unreadable, invalid JSON, unknown keys or invalid values.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read the training configuration {path}: {exc}") from exc
        try:
            return cls.from_json(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
