"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N -m src_training train --config C --out RUN_DIR`` starts N copies of the
trainer; each reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment (set by torchrun) and
:func:`init_distributed` joins the process group: NCCL when the training device is CUDA (one GPU per local
rank, ``cuda:LOCAL_RANK``), gloo on the CPU. Without torchrun (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``)
every helper here is a no-op and training is the ordinary single-process run, bit for bit.

Data parallelism as in LIDnet's training (Chen et al., ACM MM 2021, arXiv:2104.08845, Algorithm 1): every
rank runs the same phase (T1/T2/T3) at the same step on its own shard of the batch; the gradients of the
network being trained are averaged over the ranks before the optimizer step
(:func:`average_gradients_`), so every rank keeps identical weights. The effective batch is
``batch_size x WORLD_SIZE`` slices.

Why not ``DistributedDataParallel``: LIDnet calls detector methods other than ``forward``
(``losses_and_rpn``, ``rpn_topk``), freezes and unfreezes whole networks per phase (``requires_grad``
toggled after construction, which DDP does not support: it fixes the set of synchronised parameters when
it wraps the module), runs the frozen denoiser under ``no_grad`` in T3, and the checkpoints and the
detector API expect the bare modules (no ``module.`` prefix). One explicit, flattened all-reduce per
optimizer step (the same amount of communication as DDP, without its overlap with the backward pass)
works for every one of these paths and for any network a trainer adds (critic, segmenter).

Only rank 0 (:func:`is_main_process`) writes files and prints; STOP/PAUSE decisions are agreed with
:func:`any_flags` so every rank stops or pauses at the same step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Optional, Sequence

import torch
from torch import nn

from .device import auto_device
from .errors import ConfigError

__all__ = [
    "DistContext",
    "launched_by_torchrun",
    "init_distributed",
    "get_context",
    "shutdown_distributed",
    "is_main_process",
    "barrier",
    "broadcast_object",
    "all_gather_object",
    "any_flags",
    "mean_values",
    "broadcast_module_",
    "average_gradients_",
]

#: Seconds a collective may wait for the other ranks before failing (torch's default is 30 minutes for
#: gloo, 10 minutes for NCCL; a long simulation on rank 0 must not time out the others).
DEFAULT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job.

    Attributes
    ----------
    rank : int
        Global rank, 0..world_size-1 (0 = the process that writes files).
    local_rank : int
        Rank on this node (selects the GPU ``cuda:local_rank``).
    world_size : int
        Number of training processes (1 = single-process run).
    backend : str or None
        ``"nccl"`` or ``"gloo"``; None when single-process.
    device : torch.device
        The device this process trains on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: Optional[str] = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


_CONTEXT: Optional[DistContext] = None
_INITIALISED_HERE = False


def launched_by_torchrun() -> bool:
    """True when the torchrun environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``) says more than one process."""
    return all(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) and int(os.environ["WORLD_SIZE"]) > 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"Environment variable {name}={os.environ.get(name)!r} is not set to an integer; launch multi-process "
            f"training with torchrun (it sets RANK, LOCAL_RANK and WORLD_SIZE)."
        ) from exc


