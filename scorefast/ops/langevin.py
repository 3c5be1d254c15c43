"""Contract of the Langevin update ops.

    x_new = clamp(x + a·c·g + b·z),   g = s_u + w·(s_c − s_u)   (g = score without score_cond)
    c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping)

``langevin_step`` (out of place, a new contiguous tensor), ``langevin_step_`` (in place into
x, any strides) and ``langevin_step_counter_`` (in place, no explicit noise, ``step`` an int64
tensor of one element read when the kernel runs). a and b are the scalars ``step_size`` /
``noise_scale`` or, when given, the per-particle tensors [P] in the math dtype of x. ``noise``
is explicit standard-normal noise of x's shape (else the contract's normals for (seed, step,
particle_offset + p)). Definition: ``langevin_step_ref`` at the end of this module.
"""

from __future__ import annotations

import math

import torch

from ._common import (
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
    "Tensor score, Tensor? score_cond, float guidance, float step_size, Tensor? step_size_per_particle, "
    "float noise_scale, Tensor? noise_scale_per_particle, "
)
_COUNTER = "SymInt seed, SymInt step, SymInt particle_offset"
_CLAMP = "float? clamp_min, float? clamp_max, float? max_score_norm"
SCHEMAS = {
    "langevin_step": f"(Tensor x, {_ARGS}Tensor? noise, {_COUNTER}, {_CLAMP}) -> Tensor",
    "langevin_step_": f"(Tensor(a!) x, {_ARGS}Tensor? noise, {_COUNTER}, {_CLAMP}) -> ()",
    # the step read from a one-element int64 tensor when the kernel runs (CUDA graphs)
    "langevin_step_counter_": (
        f"(Tensor(a!) x, {_ARGS}SymInt seed, Tensor step, SymInt particle_offset, {_CLAMP}) -> ()"
    ),
}


