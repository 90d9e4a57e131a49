"""Which loss term drives training: each term's share of the denoiser's gradient norm.

Eq. 8 of LIDnet (Chen et al., ACM MM 2021) adds three terms with weights 1, lambda_1, lambda_2; how much each
one moves the denoiser depends on their gradients, not on their values. :func:`term_gradients` back-propagates
every weighted term separately to the denoiser's parameters, returns the gradient of the sum (equal to one
``backward`` of the total up to floating-point rounding: the per-term gradients are added in another order)
and the share of each term::

    share_t = ||g_t|| / sum_s ||g_s||,   g_t = d(w_t L_t) / d theta   (L2 norms over all parameters)

Shares are in [0, 1] and sum to 1 (a term whose gradient is zero has share 0). They measure how hard each term
pulls, not in which direction: terms that pull against each other each keep their share although they partly
cancel. Under torchrun each rank measures its own shard before the gradients are averaged (the logged value is
the mean over ranks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TermGradients", "term_gradients"]


@dataclass
class TermGradients:
    """Per-term gradients of a sum of loss terms.

    Attributes
    ----------
    shares : dict str -> float
        ``||g_t|| / sum_s ||g_s||`` per term (sum 1; all 0 when every gradient is 0).
    norms : dict str -> float
        ``||g_t||`` (L2 over all parameters).
    total : list of Tensor or None
        The gradient of the sum, one entry per parameter (None for a parameter no term reaches).
    """

    shares: dict[str, float]
    norms: dict[str, float]
    total: list[Tensor | None]


def term_gradients(terms: Mapping[str, Tensor], params: Sequence[Tensor], *, retain_graph: bool = False) -> TermGradients:
    """Gradients of each (already weighted) loss term w.r.t. ``params`` and their shares of the norm.

    Parameters
    ----------
    terms : mapping str -> scalar Tensor
        The weighted terms, e.g. ``{"rec": L_rec, "roi": lambda_1 * L_roi, "det": lambda_2 * L_det}``; their sum
        is the loss being minimised. Terms may share a graph (it is kept until the last one).
    params : sequence of Tensor
        The parameters of the network being trained (``requires_grad=True``).
    retain_graph : bool
        Keep the graph after the last term (default False).

    Returns
    -------
    TermGradients

    Raises
    ------
    ValueError
        No terms, or a term that is not a scalar.
    """
    names = list(terms)
    if not names:
        raise ValueError("term_gradients needs at least one loss term.")
    params = list(params)
    total: list[Tensor | None] = [None] * len(params)
    norms: dict[str, float] = {}
    for i, name in enumerate(names):
        t = terms[name]
        if t.dim() != 0:
            raise ValueError(f"Loss term '{name}' must be a scalar, got shape {tuple(t.shape)}.")
        keep = retain_graph or i < len(names) - 1
        if not t.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(t, params, retain_graph=keep, allow_unused=True)
        sq = torch.zeros((), dtype=torch.float64)
        for j, g in enumerate(grads):
            if g is None:
                continue
            sq = sq + g.detach().double().pow(2).sum().cpu()
            total[j] = g if total[j] is None else total[j] + g
        norms[name] = float(sq.sqrt())
    s = sum(norms.values())
    shares = {k: (v / s if s > 0 else 0.0) for k, v in norms.items()}
    return TermGradients(shares=shares, norms=norms, total=total)
