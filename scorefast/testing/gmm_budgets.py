"""Error budget of gmm_score: the score and log-density of a Gaussian mixture, against the
float64 reference, for every covariance kind and noise-level mode."""

from __future__ import annotations

import math

import torch

from ..ops import gmm as gmm_ref
from .budgets import U32, storage_rounding

# The cpp backend forms full precisions P_k = F_k H_k F_k^T explicitly for D >= this and one
# sigma for all points, in gmm_score and in chains whose noise level does not change: float
# math from here (kGmmPrecisionTileMinDim in csrc/include/scorefast/gmm.h), float64 from D = 32
# (kGmmPrecisionMinDim). The budget takes the explicit-precision terms from here in every dtype:
# a bound on both forms.
PRECISION_GEMM_MIN_DIM = 9
# float64 uses 2^-52: the kernels' float64 paths round a few terms more than the float32 analysis counts.
_U = {torch.float32: U32, torch.float64: 2.0**-52, torch.float16: U32, torch.bfloat16: U32}
# The CPU kernels' exp gives 0 below this (csrc/cpu/isa_gmm_kernels.inc vexp_nonpos,
# kernels/numba/vmath.py vexp): a component whose weight exp(l_k - max l) lies below it may be dropped.
FLUSH_LOG_WEIGHT = -87.0


def _noise_variance(sigma):
    """sigma^2 as 0.0, a float or an (N, 1) tensor (float64, CPU)."""
    if sigma is None:
        return 0.0
    if isinstance(sigma, torch.Tensor):
        return (sigma.double().cpu() ** 2)[:, None]
    return float(sigma) ** 2


def covariance_eigenvalues(mixture) -> torch.Tensor:
    """Eigenvalues (K, D) of the components' covariances, ascending, float64 on the CPU (without
    forming K dense D x D matrices for isotropic and diagonal mixtures)."""
    cov = mixture.cov.detach().cpu().double()
    if mixture.kind == "isotropic":
        return cov[:, None].expand(-1, mixture.means.shape[1])
    if mixture.kind == "diagonal":
        return cov.sort(dim=1).values
    return torch.linalg.eigvalsh(cov)


