"""dsm_perturb and dsm_loss (forward and the gradient w.r.t. the prediction) against the float64 reference."""

from __future__ import annotations

import torch

from ... import dsm as api
from ...ops import dsm as ref
from ..budgets import Comparison, compare, dsm_loss_budget, dsm_perturb_tolerance, mismatch
from ._common import PARTICLE_OFFSET, SEED, STEP, Size, Variant

PERTURB_VARIANTS = {
    "per_sample_sigma": Variant({"scalar_sigma": False}),
    "scalar_sigma": Variant({"scalar_sigma": True}),
}
LOSS_VARIANTS = {
    "score": Variant({"parametrization": "score"}),
    "score_backward": Variant({"parametrization": "score", "backward": True}),
    "eps": Variant({"parametrization": "eps"}),
    "eps_backward": Variant({"parametrization": "eps", "backward": True}),
}
WEIGHTING_POWER = 1.5  # not the default 2: the weight's exponent is checked too


def _data(size: Size, dtype: torch.dtype, device):
    g = torch.Generator().manual_seed(3)
    B, D = size.particles, size.dim
    x = torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype).to(device)
    sigma = 0.05 + 2 * torch.rand(B, generator=g, dtype=torch.float64)
    pred = torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype).to(device)
    return x, sigma, pred


def _sigma_for(sigma: torch.Tensor, dtype: torch.dtype, device):
    return sigma.to(torch.float64 if dtype == torch.float64 else torch.float32).to(device)


def check_perturb(
    backend: str, device: torch.device, dtype: torch.dtype, size: Size, *, scalar_sigma: bool = False
) -> Comparison:
    """x + sigma z for x (particles, dim) in ``dtype`` with per-sample (B,) or one scalar sigma."""
    x, sigma, _ = _data(size, dtype, device)
    if scalar_sigma:
        sigma = torch.full_like(sigma, 0.7)
    arg = 0.7 if scalar_sigma else _sigma_for(sigma, dtype, device)
    got = api.dsm_perturb(x, arg, seed=SEED, step=STEP, particle_offset=PARTICLE_OFFSET, backend=backend)
    s_used = sigma if scalar_sigma else arg.cpu().double()
    expected = ref.dsm_perturb_ref(x.cpu().double(), s_used, SEED, STEP, PARTICLE_OFFSET, compute_dtype=torch.float64)
    if got.dtype != dtype:
        return mismatch(f"result {got.dtype}, expected {dtype}")
    return compare(got, expected, dsm_perturb_tolerance(x.cpu(), s_used, expected, dtype, SEED, STEP, PARTICLE_OFFSET))


def check_loss(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    parametrization: str = "score",
    backward: bool = False,
) -> Comparison:
    """Per-sample losses (B,) of a prediction (particles, dim) in ``dtype``, or (``backward``) the
    gradient of sum_b c_b l_b w.r.t. the prediction, for weights c_b in [0.5, 1.5]."""
    x, sigma, pred = _data(size, dtype, device)
    s = _sigma_for(sigma, dtype, device)
    pred = pred.requires_grad_(backward)
    eps_form = parametrization == "eps"
    c = torch.linspace(0.5, 1.5, pred.shape[0], dtype=torch.float64)
    with torch.enable_grad():
        per = api.dsm_loss(
            pred,
            x,
            s,
            seed=SEED,
            step=STEP,
            particle_offset=PARTICLE_OFFSET,
            weighting_power=WEIGHTING_POWER,
            parametrization=parametrization,
            reduction="none",
            backend=backend,
        )
        loss, loss_tol, grad, grad_tol = dsm_loss_budget(
            pred, s, eps_form, WEIGHTING_POWER, dtype, SEED, STEP, PARTICLE_OFFSET, upstream=c
        )
        if not backward:
            return compare(per, loss, loss_tol, "loss")
        (got,) = torch.autograd.grad((per * c.to(per.device).to(per.dtype)).sum(), pred)
    if got.dtype != dtype:
        return mismatch(f"gradient {got.dtype}, expected {dtype}")
    return compare(got, grad, grad_tol, "gradient")
