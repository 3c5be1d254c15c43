"""Error budgets of the reverse-diffusion ops (reverse_step, snr_corrector_step) against their
float64 references, built from the same terms as ``budgets.langevin_tolerance``: u of the
compute dtype times the magnitude of each term, the noise contract's tolerance, one storage ulp.
"""

from __future__ import annotations

import math

import torch

from .budgets import MAX_RADIUS, NOISE_REL_TOL, U64, contract_radius, storage_rounding, unit_roundoff


def _flat(t: torch.Tensor, P: int) -> torch.Tensor:
    return t.detach().cpu().reshape(P, -1).double()


def _per_particle(v, P: int):
    return v.detach().cpu().double().abs().reshape(P, 1) if isinstance(v, torch.Tensor) else abs(float(v))


def _score_magnitude(score, score_cond, guidance, P: int) -> torch.Tensor:
    """|g| bound per element: |s|, or |s| + |w| (|s| + |s_c|) with guidance."""
    s = _flat(score, P).abs()
    return s if score_cond is None else s + abs(guidance) * (s + _flat(score_cond, P).abs())


def reverse_step_tolerance(
    x, score, score_cond, guidance, x_coef, score_coef, noise_scale, ref, dtype, noise_from_contract: bool
) -> torch.Tensor:
    """Elementwise bound on |kernel - reference(float64)| for reverse_step, float64 of x's shape.

    Coefficients are floats or (P,) tensors. The few roundings of g = s + w (s_c - s) and
    c_x x + c_s g + b z are each <= u * (magnitude of the terms): 8 u (|c_x||x| + |c_s||g| + |b| r_max);
    contract noise adds |b| * the noise tolerance; 16-bit or float32 storage adds one ulp.
    """
    P = x.shape[0]
    cx, cs, b = (_per_particle(v, P) for v in (x_coef, score_coef, noise_scale))
    mag = cx * _flat(x, P).abs() + cs * _score_magnitude(score, score_cond, guidance, P) + b * MAX_RADIUS
    tol = 8 * unit_roundoff(dtype) * mag
    if noise_from_contract:
        tol = tol + b * NOISE_REL_TOL * MAX_RADIUS
    return (tol + storage_rounding(_flat(ref, P), dtype)).reshape(x.shape)


def corrector_tolerance(
    x, score, score_cond, guidance, batch_mean: bool, seed, step, particle_offset, ref_out, ref_eps, dtype, noise=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bound on |x_new - ref| of x's shape, bound on |ε - ref ε| of shape (P,)) for snr_corrector_step.

    ε = 2 (snr ‖z‖/‖g‖)²: its relative error is twice those of the norms plus its rounding to the
    compute dtype. ‖z‖ differs by at most the noise tolerance's norm (the kernels' normals are
    within r·NOISE_REL_TOL of the reference's), ‖g‖ by the rounding of g (2u |g| per element
    with guidance, none without) and of the float64 sums (D u64). With the batch means the
    relative errors of the means are bounded by the sums of the errors over the sums of the norms.
    The step then adds |δε||g| + |δb||z|, b = sqrt(2 ε), to the bound of reverse_step.

    ``noise``: the explicit z of the call (the reference given it in float64). It is exact in the
    compute dtype unless it is float64 and the math float32 (then u |z| per element, in its norm
    and in the step); reverse_step's bound counts |z| up to r_max, the rest is added here.
    """
    P = x.shape[0]
    D = math.prod(x.shape[1:])
    u = unit_roundoff(dtype)
    g_mag = _score_magnitude(score, score_cond, guidance, P)
    g = _flat(score, P) if score_cond is None else _flat(score, P) + guidance * (_flat(score_cond, P) - _flat(score, P))
    rounds = noise is not None and noise.dtype == torch.float64 and dtype != torch.float64
    if noise is None:
        from ..ops.noise import normal_ref

        r = contract_radius(P, D, seed % 2**64, step, particle_offset)
        z_norm = torch.linalg.vector_norm(normal_ref(P, D, seed % 2**64, step, particle_offset).double(), dim=1)
        z_mag = MAX_RADIUS
        dz = NOISE_REL_TOL * torch.linalg.vector_norm(r, dim=1) + 4 * D * U64 * z_norm
    else:
        z_mag = _flat(noise, P).abs()
        z_norm = torch.linalg.vector_norm(z_mag, dim=1)
        dz = (u if rounds else 0.0) * z_norm + 4 * D * U64 * z_norm
    g_norm = torch.linalg.vector_norm(g, dim=1)
    dg = (0.0 if score_cond is None else 2 * u * torch.linalg.vector_norm(g_mag, dim=1)) + 4 * D * U64 * g_norm
    if batch_mean:
        rel = 2 * (dz.sum() / z_norm.sum() + dg.sum() / g_norm.sum())
        rel = rel.expand(P)
    else:
        rel = 2 * (dz / z_norm + dg / g_norm)
    eps = ref_eps.detach().cpu().double().abs()
    d_eps = eps * (rel + 2 * u)
    b = torch.sqrt(2 * eps)
    d_b = b * (rel / 2 + 2 * u)
    step_tol = reverse_step_tolerance(x, score, score_cond, guidance, 1.0, eps, b, ref_out, dtype, noise is None)
    extra = d_eps[:, None] * g_mag + d_b[:, None] * z_mag
    if noise is not None:
        b_col = b[:, None]
        extra = extra + 8 * u * b_col * (z_mag - MAX_RADIUS).clamp(min=0) + (u if rounds else 0.0) * b_col * z_mag
    return step_tol + extra.reshape(x.shape), d_eps
