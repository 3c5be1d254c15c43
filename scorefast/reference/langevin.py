"""Reference of langevin_step: the definition every backend is tested against."""

from __future__ import annotations

import torch

from .noise import normal_ref


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
    flat = lambda t: t.reshape(P, -1).to(compute_dtype)  # noqa: E731
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
        out = torch.clamp(out, clamp_min, clamp_max)
    return out.to(x.dtype).reshape(x.shape)
