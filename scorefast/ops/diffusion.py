"""Contract of the reverse-diffusion ops.

    reverse_step:        x_new = clamp(c_x·x + c_s·c·g + b·z),   g = s_u + w·(s_c − s_u)
                         c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping)
    snr_corrector_step:  x_new = clamp(x + ε_p·g + sqrt(2 ε_p)·z)
                         ε_p = 2 (snr ‖z_p‖ / ‖g_p‖)²                     (per sample)
                         ε_p = 2 (snr mean_q ‖z_q‖ / mean_q ‖g_q‖)²       (batch_mean)

``g`` is the model output the step is written in (a score, or a noise prediction with a
negative c_s), ``score`` in the schemas. ``reverse_step`` (out of place, a new contiguous
tensor) and ``reverse_step_`` (in place into x, any strides): c_x, c_s and b are the scalars
``x_coef`` / ``score_coef`` / ``noise_scale`` or, when given, the per-particle tensors [P] in
the math dtype of x; ``noise`` is explicit standard-normal noise of x's shape, else the
contract's normals for (seed, step, particle_offset + p). ``snr_corrector_step`` returns
(x_new, ε) and ``snr_corrector_step_`` updates x in place and returns ε: [P] in the math
dtype of x; z is always the contract's normals, regenerated for its norm and for the update.
The norms accumulate in float64, ε and sqrt(2 ε) are computed in float64 and rounded to the
math dtype once. Definitions: ``reverse_step_ref`` and ``snr_corrector_step_ref`` at the end
of this module.
"""

from __future__ import annotations

import math

import torch

from ._common import (
    acc_dtype,
    check_counter,
    check_device,
    check_finite,
    check_like,
    check_no_partial_overlap,
    check_per_particle,
    check_storage,
    elements_per_particle,
    fail,
    scalar_name,
)
from .noise import normal_ref

_ARGS = (
    "Tensor score, Tensor? score_cond, float guidance, float x_coef, Tensor? x_coef_per_particle, "
    "float score_coef, Tensor? score_coef_per_particle, float noise_scale, Tensor? noise_scale_per_particle, "
)
_COUNTER = "SymInt seed, SymInt step, SymInt particle_offset"
_CLAMP = "float? clamp_min, float? clamp_max"
_CORRECTOR = f"Tensor score, Tensor? score_cond, float guidance, float snr, bool batch_mean, {_COUNTER}, {_CLAMP}"
SCHEMAS = {
    "reverse_step": f"(Tensor x, {_ARGS}Tensor? noise, {_COUNTER}, {_CLAMP}, float? max_score_norm) -> Tensor",
    "reverse_step_": f"(Tensor(a!) x, {_ARGS}Tensor? noise, {_COUNTER}, {_CLAMP}, float? max_score_norm) -> ()",
    "snr_corrector_step": f"(Tensor x, {_CORRECTOR}) -> (Tensor, Tensor)",
    "snr_corrector_step_": f"(Tensor(a!) x, {_CORRECTOR}) -> Tensor",
}


def _check_x_and_scores(x, score, score_cond, guidance, device_type, kernels) -> None:
    if x.dim() < 1:
        fail("x must have at least one dimension (dim 0 = particles), got a 0-d tensor")
    check_storage(x, "x")
    check_device(x, "x", device_type, kernels)
    for t, name in ((score, "score"), (score_cond, "score_cond")):
        if t is not None:
            check_like(x, t, name)
            if t.dtype != x.dtype:
                fail(f"{name} must have the dtype of x ({scalar_name(x.dtype)}), got {scalar_name(t.dtype)}")
    check_finite(guidance, "guidance")


def _check_clamp(clamp_min, clamp_max) -> None:
    for v, name in ((clamp_min, "clamp_min"), (clamp_max, "clamp_max")):
        if v is not None and math.isnan(v):
            fail(f"{name} must not be NaN")
    if clamp_min is not None and clamp_max is not None and clamp_min > clamp_max:
        fail(f"clamp_min ({clamp_min}) must be <= clamp_max ({clamp_max})")


