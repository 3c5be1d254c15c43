"""Gaussian mixtures with exact samples, log-density and score, optionally noised.

    p_sigma(x) = sum_k w_k N(x; mu_k, C_k + sigma^2 I)

C_k is isotropic (v_k I), diagonal (diag(v_k)) or full. ``score`` and ``log_prob`` go
through the fused ``gmm_score`` op (``scorefast.gmm``); ``sample`` draws exact samples.
"""

from __future__ import annotations

import math

import torch

from ..gmm import gmm_score
from ..ops.gmm import gmm_log_joint_ref


def _as_float64(t, device) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64, device=device)


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions.

    Args:
        means: (K, D) component means.
        weights: (K,) non-negative weights, normalised here (zeros allowed, not all zero).
            Default uniform. Or give ``log_weights`` (K,) instead (normalised likewise).
        variance: isotropic covariance v_k I: a positive float shared by all components or
            a (K,) tensor. The default (1.0) when no covariance is given.
        diagonal: (K, D) positive variances: diagonal covariances.
        covariance: (K, D, D) symmetric positive-definite covariances (full).

    Give at most one of ``variance``, ``diagonal``, ``covariance``. Parameters are kept in
    float64 on the device of ``means``; methods accept and return any float dtype.
    """

    def __init__(self, means, weights=None, *, log_weights=None, variance=None, diagonal=None, covariance=None):
        means = torch.as_tensor(means)
        device = means.device
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {list(means.shape)}")
        K, D = means.shape
        if K == 0:
            raise ValueError("the mixture is empty: means must have at least one component (K >= 1)")
        if D == 0:
            raise ValueError("means must have at least one coordinate (D >= 1)")
        self.means = _as_float64(means, device)
        if not bool(torch.isfinite(self.means).all()):
            raise ValueError("means must be finite")
        self.log_weights = self._log_weights(weights, log_weights, K, device)

        given = [
            n for n, v in (("variance", variance), ("diagonal", diagonal), ("covariance", covariance)) if v is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give at most one of variance, diagonal, covariance; got {', '.join(given)}")
        if covariance is not None:
            cov = _as_float64(covariance, device)
            if cov.shape != (K, D, D):
                raise ValueError(f"covariance must have shape ({K}, {D}, {D}), got {list(cov.shape)}")
            if not bool(torch.isfinite(cov).all()):
                raise ValueError("covariance must be finite")
            if not torch.allclose(cov, cov.transpose(1, 2), rtol=1e-10, atol=1e-12 * float(cov.abs().max())):
                raise ValueError("covariance must be symmetric")
            chol, info = torch.linalg.cholesky_ex(cov)
            if bool((info != 0).any()):
                bad = int((info != 0).nonzero()[0, 0])
                raise ValueError(f"covariance[{bad}] is not positive definite")
            self.kind, self.cov, self._chol = "full", cov, chol
        elif diagonal is not None:
            var = _as_float64(diagonal, device)
            if var.shape != (K, D):
                raise ValueError(f"diagonal must have shape ({K}, {D}), got {list(var.shape)}")
            self._check_positive(var, "diagonal")
            self.kind, self.cov = "diagonal", var
        else:
            var = _as_float64(1.0 if variance is None else variance, device)
            if var.dim() == 0:
                var = var.expand(K).clone()
            if var.shape != (K,):
                raise ValueError(f"variance must be a positive float or a ({K},) tensor, got shape {list(var.shape)}")
            self._check_positive(var, "variance")
            self.kind, self.cov = "isotropic", var
        self._params_cache: dict = {}

    @staticmethod
    def _log_weights(weights, log_weights, K, device) -> torch.Tensor:
        if weights is not None and log_weights is not None:
            raise ValueError("give weights or log_weights, not both")
        if log_weights is not None:
            lw = _as_float64(log_weights, device)
            if lw.shape != (K,):
                raise ValueError(f"log_weights must have shape ({K},), got {list(lw.shape)}")
            if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()) or not bool(torch.isfinite(lw).any()):
                raise ValueError("log_weights must be finite or -inf, not all -inf")
            return lw - torch.logsumexp(lw, 0)
        if weights is None:
            return torch.full((K,), -math.log(K), dtype=torch.float64, device=device)
        w = _as_float64(weights, device)
        if w.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {list(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        return torch.log(w / w.sum())

    @staticmethod
    def _check_positive(var, name):
        if not bool(torch.isfinite(var).all()) or bool((var <= 0).any()):
            raise ValueError(f"{name} must be finite and positive")

    # -- facts ---------------------------------------------------------------------------
    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(self.log_weights)

    def covariances(self) -> torch.Tensor:
        """Component covariances (K, D, D), float64."""
        K, D = self.means.shape
        eye = torch.eye(D, dtype=torch.float64, device=self.means.device)
        if self.kind == "full":
            return self.cov
        if self.kind == "diagonal":
            return torch.diag_embed(self.cov)
        return self.cov[:, None, None] * eye

    def mean(self) -> torch.Tensor:
        """Exact mean (D,), float64."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Exact covariance (D, D), float64: sum_k w_k (C_k + mu_k mu_k^T) - m m^T."""
        w = self.weights
        m = self.mean()
        second = (w[:, None, None] * self.covariances()).sum(0) + (self.means.T * w) @ self.means
        return second - torch.outer(m, m)

    # -- sampling ------------------------------------------------------------------------
    def sample(self, n: int, *, seed: int = 0, sigma: float | None = None, return_components: bool = False):
        """Exact samples (n, D) float64 from a private generator (of the sigma-noised mixture if given)."""
        g = torch.Generator(device=self.means.device).manual_seed(seed)
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, dtype=torch.float64, device=self.means.device, generator=g)
        if self.kind == "full":
            x = self.means[k] + (self._chol[k] @ z[:, :, None])[:, :, 0]
        elif self.kind == "diagonal":
            x = self.means[k] + self.cov[k].sqrt() * z
        else:
            x = self.means[k] + self.cov[k].sqrt()[:, None] * z
        if sigma is not None:
            x = x + float(sigma) * torch.randn(n, self.dim, dtype=torch.float64, device=self.means.device, generator=g)
        return (x, k) if return_components else x

    # -- densities and scores ------------------------------------------------------------
    def score_and_log_prob(self, x: torch.Tensor, sigma=None, *, backend: str = "auto"):
        """(score (N, D), log p (N,)) at x (N, D), in one fused pass (see scorefast.gmm_score)."""
        return gmm_score(x, self, sigma=sigma, backend=backend)

    def score(self, x: torch.Tensor, sigma=None, *, backend: str = "auto") -> torch.Tensor:
        """grad_x log p_sigma(x), (N, D) for x (N, D); sigma None, a float or (N,)."""
        return self.score_and_log_prob(x, sigma, backend=backend)[0]

    def log_prob(self, x: torch.Tensor, sigma=None, *, backend: str = "auto") -> torch.Tensor:
        """log p_sigma(x), (N,) for x (N, D); sigma None, a float or (N,)."""
        return self.score_and_log_prob(x, sigma, backend=backend)[1]

    def responsibilities(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        """Posterior component probabilities (N, K), float64 (reference computation)."""
        lj, _ = gmm_log_joint_ref(x, self.means, self.log_weights, self.kind, self.cov, sigma)
        return torch.softmax(lj, dim=1)

    # -- kernel parameters ---------------------------------------------------------------
    def kernel_params(self, dtype: torch.dtype, device: torch.device, sigma2: float | None, per_point: bool) -> dict:
        """Arguments of the gmm_score op (see csrc/include/scorefast/gmm.h), cached.

        ``per_point``: sigma varies per point (sigma^2 is added in the kernel); otherwise
        ``sigma2`` (a float or None) is folded in here.
        """
        key = (dtype, str(device), None if per_point else sigma2, per_point)
        if key in self._params_cache:
            return self._params_cache[key]
        K, D = self.means.shape
        s2 = 0.0 if (per_point or sigma2 is None) else float(sigma2)
        log_const = self.log_weights - 0.5 * D * math.log(2 * math.pi)
        factor = None
        if self.kind in ("isotropic", "diagonal"):
            var = self.cov[:, None] if self.kind == "isotropic" else self.cov
            var_eff = var + s2
            inv_var = 1.0 / var_eff
            if not per_point:
                log_const = log_const - 0.5 * (D if self.kind == "isotropic" else 1) * torch.log(var_eff).sum(1)
        elif not per_point:
            # Precision (C + s2 I)^-1 = F F^T with F = R^-T, R the Cholesky factor of C + s2 I.
            eye = torch.eye(D, dtype=torch.float64, device=self.means.device)
            R = torch.linalg.cholesky(self.cov + s2 * eye)
            factor = torch.linalg.solve_triangular(R, eye.expand(K, D, D), upper=False).transpose(1, 2)
            var = inv_var = torch.ones(K, 1, dtype=torch.float64, device=self.means.device)
            log_const = log_const - torch.log(torch.diagonal(R, dim1=1, dim2=2)).sum(1)
        else:
            # Per-point sigma: C = U diag(lam) U^T, precision U diag(1 / (lam + s2)) U^T.
            lam, U = torch.linalg.eigh(self.cov)
            factor, var = U, lam
            inv_var = 1.0 / lam
        cast = lambda t: None if t is None else t.to(dtype=dtype, device=device).contiguous()  # noqa: E731
        params = {
            "means": cast(self.means),
            "var": cast(var),
            "inv_var": cast(inv_var),
            "factor": cast(factor),
            "log_const": cast(log_const),
        }
        if len(self._params_cache) > 16:
            self._params_cache.clear()
        self._params_cache[key] = params
        return params

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.num_components}, D={self.dim}, kind={self.kind!r})"
