"""Analytic targets for samplers: Gaussian mixtures with exact samples, log-density and score.

A mixture of K isotropic Gaussians in D dimensions,

    p(x) = sum_k w_k N(x; mu_k, v_k I),

optionally convolved with N(0, sigma^2 I) (each variance becomes v_k + sigma^2): the exact
noise-conditional density of annealed Langevin. Everything is log-sum-exp stable.
"""
from __future__ import annotations

import math

import torch


class GaussianMixture:
    """Mixture of isotropic Gaussians.

    Args:
        means: (K, D) component means.
        weights: (K,) non-negative mixture weights (normalised here); default uniform.
        variance: a positive float shared by all components, or a (K,) tensor, one per
            component. Default 1.0.

    Tensors are kept in float64 on the device of ``means``; methods return the dtype and
    device of their input.
    """

    def __init__(self, means: torch.Tensor, weights: torch.Tensor | None = None,
                 variance: float | torch.Tensor = 1.0):
        means = torch.as_tensor(means)
        if means.dim() != 2 or means.shape[0] == 0 or means.shape[1] == 0:
            raise ValueError(f"means must have shape (K, D) with K, D >= 1, got {list(means.shape)}")
        if not means.is_floating_point():
            means = means.double()
        K, _ = means.shape
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=torch.float64, device=means.device)
        weights = torch.as_tensor(weights, dtype=torch.float64, device=means.device)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},) to match means, got {list(weights.shape)}")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        variance = torch.as_tensor(variance, dtype=torch.float64, device=means.device)
        if variance.dim() == 0:
            variance = variance.expand(K).clone()
        if variance.shape != (K,):
            raise ValueError(f"variance must be a positive float or a ({K},) tensor, got shape {list(variance.shape)}")
        if not bool(torch.isfinite(variance).all()) or bool((variance <= 0).any()):
            raise ValueError("variance must be finite and positive")
        self.means = means.double()
        self.weights = weights / weights.sum()
        self.variances = variance

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def mean(self) -> torch.Tensor:
        """Exact mean (D,), float64."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Exact covariance (D, D), float64: sum_k w_k (v_k I + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = (self.weights * self.variances).sum() * torch.eye(self.dim, dtype=torch.float64, device=m.device)
        second = second + (self.means.T * self.weights) @ self.means
        return second - torch.outer(m, m)

    def sample(self, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact samples: (x (n, D) float64, component index (n,) int64), from a private generator."""
        g = torch.Generator(device=self.means.device).manual_seed(seed)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, dtype=torch.float64, device=self.means.device, generator=g)
        return self.means[k] + self.variances[k].sqrt()[:, None] * z, k

    def _log_joint(self, x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """(log w_k N(x; mu_k, (v_k + sigma^2) I) as (N, K), the variances (N or 1, K))."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {list(x.shape)}")
        var = self.variances[None, :]
        if sigma is not None:
            s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
            if s.dim() == 1:
                s = s[:, None]
            var = var + s * s
        xd = x.double()
        sq = ((xd[:, None, :] - self.means[None]) ** 2).sum(-1)
        logw = torch.log(self.weights)[None, :]
        return logw - 0.5 * sq / var - 0.5 * self.dim * torch.log(2 * math.pi * var), var

    def log_prob(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """log p(x) (N,) for x (N, D); with ``sigma`` (float or (N,)) of the sigma-noised mixture."""
        lj, _ = self._log_joint(x, sigma)
        return torch.logsumexp(lj, dim=1).to(x.dtype)

    def score(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """grad log p(x) (N, D) for x (N, D): sum_k r_k(x) (mu_k - x) / var_k."""
        lj, var = self._log_joint(x, sigma)
        r = torch.softmax(lj, dim=1) / var  # responsibilities over variances
        xd = x.double()
        return (r @ self.means - r.sum(1, keepdim=True) * xd).to(x.dtype)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities (N, K) float64."""
        lj, _ = self._log_joint(x, None)
        return torch.softmax(lj, dim=1)


def two_mode_2d(device="cpu") -> GaussianMixture:
    """The two-mode 2D mixture: modes at (+-2, 0), unit variance, equal weights."""
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64, device=device)
    return GaussianMixture(means, variance=1.0)