def check_args(
    x,
    score,
    score_cond,
    guidance,
    step_size,
    step_size_per_particle,
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
    """The checks of the C++ op (csrc/langevin_op.h), with its messages; ``inplace``: the op
    writes into x, so no input may partially overlap it."""
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
    if not (math.isfinite(step_size) and step_size >= 0):
        fail(f"step_size must be finite and >= 0, got {step_size}")
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        fail(f"noise_scale must be finite and >= 0, got {noise_scale}")
    check_per_particle(x, step_size_per_particle, "step_size_per_particle")
    check_per_particle(x, noise_scale_per_particle, "noise_scale_per_particle")
    if noise is not None:
        check_like(x, noise, "noise")
        check_storage(noise, "noise")
    check_counter(step, particle_offset, x.shape[0], elements_per_particle(x))
    for v, name in ((clamp_min, "clamp_min"), (clamp_max, "clamp_max")):
        if v is not None and math.isnan(v):
            fail(f"{name} must not be NaN")
    if clamp_min is not None and clamp_max is not None and clamp_min > clamp_max:
        fail(f"clamp_min ({clamp_min}) must be <= clamp_max ({clamp_max})")
    if max_score_norm is not None and not (math.isfinite(max_score_norm) and max_score_norm > 0):
        fail(f"max_score_norm must be finite and > 0, got {max_score_norm}")
    if inplace:
        for t, name in (
            (score, "score"),
            (score_cond, "score_cond"),
            (noise, "noise"),
            (step_size_per_particle, "step_size_per_particle"),
            (noise_scale_per_particle, "noise_scale_per_particle"),
        ):
            check_no_partial_overlap(x, t, name)


def _fake(
    x,
    score,
    score_cond,
    guidance,
    step_size,
    step_size_pp,
    noise_scale,
    noise_scale_pp,
    noise,
    seed,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fake_inplace(*args):
    return None


def _setup_context(ctx, inputs, output):
    (
        x,
        score,
        score_cond,
        guidance,
        step_size,
        step_size_pp,
        noise_scale,
        noise_scale_pp,
        noise,
        _seed,
        _step,
        _offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    ) = inputs
    ctx.guidance = guidance
    ctx.step_size = step_size
    ctx.noise_scale = noise_scale
    ctx.has_cond = score_cond is not None
    ctx.has_noise = noise is not None
    ctx.clamp = (clamp_min, clamp_max) if (clamp_min is not None or clamp_max is not None) else None
    ctx.clipped = max_score_norm is not None
    ctx.save_for_backward(step_size_pp, noise_scale_pp, output if ctx.clamp else None)


def _backward(ctx, grad):
    step_size_pp, noise_scale_pp, output = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if needs[5] or needs[7]:
        raise RuntimeError(
            "langevin_step: gradients with respect to per-particle step_size or noise_scale are not supported"
        )
    if ctx.clipped and (needs[1] or needs[2]):
        raise RuntimeError(
            "langevin_step: gradients with respect to the score are not supported with max_score_norm clipping"
        )
    if ctx.clamp is not None:
        lo = -math.inf if ctx.clamp[0] is None else ctx.clamp[0]
        hi = math.inf if ctx.clamp[1] is None else ctx.clamp[1]
        grad = grad * ((output > lo) & (output < hi))  # clamped elements pass no gradient
    per_particle_shape = (grad.shape[0],) + (1,) * (grad.dim() - 1)
    a = step_size_pp.reshape(per_particle_shape) if step_size_pp is not None else ctx.step_size
    grad_g = grad * a
    grad_score = grad_cond = grad_noise = None
    if ctx.has_cond:
        grad_score = grad_g * (1.0 - ctx.guidance)
        grad_cond = grad_g * ctx.guidance
    else:
        grad_score = grad_g
    if ctx.has_noise:
        b = noise_scale_pp.reshape(per_particle_shape) if noise_scale_pp is not None else ctx.noise_scale
        grad_noise = grad * b
    return (grad, grad_score, grad_cond, None, None, None, None, None, grad_noise, None, None, None, None, None, None)


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernels of the ops in ``ops`` and the autograd of ``langevin_step`` (linear in x,
    the scores and an explicit noise; the in-place forms do not track gradients)."""
    if fakes:
        for op in ops:
            torch.library.register_fake(f"{namespace}::{op}", _fake if op == "langevin_step" else _fake_inplace)
    if "langevin_step" in ops:
        torch.library.register_autograd(f"{namespace}::langevin_step", _backward, setup_context=_setup_context)


# The definition: the pure-PyTorch reference every kernel is tested against.
#
# Reference of langevin_step: the definition every backend is tested against.


def langevin_step_ref(
    x: torch.Tensor,  # [P, ...]
    score: torch.Tensor,  # like x: s, or s_uncond with guidance
    *,
    step_size,  # float, or tensor [P]
    noise_scale,  # float, or tensor [P]
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
    """x + a·c·g + b·z, then clamped, with g = s_u + w·(s_c − s_u) and
    c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping; NaN if ‖g_p‖ is NaN).

    Computes in ``compute_dtype`` (default float64 for float64 x, else float32) and returns
    x's dtype and shape. The noise term is skipped when ``noise_scale`` is the number 0.
    """
    if compute_dtype is None:
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    P = x.shape[0]
    D = math.prod(x.shape[1:])
    flat = lambda t: t.reshape(P, D).to(compute_dtype)  # noqa: E731
    per_particle = lambda v: v.to(compute_dtype)[:, None] if isinstance(v, torch.Tensor) else v  # noqa: E731

    g = flat(score)
    if score_cond is not None:
        g = g + guidance * (flat(score_cond) - g)
    a = per_particle(step_size)
    if max_score_norm is not None:
        norm = torch.linalg.vector_norm(g.to(torch.float64), dim=1, keepdim=True)
        # A NaN norm gives a NaN factor: the whole particle is NaN, as clip_grad_norm_ does.
        factor = torch.where(norm <= max_score_norm, torch.ones_like(norm), max_score_norm / norm)
        a = a * factor.to(compute_dtype)
    out = flat(x) + a * g
    if not (isinstance(noise_scale, (int, float)) and noise_scale == 0):
        if noise is None:
            z = normal_ref(P, g.shape[1], seed, step, particle_offset, x.device)
        else:
            z = flat(noise)
        out = out + per_particle(noise_scale) * z.to(compute_dtype)
    if clamp_min is not None or clamp_max is not None:
        # The bounds in the math dtype, as the kernels hold them (1e300 is inf in float32).
        bound = lambda v: None if v is None else torch.tensor(v, dtype=compute_dtype, device=out.device)  # noqa: E731
        out = torch.clamp(out, bound(clamp_min), bound(clamp_max))
    return out.to(x.dtype).reshape(x.shape)
