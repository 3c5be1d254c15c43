"""langevin_step: one fused Langevin update on every backend.

    x_new = clamp(x + a·c·g + b·z),   g = s_u + w·(s_c − s_u)   (g = s without guidance)
    c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping)
    z = the noise contract's normals for (seed, step, particle), or an explicit ``noise``

The ops ``<ns>::langevin_step`` (out of place), ``<ns>::langevin_step_`` (in place) and
``scorefast::langevin_step_counter_`` (the step in a one-element int64 tensor read when the
kernel runs, for CUDA graphs; used when ``step`` is a tensor) are defined, with their fake
kernels and autograd, by their contract ``scorefast.ops.langevin``. This module is the public
function that checks arguments and picks the backend.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from . import backend_registry as backends
from .noise import resolve_seed
from .ops._common import acc_dtype, overlap_message, partially_overlaps
from .ops.langevin import langevin_step_ref


def _coefficient(value, x: torch.Tensor, name: str):
    """(scalar, per-particle tensor or None) for a coefficient given as a number or a [P] tensor."""
    if isinstance(value, torch.Tensor):
        _checks.check_per_particle(value, x, name)
        acc = acc_dtype(x.dtype)
        return 0.0, value.to(acc).contiguous()
    return _checks.check_in_math_range(_checks.check_real(value, name, minimum=0.0), x, name), None


def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    *,
    step_size=None,
    epsilon=None,
    noise_scale=None,
    score_cond: torch.Tensor | None = None,
    guidance: float | None = None,
    noise: torch.Tensor | None = None,
    seed: int | None = None,
    step: int = 0,
    particle_offset: int = 0,
    clamp: tuple[float | None, float | None] | None = None,
    max_score_norm: float | None = None,
    inplace: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """One Langevin update ``x + a·s + b·z`` with in-kernel noise.

    Args:
        x: particles, shape (P, ...): dim 0 indexes particles, the rest (D elements) is one
            particle. float32, float64, float16 or bfloat16; math in float32 (float64 for
            float64). Any strides.
        score: s(x), shape of x. With ``score_cond`` it is the unconditional score s_u.
            Cast to x's dtype if it differs.
        step_size: a >= 0, a float or a tensor of shape (P,) (one per particle).
        epsilon: instead of step_size, the ε/2 convention: a = ε/2 and b = sqrt(ε) by default,
            i.e. ``x + ε/2·s + sqrt(ε)·z``. Give exactly one of step_size and epsilon.
        noise_scale: b >= 0, a float or a (P,) tensor. Default sqrt(2a) (unadjusted Langevin).
            b = 0 gives a deterministic step and draws no noise.
        score_cond: conditional score s_c, shape of x, for classifier-free guidance:
            the update uses g = s_u + w·(s_c − s_u).
        guidance: w, the guidance weight (default 1.0; needs ``score_cond``).
        noise: explicit standard-normal noise, shape of x, any float dtype (the unfused path:
            reproduce a run with your own generator). Excludes ``seed``.
        seed: 64-bit key of the counter-based noise, in [0, 2^64). Default: drawn from torch's
            global generator (so ``torch.manual_seed`` applies). For reproducible chains pass
            a seed and advance ``step``.
        step: sampler step t, in [0, 2^32): a different t gives independent noise. Also an
            int64 tensor of one element on x's device, read when the kernel runs, so a CUDA
            graph that captured the call draws the noise of the step it holds at each replay
            (no gradients through such a call).
        particle_offset: global id of particle 0 (for sharding particles across calls,
            processes or GPUs); particle p gets the noise of id particle_offset + p.
        clamp: (min, max) applied to the result; either end may be None. NaN stays NaN.
        max_score_norm: per-particle clipping: g ← g·min(1, max_score_norm/‖g_p‖₂) (SGLD for EBMs).
        inplace: write the result into x and return x.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba' (see scorefast.backends()).

    Returns:
        The updated particles, shape and dtype of x (contiguous), or x itself when inplace.

    Gradients flow to x, score, score_cond and an explicit noise (not through clipping, and
    not to per-particle coefficients); the in-place form does not track gradients.
    """
    _checks.check_float_tensor(x, "x")
    _checks.check_like(x, score, "score")
    if score.dtype != x.dtype:
        score = score.to(x.dtype)
    if score_cond is None:
        if guidance is not None:
            raise ValueError("guidance needs score_cond (classifier-free guidance mixes score and score_cond)")
        w = 1.0
    else:
        _checks.check_like(x, score_cond, "score_cond")
        if score_cond.dtype != x.dtype:
            score_cond = score_cond.to(x.dtype)
        w = _checks.check_real(1.0 if guidance is None else guidance, "guidance")

    if (step_size is None) == (epsilon is None):
        raise TypeError("pass exactly one of step_size (a) or epsilon (a = epsilon/2, b = sqrt(epsilon))")
    if epsilon is not None:
        eps_s, eps_t = _coefficient(epsilon, x, "epsilon")
        a_s, a_t = eps_s / 2, (eps_t / 2 if eps_t is not None else None)
    else:
        a_s, a_t = _coefficient(step_size, x, "step_size")
    if noise_scale is None:
        b_s, b_t = math.sqrt(2 * a_s), (torch.sqrt(2 * a_t) if a_t is not None else None)
        _checks.check_in_math_range(b_s, x, "step_size (through the default noise_scale sqrt(2 step_size))")
    else:
        b_s, b_t = _coefficient(noise_scale, x, "noise_scale")

    if noise is not None:
        _checks.check_like(x, noise, "noise")
    seed64, seed = resolve_seed(seed, noise)
    step_tensor = None
    if isinstance(step, torch.Tensor):
        step_tensor = _checks.check_step_tensor(step, x.device)
        step = 0
        if noise is not None:
            step_tensor = None  # explicit noise: the step is not used
    step, particle_offset = _checks.check_counter(step, particle_offset, x.shape[0], _checks.elements_per_particle(x))

    clamp_min = clamp_max = None
    if clamp is not None:
        if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
            raise TypeError(f"clamp must be a (min, max) pair (None for an open end), got {clamp!r}")
        clamp_min, clamp_max = clamp
        if clamp_min is not None:
            clamp_min = _checks.check_real(clamp_min, "clamp min")
        if clamp_max is not None:
            clamp_max = _checks.check_real(clamp_max, "clamp max")
        if clamp_min is not None and clamp_max is not None and clamp_min > clamp_max:
            raise ValueError(f"clamp min ({clamp_min}) must be <= clamp max ({clamp_max})")
    if max_score_norm is not None:
        max_score_norm = _checks.check_real(max_score_norm, "max_score_norm", positive=True)

    if inplace:  # as PyTorch's in-place ops: an input sharing part of x's memory is an error
        for t, name in (
            (score, "score"),
            (score_cond, "score_cond"),
            (noise, "noise"),
            (a_t, "step_size"),
            (b_t, "noise_scale"),
        ):
            if t is not None and partially_overlaps(x, t):
                raise ValueError(overlap_message(name))

    if (
        inplace
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (x, score, score_cond, noise, a_t, b_t))
    ):
        raise RuntimeError("langevin_step(inplace=True) does not track gradients; use inplace=False or torch.no_grad()")

    if (
        step_tensor is not None
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (x, score, score_cond, a_t, b_t))
    ):
        raise RuntimeError("langevin_step with a tensor step does not track gradients; use torch.no_grad()")

    name = backends.resolve(backend, x.device, "langevin_step" if step_tensor is None else "langevin_step_counter_")
    if name == "reference" and step_tensor is not None:
        step = _checks.check_int(int(step_tensor), "step", 0, _checks.MAX_STEP)  # a host read: not for CUDA graphs
    if name == "reference":
        out = langevin_step_ref(
            x,
            score,
            step_size=a_t if a_t is not None else a_s,
            noise_scale=b_t if b_t is not None else b_s,
            score_cond=score_cond,
            guidance=w,
            noise=noise,
            seed=seed,
            step=step,
            particle_offset=particle_offset,
            clamp_min=clamp_min,
            clamp_max=clamp_max,
            max_score_norm=max_score_norm,
        )
        if inplace:
            x.copy_(out)
            return x
        return out.contiguous()

    ns = backends.op_namespace(name)
    if step_tensor is not None:
        out = x if inplace else x.clone(memory_format=torch.contiguous_format)
        ns.langevin_step_counter_(
            out,
            score,
            score_cond,
            w,
            a_s,
            a_t,
            b_s,
            b_t,
            seed64,
            step_tensor,
            particle_offset,
            clamp_min,
            clamp_max,
            max_score_norm,
        )
        return out
    args = (
        score,
        score_cond,
        w,
        a_s,
        a_t,
        b_s,
        b_t,
        noise,
        seed64,
        step,
        particle_offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    )
    if inplace:
        ns.langevin_step_(x, *args)
        return x
    return ns.langevin_step(x, *args)


def langevin_step_(x: torch.Tensor, score: torch.Tensor, **kwargs) -> torch.Tensor:
    """In-place :func:`langevin_step`: writes the update into ``x`` and returns it."""
    return langevin_step(x, score, inplace=True, **kwargs)
