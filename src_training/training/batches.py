"""Batch order of a training run: an endless, resumable, shardable stream of batches.

Owns which slices a training step sees and in which order (:class:`BatchStream`): epoch permutations from
private generators (never the global RNG), per-item ``(index, epoch)`` requests so a dataset's random crops are
reproducible, the torchrun shard of each rank, and the stream position saved in ``trainer_state.pt``
(``data`` / ``data_detector``) so that a resumed run gets exactly the batches an uninterrupted one gets.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from src_training.data import collate_slices
from src_training.errors import CheckpointError, ConfigError


class BatchStream:
    """Endless, resumable stream of batches.

    Epoch ``e`` visits the dataset in the order ``randperm(n)`` drawn from a private generator seeded
    with ``(seed, e)``; items are requested as ``(index, epoch)`` so the dataset's random crops are
    deterministic too. The state is ``(epoch, batches consumed in the epoch)``; loader prefetching does
    not matter because resumption recomputes the order. With ``n >= batch_size`` the last incomplete
    batch of an epoch is dropped.

    Multi-process (``world_size > 1``, torchrun), as ``torch.utils.data.DistributedSampler``: every rank
    draws the same epoch permutation and takes the interleaved shard ``perm[rank::world_size]`` after the
    permutation is cut to a multiple of ``world_size`` (at most ``world_size - 1`` slices, different ones
    each epoch, are left out; with ``n < world_size`` it is repeated cyclically instead), so the shards are
    disjoint and every rank has the same number of batches of ``batch_size`` (effective batch
    ``batch_size x world_size``). ``world_size == 1`` is exactly the single-process stream.
    ``pin_memory`` pins the batches for fast host-to-GPU copies (use with a CUDA device).

    Parameters
    ----------
    dataset : Dataset
        Indexed with ``(index, epoch)`` tuples; items ``(ldct (1,H,W), ndct (1,H,W), target)`` float32 in
        [0, 1] as :class:`src_training.data.SliceDataset` (any object with ``__len__`` for the order alone).
    batch_size : int
        Slices per batch and rank.
    seed : int
        Seed of the private order generators (``config.seed``; the detector's own stream uses another).
    num_workers : int
        DataLoader worker processes (0 = load in this process).
    rank, world_size : int
        This process's rank and the number of processes (torchrun); 0 and 1 single-process.
    pin_memory : bool
        Pin batches in page-locked memory.

    Raises
    ------
    ConfigError
        Empty dataset, or ``rank`` outside ``0..world_size - 1``.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, *,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ConfigError("The training dataset is empty.")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"Rank {rank} is outside 0..{world_size - 1}.")
        self.pin_memory = bool(pin_memory)
        #: Slices of one rank per epoch (n when single-process).
        self.n_local = self.n // self.world_size if self.n >= self.world_size else 1
        self.epoch = 0
        self.pos = 0
        self._it = None

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch (per rank): ``n_local // batch_size`` (incomplete batch dropped), or 1 when
        ``n_local < batch_size``; ``n_local = n`` single-process."""
        return max(1, self.n_local // self.batch_size)

    def _batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + 17)
        perm = torch.randperm(self.n, generator=g).tolist()
        ws = self.world_size
        if ws > 1:  # this rank's shard (DistributedSampler semantics, see the class docstring)
            perm = perm[: self.n_local * ws] if self.n >= ws else (perm * ws)[:ws]
            perm = perm[self.rank::ws]
        n, bs = len(perm), self.batch_size
        if n >= bs:
            chunks = [perm[i:i + bs] for i in range(0, n - bs + 1, bs)]
        else:
            chunks = [perm]
        return [[(i, epoch) for i in c] for c in chunks]

    def _sampler(self, epoch: int, pos: int):
        while True:
            batches = self._batches(epoch)
            yield from batches[pos:]
            epoch, pos = epoch + 1, 0

    def _make_iter(self):
        gen = torch.Generator().manual_seed(self.seed * 31 + self.epoch * 1009 + self.pos + self.rank * 1000003)
        loader = DataLoader(
            self.dataset,
            batch_sampler=self._sampler(self.epoch, self.pos),
            collate_fn=collate_slices,
            num_workers=self.num_workers,
            generator=gen,
            pin_memory=self.pin_memory,
        )
        return iter(loader)

    def next(self):
        """The next batch ``(ldct (B,1,H,W) float32, ndct (B,1,H,W) float32, targets)`` (targets: one dict
        ``boxes (n,4) float32 xyxy pixels, labels (n,) int64`` per slice, :func:`~src_training.data.collate_slices`)."""
        if self._it is None:
            self._it = self._make_iter()
        batch = next(self._it)
        self.pos += 1
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        """Position ``epoch``, ``pos`` (batches consumed in the epoch) and the sizes it is valid for (``n``,
        ``batch_size``, ``world_size``): the ``data`` entry of ``trainer_state.pt``."""
        return {"epoch": int(self.epoch), "pos": int(self.pos), "n": int(self.n), "batch_size": self.batch_size,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict` (the loader is restarted at the next batch).

        Raises
        ------
        CheckpointError
            The state was saved for another data set size, batch size or number of processes.
        """
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.batch_size:
            raise CheckpointError(
                f"The trainer state was saved for {state['n']} training slices in batches of {state['batch_size']}, "
                f"but the data now have {self.n} slices in batches of {self.batch_size}: resume with the same "
                f"training data and configuration."
            )
        saved_ws = int(state.get("world_size", 1))
        if saved_ws != self.world_size:
            raise CheckpointError(
                f"The trainer state was saved by a training with {saved_ws} process(es) but this one has "
                f"{self.world_size}: resume with the same number of processes (torchrun --nnodes x "
                f"--nproc_per_node = {saved_ws}), since the data shards and the effective batch depend on it."
            )
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.close()

    def close(self) -> None:
        """Stop loader workers (a new iterator is made on the next batch)."""
        self._it = None


def batch_to_device(batch, device: torch.device):
    """``(ldct, ndct, targets)`` of :meth:`BatchStream.next` moved to ``device`` (non-blocking copies; tensors
    keep their shapes and dtypes: ``(B,1,H,W)`` float32, boxes ``(n,4)`` float32, labels ``(n,)`` int64)."""
    ldct, ndct, targets = batch
    return (
        ldct.to(device, non_blocking=True),
        ndct.to(device, non_blocking=True),
        [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets],
    )
