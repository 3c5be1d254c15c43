"""Fused forward process and loss of diffusion training, VP and VE, with the noise regenerated,
never stored:

    x_t = alpha_b x + sigma_b z,       z = the noise contract's normals for (seed, step, sample)
    l_b = w_b ||pred_b - target_b||^2  target: score -z/sigma, eps z, v alpha z - sigma x, x0 x

VP schedules have alpha^2 + sigma^2 = 1 (DDPM: alpha = sqrt(alphas_cumprod[t]), see
``vp_coefficients``), VE ones alpha = 1 (then dsm_vp_perturb is dsm_perturb). Every
parametrization is one fused op, ``<ns>::dsm_vp_loss``: l_b = w_b ||pred - a_b z - c_b x||^2 with
(a, c, w) formed here; its backward ``<ns>::dsm_vp_loss_backward`` regenerates z again. Their
contract (schemas, checks, fake kernels, autograd) is ``scorefast.ops.dsm_vp``.
"""

from __future__ import annotations

import numbers

import torch

from . import _checks
from . import backend_registry as backends
from .noise import resolve_counter
from .ops._common import acc_dtype
from .ops.dsm_vp import PARAMETRIZATIONS, WEIGHTINGS, dsm_vp_fused_loss_ref, dsm_vp_perturb_ref, snr_weight_ref


def _per_sample(value, x: torch.Tensor, name: str, *, positive: bool) -> torch.Tensor:
    """A float or (B,) tensor as a [B] tensor in x's math dtype, values checked finite and
    > 0 (``positive``) or >= 0 (where that costs no device sync: CPU tensors, eager)."""
    acc = acc_dtype(x.dtype)
    B = x.shape[0]
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = float(value)
    if isinstance(value, torch.Tensor):
        _checks.check_per_particle(value, x, name, positive=positive)
        return value.to(acc).contiguous()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a tensor of shape ({B},), got {type(value).__name__}")
    v = _checks.check_real(value, name, positive=positive, minimum=None if positive else 0.0)
    return torch.full((B,), v, dtype=acc, device=x.device)


