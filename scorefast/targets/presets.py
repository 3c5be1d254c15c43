"""Common test targets: the mixtures and energies samplers are checked and benchmarked on."""

from __future__ import annotations

import math

import torch

from .energy import EnergyTarget
from .mixture import GaussianMixture


def two_mode_2d(device="cpu") -> GaussianMixture:
    """Two modes at (+-2, 0), unit variance, equal weights."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64, device=device)
    return GaussianMixture(means, variance=1.0)


def ring(num_modes: int = 8, radius: float = 4.0, std: float = 0.25, device="cpu") -> GaussianMixture:
    """``num_modes`` equal modes on a circle of ``radius``, isotropic ``std``."""
    angle = torch.arange(num_modes, dtype=torch.float64) * (2 * math.pi / num_modes)
    means = radius * torch.stack((torch.cos(angle), torch.sin(angle)), dim=1)
    return GaussianMixture(means.to(device), variance=std * std)


def grid(side: int = 5, spacing: float = 2.0, std: float = 0.2, device="cpu") -> GaussianMixture:
    """side x side equal modes on a square grid centred at 0 (25 modes by default)."""
    c = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixture(means.to(device), variance=std * std)


def random_mixture(
    num_components: int, dim: int, *, seed: int = 0, kind: str = "isotropic", spread: float = 4.0, device="cpu"
) -> GaussianMixture:
    """A mixture drawn at random from ``seed``: means ~ N(0, spread^2 I), Dirichlet(1) weights,
    variances in [0.25, 1] (isotropic or diagonal) or random SPD covariances (full)."""
    g = torch.Generator().manual_seed(seed)
    K, D = num_components, dim
    means = spread * torch.randn(K, D, generator=g, dtype=torch.float64)
    weights = -torch.log(torch.rand(K, generator=g, dtype=torch.float64))  # Dirichlet(1)
    if kind == "isotropic":
        cov = dict(variance=0.25 + 0.75 * torch.rand(K, generator=g, dtype=torch.float64))
    elif kind == "diagonal":
        cov = dict(diagonal=0.25 + 0.75 * torch.rand(K, D, generator=g, dtype=torch.float64))
    elif kind == "full":
        A = torch.randn(K, D, D, generator=g, dtype=torch.float64) / math.sqrt(D)
        cov = dict(covariance=A @ A.transpose(1, 2) + 0.25 * torch.eye(D, dtype=torch.float64))
    else:
        raise ValueError(f"kind must be 'isotropic', 'diagonal' or 'full', got {kind!r}")
    cov = {k: v.to(device) for k, v in cov.items()}
    return GaussianMixture(means.to(device), weights.to(device), **cov)


def anisotropic_2d(device="cpu") -> GaussianMixture:
    """Three strongly correlated, elongated 2D components (full covariances)."""
    means = torch.tensor([[-3.0, 0.0], [3.0, 1.0], [0.0, -3.0]], dtype=torch.float64)

    def rotated(angle, major, minor):
        c, s = math.cos(angle), math.sin(angle)
        R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        return R @ torch.diag(torch.tensor([major, minor], dtype=torch.float64)) @ R.T

    cov = torch.stack((rotated(0.5, 2.0, 0.05), rotated(-0.8, 1.5, 0.1), rotated(0.0, 0.02, 1.0)))
    return GaussianMixture(means.to(device), torch.tensor([0.4, 0.35, 0.25]).to(device), covariance=cov.to(device))


def double_well(barrier: float = 4.0, dim: int = 2) -> EnergyTarget:
    """E(x) = barrier (x_1^2 - 1)^2 + 1/2 sum_{i>1} x_i^2: two wells at x_1 = +-1."""

    def energy(x):
        return barrier * (x[:, 0] ** 2 - 1) ** 2 + 0.5 * (x[:, 1:] ** 2).sum(1)

    return EnergyTarget(energy, dim=dim)


PRESETS = {
    "two_mode": two_mode_2d,
    "ring8": ring,
    "grid25": grid,
    "anisotropic": anisotropic_2d,
}
