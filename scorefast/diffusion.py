"""Fused reverse-diffusion steps on every backend, one op call from the model output.

    reverse_step:        x_new = clamp(c_x·x + c_s·c·g + b·z),   g = g_u + w·(g_c − g_u)
                         c = min(1, max_score_norm / ‖g_p‖) per particle (1 without clipping)
    snr_corrector_step:  x_new = clamp(x + ε_p·g + sqrt(2 ε_p)·z),  ε_p = 2 (snr ‖z_p‖ / ‖g_p‖)²
                         (or from the batch means of the norms, as score_sde and diffusers)

z is the noise contract's normals for (seed, step, particle), or an explicit ``noise``. With
the coefficients of a schedule, one call is

    DDPM ancestral   c_x = 1/sqrt(α_t), c_s = −β_t / (sqrt(α_t) sqrt(1 − ᾱ_t)), b = σ_t   (g = ε̂)
    DDIM (eta)       c_x = sqrt(ᾱ_prev/ᾱ_t),
                     c_s = sqrt(1 − ᾱ_prev − σ_t²) − sqrt(ᾱ_prev (1 − ᾱ_t) / ᾱ_t), b = σ_t   (g = ε̂)
    VE reverse SDE   c_x = 1, c_s = σ_t² − σ_prev², b = sqrt(σ_t² − σ_prev²)            (g = score)
    VP reverse SDE   c_x = 1 + β_t Δt / 2, c_s = β_t Δt, b = sqrt(β_t Δt)                (g = score)

and the Langevin corrector of predictor-corrector sampling is ``snr_corrector_step``.

The ops ``<ns>::reverse_step`` / ``reverse_step_`` and ``<ns>::snr_corrector_step`` /
``snr_corrector_step_`` are defined, with their fake kernels and autograd, by their contract
``scorefast.ops.diffusion``; this module holds the public functions that check arguments and
pick the backend.
"""

from __future__ import annotations

import math

import torch

from . import _checks
from . import backend_registry as backends
from .noise import resolve_seed
from .ops._common import acc_dtype, overlap_message, partially_overlaps
from .ops.diffusion import corrector_step_sizes, reverse_step_ref, snr_corrector_step_ref


def _coefficient(value, x: torch.Tensor, name: str, *, signed: bool):
    """(scalar, per-particle tensor or None) for a coefficient given as a number or a [P] tensor;
    ``signed``: any finite value, else finite and >= 0."""
    if isinstance(value, torch.Tensor):
        if signed:
            _checks.check_per_particle(value, x, name, check_values=False)
            if value.device.type == "cpu" and value.numel() and not torch.compiler.is_compiling():
                bad = ~torch.isfinite(value.detach())
                if bool(bad.any()):
                    i = int(bad.nonzero()[0, 0])
                    raise ValueError(f"{name} must be finite for every particle, got {value[i].item()} at particle {i}")
        else:
            _checks.check_per_particle(value, x, name)
        return 0.0, value.to(acc_dtype(x.dtype)).contiguous()
    scalar = _checks.check_real(value, name, minimum=None if signed else 0.0)
    return _checks.check_in_math_range(scalar, x, name), None


def _scores(x, score, score_cond, guidance):
    """score and score_cond in x's dtype, and the guidance weight w."""
    _checks.check_like(x, score, "score")
    if score.dtype != x.dtype:
        score = score.to(x.dtype)
    if score_cond is None:
        if guidance is not None:
            raise ValueError("guidance needs score_cond (classifier-free guidance mixes score and score_cond)")
        return score, None, 1.0
    _checks.check_like(x, score_cond, "score_cond")
    if score_cond.dtype != x.dtype:
        score_cond = score_cond.to(x.dtype)
    return score, score_cond, _checks.check_real(1.0 if guidance is None else guidance, "guidance")