def vp_coefficients(t, alphas_cumprod: torch.Tensor, dtype: torch.dtype | None = None):
    """(alpha, sigma) of a VP schedule at integer timesteps ``t``: sqrt(alphas_cumprod[t]) and
    sqrt(1 - alphas_cumprod[t]), as diffusers' DDPMScheduler.add_noise forms them.

    Args:
        t: timesteps, an int or an int tensor (B,).
        alphas_cumprod: the schedule's cumulative products of (1 - beta), (T,).
        dtype: the dtype to form them in (default alphas_cumprod's); diffusers uses the data's.

    Returns:
        (alpha, sigma), each of t's shape, on alphas_cumprod's device.
    """
    if not isinstance(alphas_cumprod, torch.Tensor) or alphas_cumprod.dim() != 1:
        raise ValueError("alphas_cumprod must be a 1-D tensor (one value per timestep)")
    ac = alphas_cumprod.to(dtype) if dtype is not None else alphas_cumprod
    t = torch.as_tensor(t, device=ac.device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"t must be an integer timestep or an integer tensor, got {t.dtype}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= ac.shape[0]):
        raise ValueError(f"t must be in [0, {ac.shape[0]}) (timesteps of alphas_cumprod), got {t.tolist()}")
    at = ac[t]
    return at**0.5, (1 - at) ** 0.5


def dsm_vp_perturb(
    x: torch.Tensor,
    alpha,
    sigma,
    *,
    seed: int,
    step: int = 0,
    particle_offset: int = 0,
    backend: str = "auto",
) -> torch.Tensor:
    """The forward process x_t = alpha_b x + sigma_b z, z the contract's normals for
    (seed, step, sample): what dsm_vp_loss regenerates.

    Args:
        x: clean data, shape (B, ...): dim 0 indexes samples. float32, float64, float16, bfloat16.
        alpha: signal scale, a float >= 0 or a (B,) tensor (1 for VE schedules).
        sigma: noise scale, a float > 0 or a (B,) tensor. alpha and sigma are used in x's math
            dtype (float64 for float64 x, float32 otherwise) and are not differentiated.
        seed, step, particle_offset: the noise counter (as langevin_step); pass the same ones to
            dsm_vp_loss.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba'.

    Returns:
        x_t, shape and dtype of x, contiguous (math in float32, float64 for float64 x; 16-bit
        storage is rounded once). Differentiable w.r.t. x (d x_t / d x = alpha).
    """
    _checks.check_float_tensor(x, "x")
    name = backends.resolve(backend, x.device, "dsm_vp_perturb")
    a = _per_sample(alpha, x, "alpha", positive=False)
    s = _per_sample(sigma, x, "sigma", positive=True)
    seed, seed64, step, particle_offset = resolve_counter(
        seed, step, particle_offset, x.shape[0], _checks.elements_per_particle(x)
    )
    if name == "reference":
        return dsm_vp_perturb_ref(x, a, s, seed, step, particle_offset).contiguous()
    return backends.op_namespace(name).dsm_vp_perturb(x, a, s, seed64, step, particle_offset)


def loss_coefficients(
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    parametrization: str,
    weighting: str,
    weighting_power: float = 2.0,
    snr_gamma: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, c, w) of l_b = w_b ||pred - a_b z - c_b x||^2 for a parametrization and weighting.

    alpha, sigma: (B,) in the math dtype; a and c come back in it, w in float64 (the contract's
    lambda, scorefast.ops.dsm_vp.snr_weight_ref, formed from alpha and sigma widened to float64).
    The score form carries the factor 1/2 of 1/2 lambda ||s + z / sigma||^2 (dsm_loss's convention).
    """
    # only the parametrization's own pair is formed: each is a pass over B samples
    if parametrization == "score":
        a, c = -(1 / sigma), torch.zeros_like(alpha)  # 1 / sigma rounded once, as dsm_loss's kernels
    elif parametrization == "eps":
        a, c = torch.ones_like(alpha), torch.zeros_like(alpha)
    elif parametrization == "v":
        a, c = alpha, -sigma
    else:  # x0
        a, c = torch.zeros_like(alpha), torch.ones_like(alpha)
    lam = snr_weight_ref(alpha, sigma, parametrization, weighting, weighting_power, snr_gamma)
    w = 0.5 * lam if parametrization == "score" else lam
    return a.contiguous(), c.contiguous(), w.contiguous()


def dsm_vp_loss(
    pred: torch.Tensor,
    x: torch.Tensor | None,
    alpha,
    sigma,
    *,
    seed: int,
    step: int = 0,
    particle_offset: int = 0,
    parametrization: str = "eps",
    weighting: str | None = None,
    weighting_power: float = 2.0,
    snr_gamma: float = 5.0,
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Diffusion training loss at x_t = dsm_vp_perturb(x, alpha, sigma, seed=..., step=...),
    with the noise regenerated in the kernel.

    l_b = w_b ||pred_b - target_b||^2 (a sum over the elements of sample b), target by
    ``parametrization``: 'score' -z/sigma (with w_b = 1/2 lambda_b: dsm_loss's score form),
    'eps' z, 'v' alpha z - sigma x, 'x0' x; and w_b = lambda_b by ``weighting``: 'none' 1,
    'sigma^p' sigma^p, 'snr' alpha^2/sigma^2, 'min_snr' min(SNR, gamma) carried over to the
    parametrization (Hang et al. 2023: x0 min(SNR, gamma), eps min(SNR, gamma)/SNR,
    v min(SNR, gamma)/(SNR + 1), score sigma^2 min(SNR, gamma)/SNR).

    Args:
        pred: the model's output at x_t, shape of x (B, ...). Any float dtype; 16-bit
            predictions are computed and accumulated in float32.
        x: the clean data (B, ...), required for 'v' and 'x0'; for 'score' and 'eps' it is
            only checked against pred's shape (may be None). Read in pred's dtype (converted
            if it differs); differentiable.
        alpha, sigma: the coefficients used in dsm_vp_perturb: alpha a float >= 0 or (B,),
            sigma a float > 0 or (B,); not differentiated.
        seed, step, particle_offset: the same noise counter as dsm_vp_perturb.
        parametrization: 'score', 'eps' (default), 'v' or 'x0'.
        weighting: 'none', 'sigma^p', 'snr' or 'min_snr'; default None: 'sigma^p' for the
            score (NCSN), 'none' otherwise.
        weighting_power: p of 'sigma^p' (default 2).
        snr_gamma: gamma of 'min_snr' (default 5, > 0).
        reduction: 'mean' over the batch (default), 'sum', or 'none' (per-sample, (B,)).

    Returns:
        The loss (a 0-d tensor, or (B,) for reduction='none'), float32 (float64 for float64
        pred). Differentiable w.r.t. pred (and x): the backward regenerates z, nothing else
        is stored. With alpha = 1 the score and eps forms are dsm_loss's.
    """
    _checks.check_float_tensor(pred, "pred")
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {', '.join(map(repr, PARAMETRIZATIONS))}, got {parametrization!r}"
        )
    weighting = weighting or ("sigma^p" if parametrization == "score" else "none")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(map(repr, WEIGHTINGS))}, got {weighting!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    power = _checks.check_real(weighting_power, "weighting_power")
    gamma = _checks.check_real(snr_gamma, "snr_gamma", positive=True)
    if x is not None:
        _checks.check_like(pred, x, "x")
    elif parametrization in ("v", "x0"):
        raise ValueError(f"x (the clean data) is required for parametrization {parametrization!r}")
    name = backends.resolve(backend, pred.device, "dsm_vp_loss")
    al = _per_sample(alpha, pred, "alpha", positive=False)
    s = _per_sample(sigma, pred, "sigma", positive=True)
    seed, seed64, step, particle_offset = resolve_counter(
        seed, step, particle_offset, pred.shape[0], _checks.elements_per_particle(pred)
    )
    a, c, w = loss_coefficients(al, s, parametrization, weighting, power, gamma)
    # the target of 'score' and 'eps' does not involve x: the kernels do not read it then
    x_used = x.to(pred.dtype) if parametrization in ("v", "x0") else None
    if name == "reference":
        per = dsm_vp_fused_loss_ref(pred, x_used, a, c, w, seed, step, particle_offset)
    else:
        per = backends.op_namespace(name).dsm_vp_loss(pred, x_used, a, c, w, seed64, step, particle_offset)
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    return per