def init_distributed(device: str | torch.device = "auto", *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the torchrun process group (idempotent); a no-op single-process context otherwise.

    Parameters
    ----------
    device : str or torch.device
        The training device asked for: a preference (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``)
        or a device. Under torchrun a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process) and
        the backend is NCCL; a CPU device uses gloo.
    timeout_s : float
        Collective timeout in seconds.

    Returns
    -------
    DistContext

    Raises
    ------
    ConfigError
        Apple MPS under torchrun (no collective backend; use ``device: "cpu"``), fewer GPUs on the node
        than processes, or a broken torchrun environment.
    """
    global _CONTEXT, _INITIALISED_HERE
    import torch.distributed as dist

    dev = device if isinstance(device, torch.device) else auto_device(str(device))
    if _CONTEXT is not None and _CONTEXT.enabled:
        return _CONTEXT
    if not dist.is_available() or not (launched_by_torchrun() or dist.is_initialized()):
        return DistContext(device=dev)
    if dist.is_initialized():  # initialised by the caller's own code
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        backend = str(dist.get_backend())
    else:
        rank, local, world = _env_int("RANK"), _env_int("LOCAL_RANK"), _env_int("WORLD_SIZE")
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "mps":
        raise ConfigError(
            "Multi-process training (torchrun) supports CUDA GPUs (NCCL) and the CPU (gloo), not Apple MPS; "
            "set \"device\": \"cpu\" in the configuration or run a single process."
        )
    if dev.type == "cuda":
        n_gpu = torch.cuda.device_count()
        if local >= n_gpu:
            raise ConfigError(
                f"torchrun started local rank {local} but this node has {n_gpu} CUDA GPU(s): use "
                f"--nproc_per_node={n_gpu} or fewer (one process per GPU)."
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=float(timeout_s)))
        _INITIALISED_HERE = True
    _CONTEXT = DistContext(rank=rank, local_rank=local, world_size=world, backend=backend, device=dev)
    return _CONTEXT


def get_context() -> DistContext:
    """The context of :func:`init_distributed`, or a single-process CPU context if it was not called."""
    return _CONTEXT if _CONTEXT is not None else DistContext()


def shutdown_distributed() -> None:
    """Leave the process group if :func:`init_distributed` created it (call once, at the end)."""
    global _CONTEXT, _INITIALISED_HERE
    import torch.distributed as dist

    if _INITIALISED_HERE and dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT, _INITIALISED_HERE = None, False


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files and prints."""
    return get_context().is_main


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def barrier() -> None:
    """Wait until every rank reaches this point (no-op single-process)."""
    ctx = get_context()
    if ctx.enabled:
        import torch.distributed as dist

        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (small objects only; returned as is single-process)."""
    ctx = get_context()
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=_comm_device(ctx) if ctx.backend == "nccl" else None)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, indexed by rank (``[obj]`` single-process)."""
    ctx = get_context()
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_flags(*flags: bool) -> tuple[bool, ...]:
    """Element-wise OR of boolean flags over all ranks (one all-reduce; the flags as given single-process).

    Used for STOP/PAUSE so that a STOP file or SIGTERM seen by any rank stops every rank at the same step.
    """
    ctx = get_context()
    if not ctx.enabled:
        return tuple(bool(f) for f in flags)
    import torch.distributed as dist

    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_values(values: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of a dict of floats (e.g. the losses of a step), keys sorted; identity single-process.

    Every rank must pass the same keys. Non-finite values propagate (NaN on one rank gives NaN).
    """
    ctx = get_context()
    if not ctx.enabled or not values:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= ctx.world_size
    out = dict(zip(keys, t.tolist()))
    return {k: out[k] for k in values}


def _flat_all_reduce_(tensors: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Sum ``tensors`` over ranks in place, one collective per dtype (flattened buffer)."""
    import torch.distributed as dist

    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        if ctx.backend != "nccl" and flat.device.type != "cpu":  # pragma: no cover - gloo with GPU tensors
            flat = flat.cpu()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank (no-op single-process).

    Makes the replicas identical before training, as DDP does when it wraps a module.
    """
    ctx = get_context()
    if not ctx.enabled:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if ctx.backend == "nccl" or t.device.type == "cpu":
                dist.broadcast(t.data, src=src)
            else:  # pragma: no cover - gloo with GPU tensors
                tmp = t.data.cpu()
                dist.broadcast(tmp, src=src)
                t.data.copy_(tmp)


def _running_stat_buffers(module: nn.Module) -> list[torch.Tensor]:
    """Floating running statistics of the norm layers of ``module`` that are in training mode."""
    out = []
    for m in module.modules():
        if (
            isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
            and getattr(m, "track_running_stats", False)
            and m.training
        ):
            out += [b for b in (m.running_mean, m.running_var) if b is not None and b.is_floating_point()]
    return out


def average_gradients_(module: nn.Module, *, local_nonfinite: bool = False,
                       params: Optional[Iterable[nn.Parameter]] = None) -> bool:
    """Average the gradients of ``module``'s trainable parameters (and its running norm statistics) over
    all ranks, in place; one flattened all-reduce per dtype. No-op single-process.

    Call after ``backward()`` and before ``optimizer.step()`` on every rank, in the same order (the ranks
    must run the same phase at the same step). A parameter without a gradient on one rank gets a zero
    gradient there before averaging (its average is the other ranks' gradient / world size); a parameter
    without a gradient on every rank keeps ``grad = None`` (the optimizer skips it, as single-process).
    Running mean/variance of norm layers in training mode (BatchNorm) are averaged too, so the replicas
    stay identical.

    Parameters
    ----------
    module : nn.Module
        The network that was just back-propagated.
    local_nonfinite : bool
        This rank's loss was NaN/inf.
    params : iterable of Parameter, optional
        The parameters to average (default: ``module``'s parameters with ``requires_grad``).

    Returns
    -------
    bool
        True if any rank reported a non-finite loss (every rank then gets True, so all can stop together).
    """
    ctx = get_context()
    if not ctx.enabled:
        return bool(local_nonfinite)
    plist = [p for p in (params if params is not None else module.parameters()) if p.requires_grad]
    has_grad = torch.tensor([0.0 if p.grad is None else 1.0 for p in plist] + [1.0 if local_nonfinite else 0.0],
                            dtype=torch.float32, device=plist[0].device if plist else ctx.device)
    for p in plist:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in plist]
    stats = _running_stat_buffers(module)
    _flat_all_reduce_(grads + stats + [has_grad], ctx)
    w = float(ctx.world_size)
    with torch.no_grad():
        for g in grads:
            g.div_(w)
        for b in stats:
            b.div_(w)
    counts = has_grad.tolist()
    for p, c in zip(plist, counts[:-1]):
        if c == 0.0:
            p.grad = None
    return counts[-1] > 0.0
