"""gmm_score: score and log-density of a Gaussian mixture in one fused pass.

The ops ``<ns>::gmm_score(x, means, var, inv_var, factor, log_const, sigma2) -> (score, log_prob)``
(namespaces ``scorefast``, ``scorefast_triton``, ``scorefast_numba``) take the mixture in
kernel form (``GaussianMixture.kernel_params``; csrc/include/scorefast/gmm.h) and stream
over components with an online log-sum-exp, so no N x K x D tensor is formed. Their contract
(schema, checks, fake kernel, the no-gradient rule) is ``scorefast.ops.gmm``.

In float32 math the quadratic term overflows about 1e19 standard deviations from the modes;
the points where it could (``scorefast._float_range``) are computed again in float64.
"""

from __future__ import annotations

import numbers

import torch

from . import _checks, _float_range
from . import backend_registry as backends
from .ops._common import acc_dtype
from .ops.gmm import gmm_score_ref


def _sigma_args(sigma, x: torch.Tensor):
    """(scalar sigma^2 or None, per-point sigma tensor or None)."""
    if sigma is None:
        return None, None
    if isinstance(sigma, torch.Tensor) and sigma.dim() == 0:
        sigma = float(sigma)
    if isinstance(sigma, torch.Tensor):
        _checks.check_per_particle(sigma, x, "sigma")
        return None, sigma
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(
            f"sigma must be None, a real number or a tensor of shape ({x.shape[0]},), got {type(sigma).__name__}"
        )
    s = _checks.check_real(sigma, "sigma", minimum=0.0)
    return s * s, None


def gmm_score(x: torch.Tensor, mixture, *, sigma=None, backend: str = "auto"):
    """Score and log-density of a Gaussian mixture, optionally convolved with N(0, sigma^2 I).

    Args:
        x: points, (N, D); float32, float64, float16 or bfloat16 (16-bit inputs are
            computed in float32). Any strides.
        mixture: a ``scorefast.targets.GaussianMixture`` (isotropic, diagonal or full).
        sigma: None (the mixture itself), a float >= 0, or a (N,) tensor: one noise level
            per point (each component's covariance gains sigma^2 I).
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba'.

    Returns:
        (score (N, D), log_prob (N,)), in x's dtype. Log-sum-exp stable: far points and tiny
        variances give finite results; NaN in a row gives NaN in that row only.

    Range: with float32 math (float32 and 16-bit x) the points whose float32 quadratic term
    or intermediates could overflow (far from every mode compared with the spread, e.g.
    |x| = 1e20 for unit variances; huge means or tiny variances; per-point sigma^2 past
    float32's range) are computed again in float64 on the same backend and rounded to x's
    dtype: the result is the float64 one, rounded (a log-density below float32's range is
    -inf there). Other points take the float32 kernel's result unchanged. Finding them costs
    a pass over log_prob and, rarely, one over x; it reads one value back to the host, so it
    is skipped under torch.compile and while a CUDA graph is captured.
    """
    _checks.check_float_tensor(x, "x", min_dim=2)
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, D), got {list(x.shape)}")
    if not _checks.is_mixture(mixture):
        raise TypeError(f"mixture must be a scorefast.targets.GaussianMixture, got {type(mixture).__name__}")
    if x.shape[1] != mixture.dim:
        raise ValueError(f"x must have D = {mixture.dim} coordinates (the mixture's), got shape {list(x.shape)}")
    s2, sigma_pp = _sigma_args(sigma, x)
    name = backends.resolve(backend, x.device, "gmm_score")
    if name == "reference":
        sig = sigma_pp if sigma_pp is not None else (None if s2 is None else s2**0.5)
        means = mixture.means.to(x.device)
        score, log_p = gmm_score_ref(
            x, means, mixture.log_weights.to(x.device), mixture.kind, mixture.cov.to(x.device), sig
        )
        return score.to(x.dtype), log_p.to(x.dtype)
    acc = acc_dtype(x.dtype)
    p = mixture.kernel_params(acc, x.device, s2, per_point=sigma_pp is not None)
    sigma2 = None if sigma_pp is None else (sigma_pp.to(acc) ** 2).contiguous()
    ns = backends.op_namespace(name)
    score, log_p = ns.gmm_score(x, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], sigma2)
    if _float_range.checks_apply(x):
        risk = _rows_at_risk(x, mixture, p, s2, sigma_pp, log_p)
        if risk is not None:
            score, log_p = _recompute_in_float64(ns, x, mixture, s2, sigma_pp, risk, score, log_p)
    return score, log_p


def _largest_variance(mixture, s2: float | None) -> float:
    """At least the largest eigenvalue of any component's covariance plus s2 (the trace for full ones)."""
    cov = mixture.cov
    top = cov.diagonal(dim1=1, dim2=2).sum(1).amax() if mixture.kind == "full" else cov.amax()
    return float(top) + (s2 or 0.0)


def _rows_at_risk(x, mixture, p, s2, sigma_pp, log_p) -> torch.Tensor | None:
    """Indices of the points whose float32 math could overflow (None: none)."""
    per_point = sigma_pp is not None
    mr = _float_range.mixture_range(p, per_point, lambda: _largest_variance(mixture, s2))
    top_sigma = float(sigma_pp.detach().amax()) if per_point and sigma_pp.numel() else 0.0
    max_sigma2 = top_sigma * top_sigma  # inf, not OverflowError, past float64's range
    if _float_range.log_probs_in_range(log_p, mr, max_sigma2):
        return None
    sigma2 = sigma_pp.detach().double() ** 2 if per_point else None
    rows = _float_range.rows_at_risk(x, mr, sigma2).nonzero()[:, 0]
    return rows if rows.numel() else None


def _recompute_in_float64(ns, x, mixture, s2, sigma_pp, rows, score, log_p):
    """score and log_p with the points ``rows`` computed in float64 math (rounded to x's dtype)."""
    p = mixture.kernel_params(torch.float64, x.device, s2, per_point=sigma_pp is not None)
    xs = x.index_select(0, rows).double()
    sigma2 = None if sigma_pp is None else (sigma_pp.index_select(0, rows).double() ** 2).contiguous()
    s64, l64 = ns.gmm_score(xs, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], sigma2)
    return score.index_copy(0, rows, s64.to(score.dtype)), log_p.index_copy(0, rows, l64.to(log_p.dtype))