def check_args(
    x,
    score,
    score_cond,
    guidance,
    x_coef,
    x_coef_per_particle,
    score_coef,
    score_coef_per_particle,
    noise_scale,
    noise_scale_per_particle,
    noise,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
    *,
    inplace: bool = False,
    device_type: str | None = None,
    kernels: str = "",
) -> None:
    """The checks of the C++ reverse_step (csrc/diffusion_op.h), with its messages; ``inplace``:
    the op writes into x, so no input may partially overlap it."""
    _check_x_and_scores(x, score, score_cond, guidance, device_type, kernels)
    check_finite(x_coef, "x_coef")
    check_finite(score_coef, "score_coef")
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        fail(f"noise_scale must be finite and >= 0, got {noise_scale}")
    check_per_particle(x, x_coef_per_particle, "x_coef_per_particle")
    check_per_particle(x, score_coef_per_particle, "score_coef_per_particle")
    check_per_particle(x, noise_scale_per_particle, "noise_scale_per_particle")
    if noise is not None:
        check_like(x, noise, "noise")
        check_storage(noise, "noise")
    check_counter(step, particle_offset, x.shape[0], elements_per_particle(x))
    _check_clamp(clamp_min, clamp_max)
    if max_score_norm is not None and not (math.isfinite(max_score_norm) and max_score_norm > 0):
        fail(f"max_score_norm must be finite and > 0, got {max_score_norm}")
    if inplace:
        for t, name in (
            (score, "score"),
            (score_cond, "score_cond"),
            (noise, "noise"),
            (x_coef_per_particle, "x_coef_per_particle"),
            (score_coef_per_particle, "score_coef_per_particle"),
            (noise_scale_per_particle, "noise_scale_per_particle"),
        ):
            check_no_partial_overlap(x, t, name)


def check_corrector_args(
    x,
    score,
    score_cond,
    guidance,
    snr,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    *,
    inplace: bool = False,
    device_type: str | None = None,
    kernels: str = "",
) -> None:
    """The checks of the C++ snr_corrector_step (csrc/diffusion_op.h), with its messages."""
    _check_x_and_scores(x, score, score_cond, guidance, device_type, kernels)
    if not (math.isfinite(snr) and snr >= 0):
        fail(f"snr must be finite and >= 0, got {snr}")
    check_counter(step, particle_offset, x.shape[0], elements_per_particle(x))
    _check_clamp(clamp_min, clamp_max)
    if inplace:
        check_no_partial_overlap(x, score, "score")
        check_no_partial_overlap(x, score_cond, "score_cond")


# ---------------------------------------------------------------------------------------
# Fake kernels and autograd.


def _fake(x, *args):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_inplace(*args):
    return None


def _fake_corrector(x, *args):
    steps = x.new_empty((x.shape[0],), dtype=acc_dtype(x.dtype))
    return torch.empty_like(x, memory_format=torch.contiguous_format), steps


def _fake_corrector_inplace(x, *args):
    return x.new_empty((x.shape[0],), dtype=acc_dtype(x.dtype))


def _clamp_mask(grad, output, clamp):
    if clamp is None:
        return grad
    lo = -math.inf if clamp[0] is None else clamp[0]
    hi = math.inf if clamp[1] is None else clamp[1]
    return grad * ((output > lo) & (output < hi))  # clamped elements pass no gradient


def _clamp_of(clamp_min, clamp_max):
    return (clamp_min, clamp_max) if (clamp_min is not None or clamp_max is not None) else None


def _setup_context(ctx, inputs, output):
    (x, score, score_cond, guidance, x_coef, x_pp, score_coef, s_pp, noise_scale, b_pp, noise) = inputs[:11]
    clamp_min, clamp_max, max_score_norm = inputs[14:17]
    ctx.guidance = guidance
    ctx.coefs = (x_coef, score_coef, noise_scale)
    ctx.has_cond = score_cond is not None
    ctx.has_noise = noise is not None
    ctx.clamp = _clamp_of(clamp_min, clamp_max)
    ctx.clipped = max_score_norm is not None
    ctx.save_for_backward(x_pp, s_pp, b_pp, output if ctx.clamp else None)


