"""Contract of ``gmm_score``: score [N, D] and log-density [N] of a Gaussian mixture at x [N, D].

The mixture comes in kernel form (``GaussianMixture.kernel_params``; csrc/include/scorefast/gmm.h):
means [K, D], var and inv_var [K, 1] (isotropic) or [K, D], factor [K, D, D] or None (full
covariances), log_const [K], sigma2 [N] or None (per-point noise levels), all in the math dtype
of x (float64 for float64 x, float32 otherwise). Definition: ``gmm_score_ref`` at the end of this module.
"""

from __future__ import annotations

import math

import torch

from ._common import acc_dtype, check_device, check_storage, fail, scalar_name

SCHEMAS = {
    "gmm_score": (
        "(Tensor x, Tensor means, Tensor var, Tensor inv_var, Tensor? factor, Tensor log_const, "
        "Tensor? sigma2) -> (Tensor, Tensor)"
    ),
}


def _check_param(t, x, name, shape):
    if t.device != x.device:
        fail(f"{name} must be on the device of x ({x.device}), got {t.device}")
    acc = acc_dtype(x.dtype)
    if t.dtype != acc:
        fail(f"{name} must be {scalar_name(acc)} for x of dtype {scalar_name(x.dtype)}, got {scalar_name(t.dtype)}")
    if list(t.shape) != list(shape):
        fail(f"{name} must have shape {list(shape)}, got {list(t.shape)}")


def check_args(
    x, means, var, inv_var, factor, log_const, sigma2, *, device_type: str | None = None, kernels: str = ""
) -> None:
    """The checks of the C++ op (csrc/gmm_op.h), with its messages (also the chain's mixture checks)."""
    check_device(x, "x", device_type, kernels)
    if x.dim() != 2:
        fail(f"x must have shape [N, D], got {list(x.shape)}")
    check_storage(x, "x")
    if means.dim() != 2:
        fail(f"means must have shape [K, D], got {list(means.shape)}")
    N, D = x.shape
    K = means.shape[0]
    if K < 1:
        fail("the mixture is empty: means must have at least one component (K >= 1)")
    if D < 1:
        fail(f"x must have at least one coordinate (D >= 1), got {list(x.shape)}")
    _check_param(means, x, "means", (K, D))
    if var.dim() != 2 or var.shape[1] not in (1, D):
        fail(f"var must have shape [K, 1] or [K, D] = [{K}, {D}], got {list(var.shape)}")
    _check_param(var, x, "var", (K, var.shape[1]))
    _check_param(inv_var, x, "inv_var", var.shape)
    if factor is not None:
        _check_param(factor, x, "factor", (K, D, D))
    _check_param(log_const, x, "log_const", (K,))
    if sigma2 is not None:
        _check_param(sigma2, x, "sigma2", (N,))


def _fake(x, means, var, inv_var, factor, log_const, sigma2):
    return x.new_empty(x.shape), x.new_empty(x.shape[:1])


def _setup_context(ctx, inputs, output):
    pass


def _backward(ctx, grad_score, grad_log_prob):
    raise RuntimeError(
        "gmm_score has no gradient: the score is already grad log p. For derivatives of the "
        "score (e.g. its Jacobian), use scorefast.reference.gmm_score_ref, which is "
        "differentiable by autograd."
    )


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernel and the no-gradient rule of ``gmm_score``."""
    if "gmm_score" not in ops:
        return
    if fakes:
        torch.library.register_fake(f"{namespace}::gmm_score", _fake)
    torch.library.register_autograd(f"{namespace}::gmm_score", _backward, setup_context=_setup_context)


# The definition: the pure-PyTorch reference every kernel is tested against.
#
# Reference of gmm_score: score and log-density of a Gaussian mixture, optionally noised.
#
#     p_sigma(x) = sum_k w_k N(x; mu_k, C_k + sigma^2 I)
#
# with C_k = v_k I (isotropic), diag(v_k) (diagonal) or a full covariance. Written the
# obvious way, in float64 by default, with an N x K x D intermediate: the definition the
# kernels are tested against, not a fast path.


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