def gmm_budget(
    x: torch.Tensor,
    mixture,
    sigma,
    dtype: torch.dtype,
    precision_gemm: bool = False,
    flush_below: float | None = FLUSH_LOG_WEIGHT,
):
    """(reference score (N, D), reference log p (N,), tolerance on the score, tolerance on log p), float64.

    x: the kernel's input points (N, D) (their values in ``dtype``); sigma: None, a float or an (N,) tensor.

    Component k's log-joint l_k = c_k - q_k / 2 (q_k the precision-weighted squared distance,
    c_k = log w_k - D/2 log 2pi - logdet_k / 2) carries a rounding error of at most
    dl_k = 4u (|c_k| + (D + 2) q_k + g sqrt(q_k lam_k) ||(|mu_k| + |x - mu_k|)||): the constant,
    the D-term sums, and the rounding of x - mu_k (and of the factor F_k, g = 2 (1 + sqrt(D))
    for full covariances, g = 2 otherwise) through the precision, whose largest eigenvalue is
    lam_k; with a noise level per point the kernels form logdet_k themselves, which adds
    (D + 1) u (sum_d |log eig_kd| + 2.5) / 2 (a log of about an ulp per eigenvalue and a sum of
    D terms, or one log of their product).
    Responsibilities move by r_k (dl_k - mean dl), so
    |d score| <= sum r_k dl_k |s_k| + (sum r_k dl_k)(sum r_k |s_k|) + (D + 8) u sum r_k |s_k|
                 + g u sum r_k lam_k ||(|mu_k| + |x - mu_k|)||  (each s_k's own rounding),
    |d log p| <= sum r_k dl_k + 4u |log p|. 16-bit outputs add one storage ulp.

    ``precision_gemm``: the backend takes the explicit-precision path where it applies (full
    covariance, one sigma, D >= PRECISION_GEMM_MIN_DIM): P_k = F H F^T rounds by D u |F| H |F|^T,
    U = d P_k by D u |d| |P_k|, and q = d . U by D u |d| |U|, so with A = |F| H |F|^T >= |P|
    (entrywise) dl_k gains (3/2) D u |d|^T A |d| and the component score -U gains 2 D u A |d|.

    The responsibilities' term above is first order in dl; far from the modes (dl in the
    thousands) or near a tie it overstates what the responsibilities can do. The score budget is
    therefore also capped by a bound that holds for any dl (``_score_cap``): the score is a convex
    combination of the component scores, so moving the responsibilities moves it by at most the
    range of the live components' scores, and by nothing beyond rounding where one component
    holds all the weight. ``flush_below``: the log-weight (against the largest) below which a
    kernel may drop a component (None: none may).
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
    eig = covariance_eigenvalues(mixture)  # (K, D)
    eig = eig[None] + (s2[:, :, None] if isinstance(s2, torch.Tensor) else s2)  # (1 or N, K, D)
    logdet = torch.log(eig).sum(-1)
    lam = 1.0 / eig[..., 0]
    c = logw[None, :] - 0.5 * D * math.log(2 * math.pi) - 0.5 * logdet
    q = (2 * (c - lj)).clamp(min=0)
    d = xd[:, None, :] - means[None]
    spread = (means.abs()[None] + d.abs()).norm(dim=-1)
    g = 2 * (1 + math.sqrt(D)) if mixture.kind == "full" else 2.0
    dl_all = 4 * u * (c.abs() + (D + 2) * q + g * torch.sqrt(q * lam) * spread)
    if isinstance(s2, torch.Tensor):
        # a noise level per point: the kernels form log det(cov + s2 I) themselves, either a log
        # of about an ulp per eigenvalue and a sum of D terms, (D + 1) u sum_d |log eig_d|, or (the
        # C++ diagonal kernel) one log of the eigenvalues' product, its mantissas multiplied in
        # float (D - 1 roundings) and its exponents summed: (D - 1) u, about an ulp of the log of
        # a mantissa and two of the sum, under 2.5 (D + 1) u + 2 u sum_d |log eig_d|. Both
        # bounds together, half of them in l_k.
        dl_all = dl_all + 0.5 * (D + 1) * u * (torch.log(eig).abs().sum(-1) + 2.5)
    dl = torch.where(r > 0, dl_all, torch.zeros_like(dl_all))
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
        dl_all = dl_all + extra_dl
        input_err = input_err + 2 * D * u * (r[:, :, None] * Ad).sum(1)
    r_dl = (r * dl).sum(1)
    tol_score = ((r * dl)[:, :, None] * sk_abs).sum(1) + r_dl[:, None] * mag + (D + 8) * u * mag + input_err
    # each component score's own rounding, as above, for the cap
    own = (D + 8) * u * sk_abs + (g * u * lam * spread)[:, :, None]
    if precision_gemm and mixture.kind == "full" and not isinstance(sig, torch.Tensor) and D >= PRECISION_GEMM_MIN_DIM:
        own = own + 2 * D * u * Ad
    cap, flushed = _score_cap(lj, sk, score, dl_all, own, u, flush_below)
    tol_score = torch.minimum(tol_score, cap) + flushed
    tol_logp = r_dl + 4 * u * log_p.abs()
    if dtype in (torch.float16, torch.bfloat16):
        tol_score = tol_score + storage_rounding(score, dtype)
        tol_logp = tol_logp + storage_rounding(log_p, dtype)
    return score, log_p, tol_score, tol_logp


def _score_cap(lj, sk, score, dl, own, u, flush_below):
    """(a bound (N, D) on |kernel score - reference score| that holds however large dl is, the
    allowance (N, D) for components a kernel may drop); lj (N, K), sk (N, K, D): the reference's
    log-joints and component scores, score (N, D), dl (N, K) the log-joints' error bounds, own
    (N, K, D) each component score's own rounding.

    The kernel's responsibilities are r'_k = r_k exp(e_k) / sum_j r_j exp(e_j) with |e_k| <= c_k
    (dl_k, the rounding of l_k - max l and exp's few ulp); the sum moves log r'_k by at most
    M = max(log sum_j r_j exp(c_j), -log sum_j r_j exp(-c_j)), so r'_k / r_k lies within
    exp(+-(c_k + M)). rho_k = min(1, r_k exp(c_k + M)) bounds both r'_k and r_k, and
    |r'_k - r_k| <= rho_k (1 - exp(-(c_k + M))). Both sum to one, so the score moves by
    |sum_k (r'_k - r_k)(s_k - s)| <= sum_k rho_k (1 - exp(-(c_k + M))) |s_k - s|, and by at most
    the range of the scores of the components of nonzero weight (both are convex combinations
    of them). Forming sum_k r'_k s'_k / sum_k r'_k adds each s'_k's own rounding, the products,
    two K-term sums, the division and up to K rescalings of an online log-sum-exp (3u each):
    (5K + 2) u sum_k rho_k |s_k|. A component dropped by a flush (l'_k - max l' < flush_below,
    so log r'_k < flush_below) takes rho_k |s_k - s| with it.
    """
    K = sk.shape[1]
    log_r = torch.log_softmax(lj, dim=1)
    live = torch.isfinite(log_r)  # weight-0 components take no part
    gap = (lj - lj.max(dim=1, keepdim=True).values).abs()
    c = torch.where(live, dl + 2 * u * gap + 4 * u, torch.zeros_like(dl))
    M = torch.maximum(torch.logsumexp(log_r + c, 1), -torch.logsumexp(log_r - c, 1)).clamp(min=0)
    c = c + M[:, None]
    rho = torch.exp((log_r + c).clamp(max=0))
    dev = (sk - score[:, None, :]).abs()
    shift = ((rho * -torch.expm1(-c))[:, :, None] * dev).sum(1)
    inf = torch.tensor(math.inf, dtype=sk.dtype)
    width = torch.where(live[:, :, None], sk, -inf).amax(1) - torch.where(live[:, :, None], sk, inf).amin(1)
    rounding = (rho[:, :, None] * (own + (5 * K + 2) * u * sk.abs())).sum(1)
    cap = torch.minimum(shift, width) + rounding
    if flush_below is None:
        return cap, torch.zeros_like(cap)
    droppable = live & (log_r - c < flush_below)
    return cap, (torch.where(droppable, rho, torch.zeros_like(rho))[:, :, None] * dev).sum(1)


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
    lam_min = covariance_eigenvalues(mixture).min()
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
