"""Energy-based targets: p(x) ∝ exp(-E(x)) for any differentiable E, score by autograd."""

from __future__ import annotations

import torch


class EnergyTarget:
    """A target known through its energy.

    Args:
        energy: callable mapping x (N, D) to E(x) (N,); differentiable in x.
        dim: D, for checks and samplers (optional).

    ``score(x) = -grad E(x)``, ``log_prob(x) = -E(x)`` (unnormalised).
    """

    def __init__(self, energy, dim: int | None = None):
        if not callable(energy):
            raise TypeError(f"energy must be callable, got {type(energy).__name__}")
        self.energy = energy
        self.dim = dim

    def _check(self, x):
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError(f"x must be a tensor of shape (N, D), got {getattr(x, 'shape', type(x))}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(f"x must have {self.dim} coordinates, got shape {list(x.shape)}")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-E(x), (N,): the log-density up to a constant."""
        self._check(x)
        return -self.energy(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """-grad_x E(x), (N, D), by autograd (no graph is kept)."""
        self._check(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            e = self.energy(xg)
            if e.shape != (x.shape[0],):
                raise ValueError(f"energy must return shape ({x.shape[0]},), got {list(e.shape)}")
            (grad,) = torch.autograd.grad(e.sum(), xg)
        return -grad
