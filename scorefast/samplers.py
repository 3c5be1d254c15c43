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


class SGLDReplayBuffer:
    """SGLD negatives for energy-based models, with a replay buffer (Du & Mordatch, 2019).

    Each call takes ``n`` chains from the buffer (a fraction ``reinit_prob`` restarted from
    uniform noise in ``init_range``), runs ``steps`` SGLD steps on the energy,
    x <- clamp(x - a grad E(x) + b z) with a per-particle gradient-norm clip, writes them back
    and returns them. Every update is the fused langevin_step; the buffer lives on ``device``.

    Defaults follow the common image-EBM recipe: 60 steps, a = 10, b = 0.005, 5 % restarts,
    10000 buffered states, samples clamped to [-1, 1].

    Args:
        shape: shape of one sample, e.g. (2,) or (1, 28, 28).
        size: states kept in the buffer.
        reinit_prob: probability that a drawn chain restarts from uniform noise.
        steps, step_size, noise_scale: SGLD schedule (a, b).
        max_grad_norm: per-particle clip of the energy gradient (None: no clipping).
        init_range: (lo, hi) of the uniform restarts; also the clamp of every step.
        seed: seed of the buffer draws and the SGLD noise.
    """

    def __init__(self, shape, *, size: int = 10000, reinit_prob: float = 0.05, steps: int = 60,
                 step_size: float = 10.0, noise_scale: float = 0.005, max_grad_norm: float | None = 0.03,
                 init_range=(-1.0, 1.0), device="cpu", dtype=torch.float32, seed: int = 0):
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        if size < 1 or steps < 0:
            raise ValueError("size must be >= 1 and steps >= 0")
        self.shape = tuple(shape)
        self.reinit_prob, self.steps = reinit_prob, steps
        self.step_size, self.noise_scale, self.max_grad_norm = step_size, noise_scale, max_grad_norm
        self.lo, self.hi = (float(v) for v in init_range)
        self.seed = seed
        self.calls = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.buffer = self._uniform(size).to(device=device, dtype=dtype)

    def _uniform(self, n):
        return self.lo + (self.hi - self.lo) * torch.rand((n, *self.shape), generator=self.generator)

    def sample(self, energy_fn, n: int, backend: str = "auto") -> torch.Tensor:
        """n negatives after SGLD on ``energy_fn`` (x -> (n,) energies); the buffer is updated."""
        idx = torch.randint(0, self.buffer.shape[0], (n,), generator=self.generator)
        x = self.buffer[idx.to(self.buffer.device)].clone()
        restart = torch.rand(n, generator=self.generator) < self.reinit_prob
        if bool(restart.any()):
            x[restart.to(x.device)] = self._uniform(int(restart.sum())).to(x)
        for t in range(self.steps):
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(energy_fn(xg).sum(), xg)
            # every call and step gets its own counter: step = call * steps + t
            langevin_step_(x, -grad, step_size=self.step_size, noise_scale=self.noise_scale,
                           max_score_norm=self.max_grad_norm, clamp=(self.lo, self.hi),
                           seed=self.seed, step=(self.calls * max(1, self.steps) + t) % 2**32,
                           backend=backend)
        self.calls += 1
        self.buffer[idx.to(self.buffer.device)] = x.detach()
        return x.detach()
