"""The batched PyTorch parallel-beam projector of :mod:`src_training.simulation`: line integrals
(:func:`_project`, a discrete Radon transform) and the FBP back-projection (:func:`_backproject`), both with
``torch.nn.functional.grid_sample`` on the CPU, several slices per call (the slices of a batch are channels
that share each sampling grid, so results do not depend on how slices are batched, to float32 rounding).

Arrays: images ``(B, M, M)`` of attenuation in /mm on an ``M x M`` grid of ``pitch`` mm, sinograms
``(B, V, M)`` (views x detector bins), float64 in and out; sampling grids are float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


_CHUNK_ELEMENTS = 4_000_000  # grid_sample output elements per call (small chunks stay in the CPU caches)


def _theta(n_views: int) -> torch.Tensor:
    return torch.arange(n_views, dtype=torch.float64) * (math.pi / n_views)


def _project(mu_d: torch.Tensor, pitch: float, theta: torch.Tensor) -> torch.Tensor:
    """Line integrals of ``mu_d`` (B, M, M) /mm on an M x M grid of ``pitch`` mm: (B, V, M) float64, one bin
    per grid column, rays sampled every ``pitch`` mm (bilinear), parallel beam. Point of bin t on ray s at
    angle th: ``t (cos th, sin th) + s (-sin th, cos th)`` in (x = column, y = row) mm from the centre.
    Sampling grids are built in float32 in normalised coordinates, a few views per ``grid_sample`` call (the
    slices of the batch are channels that share each grid)."""
    b, m, _ = mu_d.shape
    # bin / ray-sample centres (i + 0.5) * pitch - M * pitch / 2, in units of the half width M * pitch / 2
    u = ((torch.arange(m, dtype=torch.float64) + 0.5) * (2.0 / m) - 1.0).to(torch.float32)
    img = mu_d.to(torch.float32)[None]  # (1, B, M, M)
    cos, sin = torch.cos(theta).to(torch.float32), torch.sin(theta).to(torch.float32)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * m * m))
    out = torch.empty(b, len(theta), m, dtype=torch.float64)
    tt = u[None, None, :]
    ss = u[None, :, None]
    for i in range(0, len(theta), chunk):
        c = cos[i:i + chunk, None, None]
        sn = sin[i:i + chunk, None, None]
        grid = torch.stack([tt * c - ss * sn, tt * sn + ss * c], dim=-1).reshape(1, -1, m, 2)
        v = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[:, i:i + chunk] = v.reshape(b, -1, m, m).sum(dim=2).to(torch.float64) * pitch
    return out


def _backproject(q: torch.Tensor, pitch: float, theta: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """FBP back-projection of filtered projections ``q`` (B, V, M) onto the points ``(ys, xs)`` (mm from the
    centre; 1-D row and column coordinates): (B, len(ys), len(xs)) float64, ``pi / V * sum_v q_v(t)`` with
    linear interpolation in t (``grid_sample`` on the sinogram: exact rows, bilinear = linear in t)."""
    b, nv, m = q.shape
    half = m * pitch / 2.0
    ny, nx = len(ys), len(xs)
    img = q.to(torch.float32)[None]  # (1, B, V, M)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * ny * nx))
    acc = torch.zeros(b, ny * nx, dtype=torch.float64)
    X = (xs / half).to(torch.float32)[None, None, :]
    Y = (ys / half).to(torch.float32)[None, :, None]
    cos, sin = torch.cos(theta).to(torch.float32), torch.sin(theta).to(torch.float32)
    rows = ((2.0 * torch.arange(nv, dtype=torch.float64) + 1.0) / nv - 1.0).to(torch.float32)
    for i in range(0, nv, chunk):
        c = cos[i:i + chunk, None, None]
        gx = X * c + Y * sin[i:i + chunk, None, None]  # (c, ny, nx) = t / half
        gy = rows[i:i + chunk, None, None].expand_as(gx)
        grid = torch.stack([gx, gy], dim=-1).reshape(1, gx.shape[0], ny * nx, 2)
        v = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (1, B, c, ny*nx)
        acc += v[0].sum(dim=1).to(torch.float64)
    return (acc * (math.pi / nv)).reshape(b, ny, nx)
