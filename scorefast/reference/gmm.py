"""Reference of gmm_score: score and log-density of a Gaussian mixture, optionally noised.

    p_sigma(x) = sum_k w_k N(x; mu_k, C_k + sigma^2 I)

with C_k = v_k I (isotropic), diag(v_k) (diagonal) or a full covariance. Written the
obvious way, in float64 by default, with an N x K x D intermediate: the definition the
kernels are tested against, not a fast path.
"""

from __future__ import annotations

import math

import torch

KINDS = ("isotropic", "diagonal", "full")


def gmm_log_joint_ref(
    x: torch.Tensor,
    means: torch.Tensor,
    log_weights: torch.Tensor,
    kind: str,
    cov: torch.Tensor,
    sigma=None,
    dtype=torch.float64,
):
    """log w_k N(x; mu_k, C_k + sigma^2 I) (N, K) and the per-component scores (N, K, D).

    x (N, D); means (K, D); log_weights (K,) (-inf for weight 0); cov: (K,) variances
    (isotropic), (K, D) variances (diagonal) or (K, D, D) covariances (full); sigma None, a
    float or (N,).
    """
    x, means, log_weights, cov = (t.to(dtype) for t in (x, means, log_weights, cov))
    N, D = x.shape
    diff = x[:, None, :] - means[None, :, :]  # (N, K, D)
    s2 = None
    if sigma is not None:
        s = torch.as_tensor(sigma, dtype=dtype, device=x.device)
        s2 = (s * s).reshape(-1, 1) if s.dim() else s * s  # (N, 1) or scalar
    if kind in ("isotropic", "diagonal"):
        var = cov[None, :, None] if kind == "isotropic" else cov[None, :, :]  # (1, K, 1 or D)
        if s2 is not None:
            var = var + (s2[:, :, None] if torch.is_tensor(s2) and s2.dim() else s2)
        var = var.expand(N, -1, D)
        quad = (diff * diff / var).sum(-1)
        logdet = torch.log(var).sum(-1)
        scores = -diff / var
    elif kind == "full":
        C = cov[None]  # (1, K, D, D)
        if s2 is not None:
            eye = torch.eye(D, dtype=dtype, device=x.device)
            C = C + (s2[:, :, None, None] if torch.is_tensor(s2) and s2.dim() else s2) * eye
        C = C.expand(N, -1, D, D)
        L = torch.linalg.cholesky(C)
        sol = torch.cholesky_solve(diff[..., None], L)[..., 0]  # C^-1 (x - mu)
        quad = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        scores = -sol
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    log_joint = log_weights[None, :] - 0.5 * quad - 0.5 * logdet - 0.5 * D * math.log(2 * math.pi)
    return log_joint, scores


def gmm_score_ref(
    x: torch.Tensor,
    means: torch.Tensor,
    log_weights: torch.Tensor,
    kind: str,
    cov: torch.Tensor,
    sigma=None,
    dtype=torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score (N, D), log p (N,)) of the mixture at x (N, D), computed in ``dtype``.

    score = sum_k r_k(x) s_k(x) with responsibilities r = softmax_k(log_joint) and
    s_k = -(C_k + sigma^2 I)^-1 (x - mu_k). Arguments as in :func:`gmm_log_joint_ref`.
    """
    log_joint, scores = gmm_log_joint_ref(x, means, log_weights, kind, cov, sigma, dtype)
    log_p = torch.logsumexp(log_joint, dim=1)
    # Normalised explicitly: far from the modes log p rounds away log(number of near-tied
    # components), and exp(log_joint - log p) would then sum to up to K instead of 1.
    r = torch.softmax(log_joint, dim=1)
    score = (r[:, :, None] * scores).sum(1)
    return score, log_p
