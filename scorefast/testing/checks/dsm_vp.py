"""dsm_vp_perturb and dsm_vp_loss (forward and the gradients w.r.t. the prediction and the data)
against the float64 reference."""

from __future__ import annotations

import torch

from ... import dsm_vp as api
from ...ops import dsm_vp as ref
from ..budgets import Comparison, combine, compare, mismatch
from ..dsm_vp_budgets import dsm_vp_loss_budget, dsm_vp_perturb_tolerance
from ._common import PARTICLE_OFFSET, SEED, STEP, Size, Variant

PERTURB_VARIANTS = {
    "per_sample": Variant({"scalar_alpha": False}),
    "scalar_alpha": Variant({"scalar_alpha": True}),
}
LOSS_VARIANTS = {
    f"{par}{suffix}": Variant({"parametrization": par, "backward": backward})
    for par in ref.PARAMETRIZATIONS
    for suffix, backward in (("", False), ("_backward", True))
}
WEIGHTING, WEIGHTING_POWER, SNR_GAMMA = "min_snr", 2.0, 2.0  # SNRs on both sides of gamma below


def _data(size: Size, dtype: torch.dtype, device):
    g = torch.Generator().manual_seed(5)
    B, D = size.particles, size.dim
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    x = torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype).to(device)
    pred = torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype).to(device)
    alpha = (0.05 + 0.95 * torch.rand(B, generator=g, dtype=torch.float64)).to(acc).to(device)
    sigma = (0.05 + 1.95 * torch.rand(B, generator=g, dtype=torch.float64)).to(acc).to(device)
    return x, pred, alpha, sigma


def check_perturb(
    backend: str, device: torch.device, dtype: torch.dtype, size: Size, *, scalar_alpha: bool = False
) -> Comparison:
    """alpha x + sigma z for x (particles, dim) in ``dtype``, per-sample alpha (B,) or one scalar."""
    x, _, alpha, sigma = _data(size, dtype, device)
    if scalar_alpha:
        alpha = torch.full_like(alpha, 0.625)
    got = api.dsm_vp_perturb(
        x,
        0.625 if scalar_alpha else alpha,
        sigma,
        seed=SEED,
        step=STEP,
        particle_offset=PARTICLE_OFFSET,
        backend=backend,
    )
    if got.dtype != dtype:
        return mismatch(f"result {got.dtype}, expected {dtype}")
    expected = ref.dsm_vp_perturb_ref(
        x.cpu().double(), alpha.cpu(), sigma.cpu(), SEED, STEP, PARTICLE_OFFSET, compute_dtype=torch.float64
    )
    tol = dsm_vp_perturb_tolerance(x.cpu(), alpha, sigma, expected, dtype, SEED, STEP, PARTICLE_OFFSET)
    return compare(got, expected, tol)


def check_loss(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    parametrization: str = "eps",
    backward: bool = False,
) -> Comparison:
    """Per-sample losses (B,) of a prediction (particles, dim) in ``dtype`` with min-SNR weights,
    or (``backward``) the gradients of sum_b c_b l_b w.r.t. the prediction (and the data, for the
    parametrizations whose target involves it), for weights c_b in [0.5, 1.5]."""
    x, pred, alpha, sigma = _data(size, dtype, device)
    with_x = parametrization in ("v", "x0")
    pred = pred.requires_grad_(backward)
    x = x.requires_grad_(backward and with_x)
    c = torch.linspace(0.5, 1.5, pred.shape[0], dtype=torch.float64)
    budget = dsm_vp_loss_budget(
        pred, x, alpha, sigma, parametrization, WEIGHTING, WEIGHTING_POWER, SNR_GAMMA, dtype, SEED, STEP,
        PARTICLE_OFFSET, upstream=c,
    )  # fmt: skip
    with torch.enable_grad():
        per = api.dsm_vp_loss(
            pred,
            x,
            alpha,
            sigma,
            seed=SEED,
            step=STEP,
            particle_offset=PARTICLE_OFFSET,
            parametrization=parametrization,
            weighting=WEIGHTING,
            weighting_power=WEIGHTING_POWER,
            snr_gamma=SNR_GAMMA,
            reduction="none",
            backend=backend,
        )
        if not backward:
            return compare(per, budget.loss, budget.loss_tol, "loss")
        inputs = (pred, x) if with_x else (pred,)
        grads = torch.autograd.grad((per * c.to(per.device).to(per.dtype)).sum(), inputs)
    if any(g.dtype != dtype for g in grads):
        return mismatch(f"gradient {grads[0].dtype}, expected {dtype}")
    results = [compare(grads[0], budget.grad_pred, budget.grad_pred_tol, "gradient w.r.t. pred")]
    if with_x:
        results.append(compare(grads[1], budget.grad_x, budget.grad_x_tol, "gradient w.r.t. x"))
    return combine(*results)
