"""Fused denoising score matching: perturb and loss with the noise regenerated, never stored.

    x_tilde = x + sigma_b z,           z = the noise contract's normals for (seed, step, sample)
    score form: l_b = 1/2 sigma_b^p ||s_b + z_b / sigma_b||^2     (target -z/sigma = -(x_tilde - x)/sigma^2)
    eps form:   l_b = ||eps_b - z_b||^2

Ops ``<ns>::dsm_perturb``, ``<ns>::dsm_loss`` (per-sample losses [B]) and
``<ns>::dsm_loss_backward`` (the gradient w.r.t. the prediction, regenerating z again):
nothing of the size of x is saved for backward beyond the prediction itself. Their contract
(schemas, checks, fake kernels, autograd) is ``scorefast.ops.dsm``.
"""

from __future__ import annotations

import numbers

import torch

from . import _checks
from . import backend_registry as backends
from .noise import resolve_counter
from .ops._common import acc_dtype
from .ops.dsm import dsm_loss_ref, dsm_perturb_ref


def _sigma_tensor(sigma, x: torch.Tensor, backend: str) -> torch.Tensor:
    """sigma as a [B] tensor in the math dtype; values checked positive and finite (by the
    C++ CPU kernels themselves for backend 'cpp')."""
    name = "sigma"
    acc = acc_dtype(x.dtype)
    B = x.shape[0]
    if isinstance(sigma, torch.Tensor) and sigma.dim() == 0:
        sigma = float(sigma)
    if isinstance(sigma, torch.Tensor):
        _checks.check_per_particle(sigma, x, name, positive=True, check_values=backend != "cpp")
        return sigma.to(acc).contiguous()
    if not isinstance(sigma, numbers.Real) or isinstance(sigma, bool):
        raise TypeError(f"{name} must be a positive number or a tensor of shape ({B},), got {type(sigma).__name__}")
    s = _checks.check_real(sigma, name, positive=True)
    return torch.full((B,), s, dtype=acc, device=x.device)


def dsm_perturb(
    x: torch.Tensor, sigma, *, seed: int, step: int = 0, particle_offset: int = 0, backend: str = "auto"
) -> torch.Tensor:
    """x + sigma_b z, z the contract's normals for (seed, step, sample).

    Args:
        x: data, shape (B, ...): dim 0 indexes samples. float32, float64, float16, bfloat16.
        sigma: noise level: a positive float, or a (B,) tensor (one per sample).
        seed, step, particle_offset: the noise counter (as langevin_step); pass the same
            ones to dsm_loss so it regenerates the same z.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba'.

    Returns:
        x_tilde, shape and dtype of x, contiguous.
    """
    _checks.check_float_tensor(x, "x")
    name = backends.resolve(backend, x.device, "dsm_perturb")
    s = _sigma_tensor(sigma, x, name)
    seed, seed64, step, particle_offset = resolve_counter(
        seed, step, particle_offset, x.shape[0], _checks.elements_per_particle(x)
    )
    if name == "reference":
        return dsm_perturb_ref(x, s, seed, step, particle_offset).contiguous()
    return backends.op_namespace(name).dsm_perturb(x, s, seed64, step, particle_offset)


def dsm_loss(
    pred: torch.Tensor,
    x: torch.Tensor | None,
    sigma,
    *,
    seed: int,
    step: int = 0,
    particle_offset: int = 0,
    weighting_power: float = 2.0,
    parametrization: str = "score",
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Denoising score matching loss with the noise regenerated in the kernel.

    Args:
        pred: the model's output at x_tilde = dsm_perturb(x, sigma, seed=..., step=...),
            shape of x: the score s (parametrization='score') or the noise eps ('eps').
            Any float dtype (bf16 predictions are accumulated in float32).
        x: the clean data (B, ...) (only checked against pred's shape; may be None).
        sigma: the noise levels used in dsm_perturb: a positive float or (B,).
        seed, step, particle_offset: the same noise counter as dsm_perturb.
        weighting_power: p in lambda(sigma) = sigma^p (score form). 2 (default) is NCSN's
            weighting, which makes every noise level's loss O(1).
        parametrization: 'score': 1/2 sigma^p ||s + z/sigma||^2; 'eps': ||eps - z||^2 (DDPM).
        reduction: 'mean' over the batch (default), 'sum', or 'none' (per-sample, (B,)).

    Returns:
        The loss (a 0-d tensor, or (B,) for reduction='none'), float32 (float64 for float64
        pred). Differentiable w.r.t. pred: the backward regenerates z, nothing else is stored.
    """
    _checks.check_float_tensor(pred, "pred")
    if x is not None:
        _checks.check_like(pred, x, "x")
    if parametrization not in ("score", "eps"):
        raise ValueError(f"parametrization must be 'score' or 'eps', got {parametrization!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    power = _checks.check_real(weighting_power, "weighting_power")
    name = backends.resolve(backend, pred.device, "dsm_loss")
    s = _sigma_tensor(sigma, pred, name)
    seed, seed64, step, particle_offset = resolve_counter(
        seed, step, particle_offset, pred.shape[0], _checks.elements_per_particle(pred)
    )
    eps_form = parametrization == "eps"
    if name == "reference":
        return dsm_loss_ref(pred, s, seed, step, particle_offset, power=power, eps_form=eps_form, reduction=reduction)
    per = backends.op_namespace(name).dsm_loss(pred, s, power, eps_form, seed64, step, particle_offset)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per