def _backward(ctx, grad):
    x_pp, s_pp, b_pp, output = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if needs[5] or needs[7] or needs[9]:
        raise RuntimeError(
            "reverse_step: gradients with respect to per-particle x_coef, score_coef or noise_scale are not supported"
        )
    if ctx.clipped and (needs[1] or needs[2]):
        raise RuntimeError(
            "reverse_step: gradients with respect to the score are not supported with max_score_norm clipping"
        )
    grad = _clamp_mask(grad, output, ctx.clamp)
    shape = (grad.shape[0],) + (1,) * (grad.dim() - 1)
    coef = lambda pp, scalar: pp.reshape(shape) if pp is not None else scalar  # noqa: E731
    x_coef, score_coef, noise_scale = ctx.coefs
    grad_g = grad * coef(s_pp, score_coef)
    grad_score = grad_g * (1.0 - ctx.guidance) if ctx.has_cond else grad_g
    grad_cond = grad_g * ctx.guidance if ctx.has_cond else None
    grad_noise = grad * coef(b_pp, noise_scale) if ctx.has_noise else None
    grad_x = grad * coef(x_pp, x_coef)
    return (grad_x, grad_score, grad_cond, None, None, None, None, None, None, None, grad_noise) + (None,) * 6


def _setup_corrector_context(ctx, inputs, output):
    clamp_min, clamp_max = inputs[9], inputs[10]
    ctx.clamp = _clamp_of(clamp_min, clamp_max)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[0] if ctx.clamp else None)


def _corrector_backward(ctx, grad, _grad_steps):
    (output,) = ctx.saved_tensors
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise RuntimeError(
            "snr_corrector_step: gradients with respect to the score are not supported "
            "(the step size depends on the score's norm)"
        )
    return (_clamp_mask(grad, output, ctx.clamp),) + (None,) * 10


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernels of the ops in ``ops`` and the autograd of the out-of-place ops: reverse_step
    is linear in x, the scores and an explicit noise; snr_corrector_step passes gradients to x
    (its step size depends on the score's norm, so not to the score). The in-place forms do not
    track gradients."""
    if fakes:
        table = {
            "reverse_step": _fake,
            "reverse_step_": _fake_inplace,
            "snr_corrector_step": _fake_corrector,
            "snr_corrector_step_": _fake_corrector_inplace,
        }
        for op in ops:
            torch.library.register_fake(f"{namespace}::{op}", table[op])
    if "reverse_step" in ops:
        torch.library.register_autograd(f"{namespace}::reverse_step", _backward, setup_context=_setup_context)
    if "snr_corrector_step" in ops:
        torch.library.register_autograd(
            f"{namespace}::snr_corrector_step", _corrector_backward, setup_context=_setup_corrector_context
        )


# The definitions: the pure-PyTorch references every kernel is tested against.


def reverse_step_ref(
    x: torch.Tensor,  # [P, ...]
    score: torch.Tensor,  # like x: g, or g_uncond with guidance
    *,
    score_coef,  # c_s: float, or tensor [P]
    x_coef=1.0,  # c_x: float, or tensor [P]
    noise_scale=0.0,  # b: float, or tensor [P]
    score_cond: torch.Tensor | None = None,  # like x
    guidance: float = 1.0,
    noise: torch.Tensor | None = None,  # like x; None: the contract's z(seed, step)
    seed: int = 0,
    step: int = 0,
    particle_offset: int = 0,
    clamp_min: float | None = None,
    clamp_max: float | None = None,
    max_score_norm: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """c_x·x + c_s·c·g + b·z, then clamped, with g = s_u + w·(s_c − s_u) and
    c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping; NaN if ‖g_p‖ is NaN).

    Computes in ``compute_dtype`` (default float64 for float64 x, else float32) and returns
    x's dtype and shape. The noise term is skipped when ``noise_scale`` is the number 0.
    """
    if compute_dtype is None:
        compute_dtype = acc_dtype(x.dtype)
    P = x.shape[0]
    D = math.prod(x.shape[1:])
    flat = lambda t: t.reshape(P, D).to(compute_dtype)  # noqa: E731
    per_particle = lambda v: v.to(compute_dtype)[:, None] if isinstance(v, torch.Tensor) else v  # noqa: E731

    g = flat(score)
    if score_cond is not None:
        g = g + guidance * (flat(score_cond) - g)
    a = per_particle(score_coef)
    if max_score_norm is not None:
        norm = torch.linalg.vector_norm(g.to(torch.float64), dim=1, keepdim=True)
        # A NaN norm gives a NaN factor: the whole particle is NaN, as clip_grad_norm_ does.
        factor = torch.where(norm <= max_score_norm, torch.ones_like(norm), max_score_norm / norm)
        a = a * factor.to(compute_dtype)
    out = per_particle(x_coef) * flat(x) + a * g
    if not (isinstance(noise_scale, (int, float)) and noise_scale == 0):
        if noise is None:
            z = normal_ref(P, D, seed, step, particle_offset, x.device)
        else:
            z = flat(noise)
        out = out + per_particle(noise_scale) * z.to(compute_dtype)
    if clamp_min is not None or clamp_max is not None:
        # The bounds in the math dtype, as the kernels hold them (1e300 is inf in float32).
        bound = lambda v: None if v is None else torch.tensor(v, dtype=compute_dtype, device=out.device)  # noqa: E731
        out = torch.clamp(out, bound(clamp_min), bound(clamp_max))
    return out.to(x.dtype).reshape(x.shape)


def corrector_coefficients(
    g_sum_sq: torch.Tensor, z_sum_sq: torch.Tensor, snr: float, batch_mean: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε, sqrt(2 ε)) per particle in ``dtype`` from the float64 squared norms [P] of g and z:
    ε = 2 (snr ‖z‖ / ‖g‖)², with the batch means of the norms when ``batch_mean``. Computed in
    float64 and rounded once (a zero score norm gives ε = inf, a NaN one NaN)."""
    g_norm, z_norm = torch.sqrt(g_sum_sq.double()), torch.sqrt(z_sum_sq.double())
    if batch_mean:
        g_norm = g_norm.mean().expand_as(g_norm)
        z_norm = z_norm.mean().expand_as(z_norm)
    eps = 2.0 * (snr * z_norm / g_norm) ** 2
    return eps.to(dtype), torch.sqrt(2.0 * eps).to(dtype)


