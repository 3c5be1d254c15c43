"""Contract of ``gmm_score``: score [N, D] and log-density [N] of a Gaussian mixture at x [N, D].

The mixture comes in kernel form (``GaussianMixture.kernel_params``; csrc/include/scorefast/gmm.h):
means [K, D], var and inv_var [K, 1] (isotropic) or [K, D], factor [K, D, D] or None (full
covariances), log_const [K], sigma2 [N] or None (per-point noise levels), all in the math dtype
of x (float64 for float64 x, float32 otherwise). Definition: ``scorefast.reference.gmm``.
"""

from __future__ import annotations

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
        "score (e.g. its Jacobian), use scorefast.reference.gmm.gmm_score_ref, which is "
        "differentiable by autograd."
    )


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernel and the no-gradient rule of ``gmm_score``."""
    if "gmm_score" not in ops:
        return
    if fakes:
        torch.library.register_fake(f"{namespace}::gmm_score", _fake)
    torch.library.register_autograd(f"{namespace}::gmm_score", _backward, setup_context=_setup_context)
