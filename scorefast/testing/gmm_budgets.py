"""Error budget of gmm_score: the score and log-density of a Gaussian mixture, against the
float64 reference, for every covariance kind and noise-level mode."""

from __future__ import annotations

import math

import torch

from ..ops import gmm as gmm_ref
from .budgets import U32, storage_rounding

# The cpp backend forms full precisions P_k = F_k H_k F_k^T explicitly for D >= this and one
# sigma for all points (csrc/cpu/gmm_precision_gemm.cpp).
PRECISION_GEMM_MIN_DIM = 32
# float64 uses 2^-52: the kernels' float64 paths round a few terms more than the float32 analysis counts.
_U = {torch.float32: U32, torch.float64: 2.0**-52, torch.float16: U32, torch.bfloat16: U32}


def _noise_variance(sigma):
    """sigma^2 as 0.0, a float or an (N, 1) tensor (float64, CPU)."""
    if sigma is None:
        return 0.0
    if isinstance(sigma, torch.Tensor):
        return (sigma.double().cpu() ** 2)[:, None]
    return float(sigma) ** 2


def gmm_budget(x: torch.Tensor, mixture, sigma, dtype: torch.dtype, precision_gemm: bool = False):
    """(reference score (N, D), reference log p (N,), tolerance on the score, tolerance on log p), float64.

    x: the kernel's input points (N, D) (their values in ``dtype``); sigma: None, a float or an (N,) tensor.

    Component k's log-joint l_k = c_k - q_k / 2 (q_k the precision-weighted squared distance,
    c_k = log w_k - D/2 log 2pi - logdet_k / 2) carries a rounding error of at most
    dl_k = 4u (|c_k| + (D + 2) q_k + g sqrt(q_k lam_k) ||(|mu_k| + |x - mu_k|)||): the constant,
    the D-term sums, and the rounding of x - mu_k (and of the factor F_k, g = 2 (1 + sqrt(D))
    for full covariances, g = 2 otherwise) through the precision, whose largest eigenvalue is
    lam_k. Responsibilities move by r_k (dl_k - mean dl), so
    |d score| <= sum r_k dl_k |s_k| + (sum r_k dl_k)(sum r_k |s_k|) + (D + 8) u sum r_k |s_k|
                 + g u sum r_k lam_k ||(|mu_k| + |x - mu_k|)||  (each s_k's own rounding),
    |d log p| <= sum r_k dl_k + 4u |log p|. 16-bit outputs add one storage ulp.

    ``precision_gemm``: the backend takes the explicit-precision path where it applies (full
    covariance, one sigma, D >= PRECISION_GEMM_MIN_DIM): P_k = F H F^T rounds by D u |F| H |F|^T,
    U = d P_k by D u |d| |P_k|, and q = d . U by D u |d| |U|, so with A = |F| H |F|^T >= |P|
    (entrywise) dl_k gains (3/2) D u |d|^T A |d| and the component score -U gains 2 D u A |d|.
    """
    u = _U[dtype]
    xd = x.detach().double().cpu()
    sig = sigma.double().cpu() if isinstance(sigma, torch.Tensor) else sigma
    means, logw, cov = mixture.means.cpu(), mixture.log_weights.cpu(), mixture.cov.cpu()
    lj, sk = gmm_ref.gmm_log_joint_ref(xd, means, logw, mixture.kind, cov, sig)
    score, log_p = gmm_ref.gmm_score_ref(xd, means, logw, mixture.kind, cov, sig)
    r = torch.softmax(lj, dim=1)
    D = x.shape[1]
    s2 = _noise_variance(sigma)
    eig = torch.linalg.eigvalsh(mixture.covariances().cpu())  # (K, D)
    eig = eig[None] + (s2[:, :, None] if isinstance(s2, torch.Tensor) else s2)  # (1 or N, K, D)
    logdet = torch.log(eig).sum(-1)
    lam = 1.0 / eig[..., 0]
    c = logw[None, :] - 0.5 * D * math.log(2 * math.pi) - 0.5 * logdet
    q = (2 * (c - lj)).clamp(min=0)
    d = xd[:, None, :] - means[None]
    spread = (means.abs()[None] + d.abs()).norm(dim=-1)
    g = 2 * (1 + math.sqrt(D)) if mixture.kind == "full" else 2.0
    dl = 4 * u * (c.abs() + (D + 2) * q + g * torch.sqrt(q * lam) * spread)
    dl = torch.where(r > 0, dl, torch.zeros_like(dl))
    sk_abs = sk.abs()
    mag = (r[:, :, None] * sk_abs).sum(1)
    # the component scores themselves: relative rounding, plus x - mu_k's rounding through the precision
    input_err = g * u * (r * lam * spread).sum(1, keepdim=True)
    if precision_gemm and mixture.kind == "full" and not isinstance(sig, torch.Tensor) and D >= PRECISION_GEMM_MIN_DIM:
        p64 = mixture.kernel_params(
            torch.float64, torch.device("cpu"), None if sig is None else float(sig) ** 2, per_point=False
        )
        F = p64["factor"].abs() * p64["inv_var"].abs().sqrt()[:, None, :]
        A = F @ F.transpose(1, 2)  # (K, D, D)
        Ad = torch.einsum("kij,nkj->nki", A, d.abs())  # (N, K, D)
        extra_dl = 1.5 * D * u * (d.abs() * Ad).sum(-1)
        dl = dl + torch.where(r > 0, extra_dl, torch.zeros_like(extra_dl))
        input_err = input_err + 2 * D * u * (r[:, :, None] * Ad).sum(1)
    r_dl = (r * dl).sum(1)
    tol_score = ((r * dl)[:, :, None] * sk_abs).sum(1) + r_dl[:, None] * mag + (D + 8) * u * mag + input_err
    tol_logp = r_dl + 4 * u * log_p.abs()
    if dtype in (torch.float16, torch.bfloat16):
        tol_score = tol_score + storage_rounding(score, dtype)
        tol_logp = tol_logp + storage_rounding(log_p, dtype)
    return score, log_p, tol_score, tol_logp


def _jacobian_terms(x: torch.Tensor, mixture, sigma):
    """(largest precision of the noised components (1 or N,), sum_k r_k ||s_k - s||^2 (N,)) at x (N, D)."""
    xd = x.detach().double().cpu()
    lj, sk = gmm_ref.gmm_log_joint_ref(
        xd, mixture.means.cpu(), mixture.log_weights.cpu(), mixture.kind, mixture.cov.cpu(), sigma
    )
    r = torch.softmax(lj, dim=1)
    s = (r[:, :, None] * sk).sum(1)
    spread = (r * ((sk - s[:, None, :]) ** 2).sum(-1)).sum(1)
    s2 = _noise_variance(sigma)
    lam_min = torch.linalg.eigvalsh(mixture.covariances().cpu()).min()
    largest_precision = 1.0 / (lam_min + (s2[:, 0] if isinstance(s2, torch.Tensor) else s2))
    return largest_precision, spread


def score_lipschitz(x: torch.Tensor, mixture, sigma=None) -> torch.Tensor:
    """A local bound (N,) on the spectral norm of the score's Jacobian at x (N, D), float64.

    The Jacobian of sum_k r_k s_k is J = -sum_k r_k P_k + sum_k r_k (s_k - s)(s_k - s)^T (P_k the
    noised components' precisions), so ||J|| <= max_k ||P_k|| + sum_k r_k ||s_k - s||^2: the second
    term is what grows between modes.
    """
    largest_precision, spread = _jacobian_terms(x, mixture, sigma)
    return largest_precision + spread
