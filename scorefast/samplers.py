"""Langevin samplers for any score function, every update through the fused langevin_step.

* ``langevin``: unadjusted Langevin x <- x + a s(x) + sqrt(2a) z.
* ``annealed_langevin``: Song & Ermon (2019): levels sigma_1 > ... > sigma_L, T steps each with
  a_i = epsilon sigma_i^2 / sigma_L^2 and the noise-conditional score s(x, sigma_i); optional
  final denoising step x + sigma_L^2 s(x, sigma_L).

The noise follows the contract: step t of the chain draws z(seed, t), so runs are
reproducible and independent of batch chunking.
"""
from __future__ import annotations

import sys

import torch

from .langevin import langevin_step_
from .noise import random_seed


def _progress(iterable, total, enabled, desc):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr)


@torch.no_grad()
def langevin(score_fn, x: torch.Tensor, *, steps: int, step_size: float, seed: int | None = None,
             progress: bool | None = None, backend: str = "auto") -> torch.Tensor:
    """Run ULA from x (N, ...) for ``steps`` steps; x is updated in place and returned."""
    seed = random_seed() if seed is None else seed
    for t in _progress(range(steps), steps, progress, "langevin"):
        langevin_step_(x, score_fn(x), step_size=step_size, seed=seed, step=t, backend=backend)
    return x


@torch.no_grad()
def annealed_langevin(score_fn, x: torch.Tensor, sigmas, *, steps_per_level: int = 100,
                      epsilon: float = 2e-5, seed: int | None = None, final_denoise: bool = True,
                      progress: bool | None = None, backend: str = "auto") -> torch.Tensor:
    """Annealed Langevin from x (N, ...) with a noise-conditional score ``score_fn(x, sigma)``.

    Args:
        sigmas: (L,) decreasing noise levels.
        steps_per_level: T, steps at each level.
        epsilon: base step; level i uses a_i = epsilon * sigma_i^2 / sigma_L^2.
        final_denoise: finish with x + sigma_L^2 s(x, sigma_L) (Tweedie's denoiser).

    x is updated in place and returned.
    """
    sigmas = [float(s) for s in torch.as_tensor(sigmas).flatten()]
    if any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError("sigmas must be strictly decreasing")
    seed = random_seed() if seed is None else seed
    last = sigmas[-1]
    total = len(sigmas) * steps_per_level
    it = iter(_progress(range(total), total, progress, "annealed langevin"))
    t = 0
    for sigma in sigmas:
        a = epsilon * sigma**2 / last**2
        for _ in range(steps_per_level):
            next(it, None)
            langevin_step_(x, score_fn(x, sigma), step_size=a, seed=seed, step=t, backend=backend)
            t += 1
    if final_denoise:
        x.add_(last**2 * score_fn(x, last))
    return x