def corrector_step_sizes(
    score: torch.Tensor,
    score_cond: torch.Tensor | None,
    guidance: float,
    z: torch.Tensor,
    snr: float,
    batch_mean: bool,
    compute_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g [P, D], ε, sqrt(2 ε)) of the corrector: g = s + w (s_c - s) in ``compute_dtype``, the
    float64 squared norms of g and of z [P, D] (in its own dtype), ``corrector_coefficients``."""
    P = score.shape[0]
    D = math.prod(score.shape[1:])
    g = score.reshape(P, D).to(compute_dtype)
    if score_cond is not None:
        g = g + guidance * (score_cond.reshape(P, D).to(compute_dtype) - g)
    g_sq = (g.double() ** 2).sum(dim=1)
    z_sq = (z.double() ** 2).sum(dim=1)
    eps, b = corrector_coefficients(g_sq, z_sq, snr, batch_mean, compute_dtype)
    return g, eps, b


def snr_corrector_step_ref(
    x: torch.Tensor,  # [P, ...]
    score: torch.Tensor,  # like x
    *,
    snr: float,
    batch_mean: bool = False,
    score_cond: torch.Tensor | None = None,
    guidance: float = 1.0,
    noise: torch.Tensor | None = None,  # like x; None: the contract's z(seed, step)
    seed: int = 0,
    step: int = 0,
    particle_offset: int = 0,
    clamp_min: float | None = None,
    clamp_max: float | None = None,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_new, ε): the Langevin corrector x + ε·g + sqrt(2 ε)·z with the contract's z (or an
    explicit ``noise``, taken in ``compute_dtype``) and the SNR step size ε per particle
    (``corrector_coefficients``), norms in float64 of g computed in ``compute_dtype`` (default:
    x's math dtype) and of the float32 z (the explicit z in ``compute_dtype``)."""
    if compute_dtype is None:
        compute_dtype = acc_dtype(x.dtype)
    P = x.shape[0]
    D = math.prod(x.shape[1:])
    if noise is None:
        z = normal_ref(P, D, seed, step, particle_offset, x.device)
    else:
        z = noise.reshape(P, D).to(compute_dtype)
    g, eps, b = corrector_step_sizes(score, score_cond, guidance, z, snr, batch_mean, compute_dtype)
    out = reverse_step_ref(
        x,
        g.reshape(x.shape),
        score_coef=eps,
        noise_scale=b,
        noise=None if noise is None else z.reshape(x.shape),
        seed=seed,
        step=step,
        particle_offset=particle_offset,
        clamp_min=clamp_min,
        clamp_max=clamp_max,
        compute_dtype=compute_dtype,
    )
    return out, eps.to(acc_dtype(x.dtype))
