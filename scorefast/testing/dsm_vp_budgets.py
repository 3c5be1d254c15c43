"""Error budgets of dsm_vp_perturb and dsm_vp_loss: how far a kernel may be from the float64
reference, element by element (the conventions of scorefast.testing.budgets)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..ops.dsm_vp import dsm_vp_noise_ref, snr_weight_ref
from .budgets import MAX_RADIUS, noise_tolerance, storage_rounding, unit_roundoff


def dsm_vp_perturb_tolerance(
    x: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    ref: torch.Tensor,
    dtype: torch.dtype,
    seed: int,
    step: int,
    particle_offset: int,
) -> torch.Tensor:
    """Bound on |dsm_vp_perturb - reference| for x (B, ...), alpha and sigma (B,): sigma times the
    noise tolerance, 4u (alpha |x| + sigma r_max) for the two products and the sum, one storage ulp."""
    B = x.shape[0]
    per = (B, *([1] * (x.dim() - 1)))
    a = alpha.detach().double().cpu().reshape(per)
    s = sigma.detach().double().cpu().reshape(per)
    z_tol = noise_tolerance(B, math.prod(x.shape[1:]), seed, step, particle_offset).reshape(x.shape)
    tol = s * z_tol + 4 * unit_roundoff(dtype) * (a * x.detach().double().cpu().abs() + s * MAX_RADIUS)
    return tol + storage_rounding(ref.double(), dtype)


@dataclass(frozen=True)
class LossBudget:
    """The float64 expectations of dsm_vp_loss and their tolerances: per-sample losses (B,), the
    gradients of sum_b g_b l_b w.r.t. pred and x (B, D), and the residual r = pred - target with
    its bound dr (B, D)."""

    loss: torch.Tensor
    loss_tol: torch.Tensor
    grad_pred: torch.Tensor
    grad_pred_tol: torch.Tensor
    grad_x: torch.Tensor
    grad_x_tol: torch.Tensor
    r: torch.Tensor
    dr: torch.Tensor


def _grad_tol(ref: torch.Tensor, propagated: torch.Tensor, dtype: torch.dtype, roundings: int) -> torch.Tensor:
    return propagated + roundings * unit_roundoff(dtype) * ref.abs() + storage_rounding(ref, dtype)


def dsm_vp_loss_budget(
    pred: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    parametrization: str,
    weighting: str,
    weighting_power: float,
    snr_gamma: float,
    dtype: torch.dtype,
    seed: int,
    step: int,
    particle_offset: int,
    upstream: torch.Tensor | None = None,
) -> LossBudget:
    """The budget of dsm_vp_loss for pred and x (B, ...), alpha and sigma (B,) as the kernels got
    them (in the math dtype), and upstream gradients g (B,) (default ones).

    The kernel's z differs from the reference's by dz; forming a = -1/sigma rounds once and the
    residual pred - a z - c x three times more: dr = |a| dz + 4u (|pred| + |a z| + |c x|). The
    loss w sum r^2 is within w sum (2 |r| dr + dr^2) and (log2 D + 4) u of itself (float32 tree
    sums on Triton); the gradient 2 g w r within 2 g w dr, 3u of itself and one storage ulp; the
    gradient w.r.t. x, -c times that, one rounding more.
    """
    B = pred.shape[0]
    u = unit_roundoff(dtype)
    z = dsm_vp_noise_ref(pred.cpu(), seed, step, particle_offset).double()
    D = z.shape[1]
    p = pred.detach().cpu().reshape(B, D).double()
    xd = x.detach().cpu().reshape(B, D).double()
    al = alpha.detach().cpu().double()[:, None]
    s = sigma.detach().cpu().double()[:, None]
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    a, c = {"score": (-1 / s, zero), "eps": (one, zero), "v": (al, -s), "x0": (zero, one)}[parametrization]
    r = p - a * z - c * xd
    dz = noise_tolerance(B, D, seed, step, particle_offset)
    dr = a.abs() * dz + 4 * u * (p.abs() + a.abs() * z.abs() + c.abs() * xd.abs())
    lam = snr_weight_ref(al[:, 0], s[:, 0], parametrization, weighting, weighting_power, snr_gamma)
    w = 0.5 * lam if parametrization == "score" else lam
    loss = w * (r * r).sum(1)
    loss_tol = w * (2 * r.abs() * dr + dr * dr).sum(1) + (math.log2(max(D, 1)) + 4) * u * loss
    g = torch.ones(B, dtype=torch.float64) if upstream is None else upstream.detach().cpu().double()
    k = (2 * g * w)[:, None]
    grad_pred = k * r
    grad_x = -c * grad_pred
    return LossBudget(
        loss,
        loss_tol,
        grad_pred,
        _grad_tol(grad_pred, k * dr, dtype, 3),
        grad_x,
        _grad_tol(grad_x, c.abs() * k * dr, dtype, 4),
        r,
        dr,
    )