def _clamp(clamp):
    if clamp is None:
        return None, None
    if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be a (min, max) pair (None for an open end), got {clamp!r}")
    lo, hi = clamp
    lo = None if lo is None else _checks.check_real(lo, "clamp min")
    hi = None if hi is None else _checks.check_real(hi, "clamp max")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"clamp min ({lo}) must be <= clamp max ({hi})")
    return lo, hi


def _check_inplace(x, inputs, name):
    """As PyTorch's in-place ops: an input sharing part of x's memory is an error, and the
    in-place form does not track gradients."""
    for t, arg in inputs:
        if t is not None and partially_overlaps(x, t):
            raise ValueError(overlap_message(arg))
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t, _ in ((x, "x"), *inputs)):
        raise RuntimeError(f"{name}(inplace=True) does not track gradients; use inplace=False or torch.no_grad()")


def reverse_step(
    x: torch.Tensor,
    score: torch.Tensor,
    *,
    score_coef,
    x_coef=1.0,
    noise_scale=0.0,
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
    """One fused reverse-diffusion step ``c_x·x + c_s·g + b·z`` with in-kernel noise.

    Args:
        x: particles x_t, shape (P, ...): dim 0 indexes particles, the rest (D elements) is
            one particle. float32, float64, float16 or bfloat16; math in float32 (float64 for
            float64). Any strides.
        score: the model output g the step is written in (a score, or a noise prediction ε̂
            with a negative ``score_coef``), shape of x. With ``score_cond`` it is the
            unconditional output g_u. Cast to x's dtype if it differs.
        score_coef: c_s, any finite float or a (P,) tensor (one per particle).
        x_coef: c_x, any finite float or a (P,) tensor. Default 1.
        noise_scale: b >= 0, a float or a (P,) tensor. Default 0: a deterministic step that
            draws no noise (DDIM with eta = 0).
        score_cond: conditional output g_c, shape of x, for classifier-free guidance: the
            step uses g = g_u + w·(g_c − g_u).
        guidance: w, the guidance weight (default 1.0; needs ``score_cond``).
        noise: explicit standard-normal noise, shape of x, any float dtype. Excludes ``seed``.
        seed: 64-bit key of the counter-based noise, in [0, 2^64). Default: drawn from torch's
            global generator (so ``torch.manual_seed`` applies).
        step: sampler step t, in [0, 2^32): a different t gives independent noise. A changing
            Python int does not recompile a ``torch.compile``d loop.
        particle_offset: global id of particle 0 (sharding particles across calls or devices).
        clamp: (min, max) applied to the result; either end may be None. NaN stays NaN.
        max_score_norm: per-particle clipping g ← g·min(1, max_score_norm/‖g_p‖₂).
        inplace: write the result into x and return x.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba'.

    Returns:
        x_{t-1}, shape and dtype of x (contiguous), or x itself when inplace.

    Gradients flow to x, score, score_cond and an explicit noise (not through clipping, and
    not to per-particle coefficients); the in-place form does not track gradients.
    """
    _checks.check_float_tensor(x, "x")
    score, score_cond, w = _scores(x, score, score_cond, guidance)
    c_s, c_s_t = _coefficient(score_coef, x, "score_coef", signed=True)
    c_x, c_x_t = _coefficient(x_coef, x, "x_coef", signed=True)
    b_s, b_t = _coefficient(noise_scale, x, "noise_scale", signed=False)
    if noise is not None:
        _checks.check_like(x, noise, "noise")
    seed64, seed = resolve_seed(seed, noise)
    step, particle_offset = _checks.check_counter(step, particle_offset, x.shape[0], _checks.elements_per_particle(x))
    clamp_min, clamp_max = _clamp(clamp)
    if max_score_norm is not None:
        max_score_norm = _checks.check_real(max_score_norm, "max_score_norm", positive=True)
    if inplace:
        inputs = (
            (score, "score"),
            (score_cond, "score_cond"),
            (noise, "noise"),
            (c_x_t, "x_coef"),
            (c_s_t, "score_coef"),
            (b_t, "noise_scale"),
        )
        _check_inplace(x, inputs, "reverse_step")

    name = backends.resolve(backend, x.device, "reverse_step")
    if name == "reference":
        out = reverse_step_ref(
            x,
            score,
            score_coef=c_s_t if c_s_t is not None else c_s,
            x_coef=c_x_t if c_x_t is not None else c_x,
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
    args = (
        score,
        score_cond,
        w,
        c_x,
        c_x_t,
        c_s,
        c_s_t,
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
        ns.reverse_step_(x, *args)
        return x
    return ns.reverse_step(x, *args)


def reverse_step_(x: torch.Tensor, score: torch.Tensor, **kwargs) -> torch.Tensor:
    """In-place :func:`reverse_step`: writes the step into ``x`` and returns it."""
    return reverse_step(x, score, inplace=True, **kwargs)


def snr_corrector_step(
    x: torch.Tensor,
    score: torch.Tensor,
    *,
    snr: float,
    batch_mean: bool = False,
    score_cond: torch.Tensor | None = None,
    guidance: float | None = None,
    noise: torch.Tensor | None = None,
    seed: int | None = None,
    step: int = 0,
    particle_offset: int = 0,
    clamp: tuple[float | None, float | None] | None = None,
    inplace: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Langevin corrector step with the signal-to-noise step size, in one fused op.

        x_new = clamp(x + ε_p·g + sqrt(2 ε_p)·z),   ε_p = 2 (snr ‖z_p‖ / ‖g_p‖)²

    z is the noise contract's normals, drawn twice in the kernels (once for its norm, once for
    the update) and never stored. By default each particle's step size uses its own norms;
    ``batch_mean=True`` uses the means of ‖z_p‖ and ‖g_p‖ over the P particles of this call,
    one ε for all (score_sde's and diffusers' ``ScoreSdeVeScheduler.step_correct``). The norms
    accumulate in float64; ε and sqrt(2 ε) are computed in float64 and rounded to x's math
    dtype. The per-sample rule is one kernel per call (the norms of a particle, then its step);
    on GPUs the batch-mean rule takes three launches (the norms of every particle, one block
    for the means, then the step), since the means need every particle first. A particle whose ‖g_p‖ is 0 gets
    ε = inf (its result is not finite); a NaN score gives NaN.

    Args:
        x: particles, shape (P, ...), float32, float64, float16 or bfloat16, any strides.
        score: s(x), shape of x (the unconditional score with ``score_cond``).
        snr: the signal-to-noise ratio r >= 0 (finite).
        batch_mean: ε from the batch means of the norms instead of each particle's own.
        score_cond, guidance: classifier-free guidance, g = s_u + w·(s_c − s_u).
        noise: explicit standard-normal noise z, shape of x, any float dtype (e.g. drawn with
            a torch.Generator), taken in x's math dtype for both its norm and the step.
            Excludes ``seed``. The kernels draw only the contract's noise, so with ``noise``
            the norms are torch reductions and the step one fused :func:`reverse_step`.
        seed, step, particle_offset: the counter-based noise, as in :func:`reverse_step`.
            With ``batch_mean``, particles sharded across calls average over their own call.
        clamp: (min, max) applied to the result; either end may be None.
        inplace: write the result into x (then the first element returned is x).
        backend: 'auto', 'reference', 'cpp', 'cuda', 'triton' or 'numba'.

    Returns:
        (x_new, step_size): x_new of x's shape and dtype (contiguous, or x when inplace) and the
        step sizes ε used, shape (P,), float64 for float64 x, else float32.

    Gradients flow to x (the identity where not clamped); not to the score (ε depends on its
    norm). The in-place form does not track gradients.
    """
    _checks.check_float_tensor(x, "x")
    score, score_cond, w = _scores(x, score, score_cond, guidance)
    snr = _checks.check_real(snr, "snr", minimum=0.0)
    if not isinstance(batch_mean, bool):
        raise TypeError(f"batch_mean must be a bool, got {type(batch_mean).__name__}")
    if noise is not None:
        _checks.check_like(x, noise, "noise")
    seed64, seed = resolve_seed(seed, noise)
    step, particle_offset = _checks.check_counter(step, particle_offset, x.shape[0], _checks.elements_per_particle(x))
    clamp_min, clamp_max = _clamp(clamp)
    if inplace:
        _check_inplace(x, ((score, "score"), (score_cond, "score_cond"), (noise, "noise")), "snr_corrector_step")

    name = backends.resolve(backend, x.device, "snr_corrector_step")
    if noise is not None and name != "reference":
        return _corrector_with_noise(
            x, score, score_cond, w, snr, batch_mean, noise, (clamp_min, clamp_max), inplace, name
        )
    if name == "reference":
        out, eps = snr_corrector_step_ref(
            x,
            score,
            snr=snr,
            batch_mean=batch_mean,
            score_cond=score_cond,
            guidance=w,
            noise=noise,
            seed=seed,
            step=step,
            particle_offset=particle_offset,
            clamp_min=clamp_min,
            clamp_max=clamp_max,
        )
        if inplace:
            x.copy_(out)
            return x, eps
        return out.contiguous(), eps
    ns = backends.op_namespace(name)
    args = (score, score_cond, w, snr, batch_mean, seed64, step, particle_offset, clamp_min, clamp_max)
    if inplace:
        return x, ns.snr_corrector_step_(x, *args)
    return ns.snr_corrector_step(x, *args)


class _NoGradThroughNorms(torch.autograd.Function):
    """The identity on x_new that refuses gradients to the score and an explicit noise, as the
    corrector op's autograd refuses the score's (ε depends on their norms)."""

    @staticmethod
    def forward(ctx, out, *inputs):
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        if any(ctx.needs_input_grad[1:]):
            raise RuntimeError(
                "snr_corrector_step: gradients with respect to the score or the noise are not supported "
                "(the step size depends on their norms)"
            )
        return (grad,) + (None,) * (len(ctx.needs_input_grad) - 1)


def _corrector_with_noise(x, score, score_cond, w, snr, batch_mean, noise, clamp, inplace, backend):
    """snr_corrector_step with an explicit z: ε from torch's float64 norms (as the reference
    forms them), then the backend's fused reverse_step op (called directly: ε is inf or NaN
    where the score's norm is 0 or NaN, which the public function's checks refuse). Gradients
    flow to x only, as in the kernels."""
    cd = acc_dtype(x.dtype)
    P, D = x.shape[0], math.prod(x.shape[1:])
    with torch.no_grad():
        z = noise.reshape(P, D).to(cd)
        _, eps, b = corrector_step_sizes(score, score_cond, w, z, snr, batch_mean, cd)
    cond = None if score_cond is None else score_cond.detach()
    # (score, score_cond, w, c_x, c_x per particle, c_s, c_s per particle, b, b per particle,
    # noise, seed, step, particle_offset, clamp_min, clamp_max, max_score_norm)
    args = (score.detach(), cond, w, 1.0, None, 0.0, eps, 0.0, b, noise.detach(), 0, 0, 0, *clamp, None)
    ns = backends.op_namespace(backend)
    if inplace:
        ns.reverse_step_(x, *args)
        return x, eps
    out = ns.reverse_step(x, *args)
    others = [t for t in (score, score_cond, noise) if t is not None and t.requires_grad]
    if others and torch.is_grad_enabled():
        out = _NoGradThroughNorms.apply(out, *others)
    return out, eps


def snr_corrector_step_(x: torch.Tensor, score: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """In-place :func:`snr_corrector_step`: updates ``x`` and returns (x, step_size)."""
    return snr_corrector_step(x, score, inplace=True, **kwargs)
