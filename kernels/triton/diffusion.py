"""Triton kernels of reverse_step and snr_corrector_step, and the ops
``scorefast_triton::reverse_step`` / ``reverse_step_`` / ``snr_corrector_step`` /
``snr_corrector_step_``, with the schema of every backend.

    reverse_step:        x_new = clamp(c_x·x + c_s·c_p·g + b·z),   g = s_u + w·(s_c − s_u)
    snr_corrector_step:  the same with c_x = 1, c_s = ε_p, b = sqrt(2 ε_p) per particle

Two kernels: per-particle norms (float64 ‖g_p‖², the clip factor c_p, and for the corrector
‖z_p‖² of the contract normals regenerated in registers), then one fused pass over groups
of four elements that draws the noise again (``noise.group_normals``) or reads an explicit
noise tensor. The corrector's step sizes are formed from the norms by the contract's
``corrector_coefficients`` between the two launches (float64, rounded once). Storage
float16/bfloat16/float32 computes in float32, float64 in float64.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ...ops import diffusion as contract
from .langevin import f64_bits
from .noise import (
    block_for,
    custom_op,
    group_normals,
    group_shift,
    group_tile,
    launch,
    noise_layout,
    seed_halves,
    select4,
    to_acc,
)

NORM_TILE = 2048  # groups per program of the norm kernel: BLOCK_Q of one particle by BLOCK_P
MAX_BLOCK_Q = 128

_NOISE_NONE, _NOISE_CONTRACT, _NOISE_EXPLICIT = 0, 1, 2


@triton.jit
def _f64(bits):
    """A float64 kernel argument passed as its int64 bit pattern (see ``langevin.f64_bits``)."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _guided(s_ptr, sc_ptr, e, mask, w, GUIDED: tl.constexpr, F64: tl.constexpr):
    """g = s_u + w (s_c - s_u) (or s) at elements e, in the compute type."""
    s = to_acc(tl.load(s_ptr + e, mask=mask, other=0.0), F64)
    if GUIDED:
        sc = to_acc(tl.load(sc_ptr + e, mask=mask, other=0.0), F64)
        s = s + to_acc(w, F64) * (sc - s)
    return s


@triton.jit
def _g_sq(s_ptr, sc_ptr, p, d, row_ok, D, w, GUIDED: tl.constexpr, F64: tl.constexpr):
    mask = row_ok[:, None] & (d < D)[None, :]
    g = _guided(s_ptr, sc_ptr, p[:, None] * D + d[None, :], mask, w, GUIDED, F64).to(tl.float64)
    return g * g


@triton.jit
def _z_sq(z, d, row_ok, D):
    mask = row_ok[:, None] & (d >= 0) & (d < D)  # d: [BLOCK_P, BLOCK_Q]
    z64 = tl.where(mask, z, 0.0).to(tl.float64)
    return z64 * z64


@triton.jit(do_not_specialize=["w", "max_norm", "seed_lo", "seed_hi", "step", "offset"])
def _norms_kernel(
    s_ptr,
    sc_ptr,
    g_out_ptr,
    z_out_ptr,
    P,
    D,
    Q,
    QN,
    w: tl.int64,
    max_norm: tl.int64,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    GUIDED: tl.constexpr,
    CLIP: tl.constexpr,
    WANT_Z: tl.constexpr,
    F64: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    """Per particle: ‖g_p‖² (float64), or with CLIP the factor min(1, max_norm / ‖g_p‖) in the
    compute type; with WANT_Z also ‖z_p‖² of the contract normals (float64). Tiles of groups
    of four elements: Q = ceil(D / 4) plain groups for g, QN groups laid as NOISE_MODE says
    for z (z_k of ``group_normals`` is element 4q + k - s of group q; order does not matter
    to a sum of squares)."""
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = p < P
    w = _f64(w)
    g_acc = tl.zeros([BLOCK_P, BLOCK_Q], dtype=tl.float64)
    z_acc = tl.zeros([BLOCK_P, BLOCK_Q], dtype=tl.float64)
    for q0 in range(0, Q, BLOCK_Q):
        q = q0 + tl.arange(0, BLOCK_Q)
        d = 4 * q
        g_acc += _g_sq(s_ptr, sc_ptr, p, d, row_ok, D, w, GUIDED, F64)
        g_acc += _g_sq(s_ptr, sc_ptr, p, d + 1, row_ok, D, w, GUIDED, F64)
        g_acc += _g_sq(s_ptr, sc_ptr, p, d + 2, row_ok, D, w, GUIDED, F64)
        g_acc += _g_sq(s_ptr, sc_ptr, p, d + 3, row_ok, D, w, GUIDED, F64)
    if WANT_Z:  # a loop of its own: fewer live values across Box-Muller's slow-path calls
        shift = group_shift(offset + p, D, NOISE_MODE)[:, None]
        for q0 in range(0, QN, BLOCK_Q):
            q = q0 + tl.arange(0, BLOCK_Q)
            d = 4 * q[None, :] - shift
            ids = (offset + p)[:, None] + 0 * q[None, :]
            groups = q[None, :] + 0 * p[:, None]
            z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, ids, groups, D, NOISE_MODE)
            z_acc += _z_sq(z0, d, row_ok, D) + _z_sq(z1, d + 1, row_ok, D)
            z_acc += _z_sq(z2, d + 2, row_ok, D) + _z_sq(z3, d + 3, row_ok, D)
    g_sum = tl.sum(g_acc, axis=1)
    if CLIP:
        max_norm = _f64(max_norm)
        norm = tl.sqrt(g_sum)
        # !(norm <= max): a NaN norm gives a NaN factor; unclipped particles divide by 1.
        small = norm <= max_norm
        factor = tl.where(small, 1.0, max_norm / tl.where(small, 1.0, norm))
        tl.store(g_out_ptr + p, to_acc(factor, F64), mask=row_ok)
    else:
        tl.store(g_out_ptr + p, g_sum, mask=row_ok)
    if WANT_Z:
        tl.store(z_out_ptr + p, tl.sum(z_acc, axis=1), mask=row_ok)


@triton.jit
def _per_particle(ptr, p, row_ok, scalar, PP: tl.constexpr, F64: tl.constexpr):
    if PP:
        return to_acc(tl.load(ptr + p, mask=row_ok, other=0.0), F64)[:, None]
    else:
        return to_acc(scalar, F64)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset", "w", "cx", "a", "b", "lo", "hi"])
def _reverse_kernel(
    x_ptr,
    s_ptr,
    sc_ptr,
    noise_ptr,
    out_ptr,
    cx_pp_ptr,
    a_pp_ptr,
    b_pp_ptr,
    factor_ptr,
    n_groups,
    Q,
    D,
    w: tl.int64,
    cx: tl.int64,
    a: tl.int64,
    b: tl.int64,
    lo: tl.int64,
    hi: tl.int64,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    GUIDED: tl.constexpr,
    CX_PP: tl.constexpr,
    A_PP: tl.constexpr,
    B_PP: tl.constexpr,
    CLIP: tl.constexpr,
    NOISE: tl.constexpr,
    CLAMP: tl.constexpr,
    F64: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One lane per group of four elements of a particle (noise: ``group_normals``).
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, offset, NOISE_MODE, BLOCK)
    g = _guided(s_ptr, sc_ptr, e, mask, _f64(w), GUIDED, F64)
    x = to_acc(tl.load(x_ptr + e, mask=mask, other=0.0), F64)
    c_x = _per_particle(cx_pp_ptr, p, row_ok, _f64(cx), CX_PP, F64)
    a_p = _per_particle(a_pp_ptr, p, row_ok, _f64(a), A_PP, F64)
    if CLIP:
        a_p = a_p * to_acc(tl.load(factor_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
    v = c_x * x + a_p * g
    if NOISE != 0:
        if NOISE == 1:
            z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
            z = to_acc(select4(k, z0, z1, z2, z3), F64)
        else:
            z = to_acc(tl.load(noise_ptr + e, mask=mask, other=0.0), F64)
        v = v + _per_particle(b_pp_ptr, p, row_ok, _f64(b), B_PP, F64) * z
    if CLAMP:
        lo_c = to_acc(_f64(lo), F64)
        hi_c = to_acc(_f64(hi), F64)
        v = tl.where(v < lo_c, lo_c, tl.where(v > hi_c, hi_c, v))  # NaN fails both: stays NaN
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


def _hint(n) -> int:
    """A size as a plain int for launch heuristics: a symbolic size's example value (tracing
    with dynamic shapes must not turn the block-size arithmetic into symbolic expressions)."""
    if isinstance(n, torch.SymInt):
        hint = n.node.hint
        return int(hint) if hint is not None else int(n)
    return int(n)


def _norms(score, score_cond, guidance, max_norm, want_z, seed, step, offset, P, D):
    """(g_out, z_out) of ``_norms_kernel``: the clip factors (math dtype) with ``max_norm``,
    else ‖g_p‖² (float64); ‖z_p‖² (float64) with ``want_z``, else None."""
    f64 = score.dtype == torch.float64
    clip = max_norm is not None
    g_out = torch.zeros(P, dtype=torch.float32 if clip and not f64 else torch.float64, device=score.device)
    z_out = torch.zeros(P, dtype=torch.float64, device=score.device) if want_z else None
    if P == 0:
        return g_out, z_out
    Q = (D + 3) // 4
    layout, QN = noise_layout(D, draws=want_z)  # QN >= Q: the z loop may take one more block
    block_q = min(triton.next_power_of_2(max(_hint(Q), 1)), MAX_BLOCK_Q)
    block_p = max(1, min(NORM_TILE // (4 * block_q), triton.next_power_of_2(_hint(P))))
    lo, hi = seed_halves(seed)
    launch(
        _norms_kernel,
        (triton.cdiv(P, block_p),),
        score,
        score,
        score_cond if score_cond is not None else score,
        g_out,
        z_out if want_z else g_out,
        P,
        D,
        Q,
        QN,
        f64_bits(guidance),
        f64_bits(max_norm if clip else 1.0),
        lo,
        hi,
        step,
        offset,
        GUIDED=score_cond is not None,
        CLIP=clip,
        WANT_Z=want_z,
        F64=f64,
        NOISE_MODE=layout,
        BLOCK_P=block_p,
        BLOCK_Q=block_q,
    )
    return g_out, z_out


def _run(out, x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm):
    """Write the step of contiguous x, score, ... into contiguous ``out`` (may be x)."""
    P = x.shape[0]
    if x.numel() == 0:
        return
    D = x.numel() // P
    # b == 0 for every particle: no noise term, nothing drawn (an explicit noise is ignored).
    needs_noise = b_pp is not None or b != 0.0
    mode = _NOISE_NONE if not needs_noise else (_NOISE_EXPLICIT if noise is not None else _NOISE_CONTRACT)
    factor = None
    if max_norm is not None:
        factor, _ = _norms(score, score_cond, w, max_norm, False, seed, step, offset, P, D)
    layout, Q = noise_layout(D, draws=mode == _NOISE_CONTRACT)
    n_groups = P * Q
    seed_lo, seed_hi = seed_halves(seed)
    block = block_for(_hint(n_groups))
    dummy = x  # stands in for absent optional tensors; the kernels never read it
    opt = lambda t: dummy if t is None else t  # noqa: E731
    launch(
        _reverse_kernel,
        (triton.cdiv(n_groups, block),),
        x,
        x,
        score,
        opt(score_cond),
        noise if mode == _NOISE_EXPLICIT else dummy,
        out,
        opt(cx_pp),
        opt(a_pp),
        opt(b_pp),
        opt(factor),
        n_groups,
        Q,
        D,
        f64_bits(w),
        f64_bits(cx),
        f64_bits(a),
        f64_bits(b),
        f64_bits(-math.inf if lo is None else lo),
        f64_bits(math.inf if hi is None else hi),
        seed_lo,
        seed_hi,
        step,
        offset,
        GUIDED=score_cond is not None,
        CX_PP=cx_pp is not None,
        A_PP=a_pp is not None,
        B_PP=b_pp is not None,
        CLIP=factor is not None,
        NOISE=mode,
        CLAMP=lo is not None or hi is not None,
        F64=x.dtype == torch.float64,
        NOISE_MODE=layout,
        BLOCK=block,
    )


def _contiguous(t):
    return None if t is None else t.contiguous()


def _reverse(out, x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm):
    _run(
        out, x, score.contiguous(), _contiguous(score_cond), w, cx, _contiguous(cx_pp), a, _contiguous(a_pp), b,
        _contiguous(b_pp), _contiguous(noise), seed, step, offset, lo, hi, max_norm,
    )  # fmt: skip


@custom_op("scorefast_triton::reverse_step", mutates_args=())
def reverse_step(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    x_coef: float,
    x_coef_per_particle: Optional[torch.Tensor],
    score_coef: float,
    score_coef_per_particle: Optional[torch.Tensor],
    noise_scale: float,
    noise_scale_per_particle: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    seed: int,
    step: int,
    particle_offset: int,
    clamp_min: Optional[float],
    clamp_max: Optional[float],
    max_score_norm: Optional[float],
) -> torch.Tensor:
    """One reverse step; returns a new contiguous tensor (see scorefast.reverse_step)."""
    args = (
        score, score_cond, guidance, x_coef, x_coef_per_particle, score_coef, score_coef_per_particle, noise_scale,
        noise_scale_per_particle, noise,
    )  # fmt: skip
    contract.check_args(x, *args, step, particle_offset, clamp_min, clamp_max, max_score_norm)
    x_c = x.contiguous()
    out = torch.empty_like(x_c)
    _reverse(out, x_c, *args, seed, step, particle_offset, clamp_min, clamp_max, max_score_norm)
    return out


@custom_op("scorefast_triton::reverse_step_", mutates_args={"x"})
def reverse_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    x_coef: float,
    x_coef_per_particle: Optional[torch.Tensor],
    score_coef: float,
    score_coef_per_particle: Optional[torch.Tensor],
    noise_scale: float,
    noise_scale_per_particle: Optional[torch.Tensor],
    noise: Optional[torch.Tensor],
    seed: int,
    step: int,
    particle_offset: int,
    clamp_min: Optional[float],
    clamp_max: Optional[float],
    max_score_norm: Optional[float],
) -> None:
    """In-place reverse step of x (any strides)."""
    args = (
        score, score_cond, guidance, x_coef, x_coef_per_particle, score_coef, score_coef_per_particle, noise_scale,
        noise_scale_per_particle, noise,
    )  # fmt: skip
    contract.check_args(x, *args, step, particle_offset, clamp_min, clamp_max, max_score_norm, inplace=True)
    # A contiguous x is updated where it lies (each element is read, then written, by one lane).
    x_c = x if x.is_contiguous() else x.contiguous()
    _reverse(x_c, x_c, *args, seed, step, particle_offset, clamp_min, clamp_max, max_score_norm)
    if x_c is not x:
        x.copy_(x_c)


def _corrector(out, x, score, score_cond, guidance, snr, batch_mean, seed, step, offset, lo, hi) -> torch.Tensor:
    """The corrector of contiguous x into contiguous ``out`` (may be x); returns the step sizes."""
    P = x.shape[0]
    D = x.numel() // P if P else 0
    score = score.contiguous()
    score_cond = _contiguous(score_cond)
    g_sq, z_sq = _norms(score, score_cond, guidance, None, True, seed, step, offset, P, D)
    eps, b = contract.corrector_coefficients(g_sq, z_sq, snr, batch_mean, contract.acc_dtype(x.dtype))
    _run(out, x, score, score_cond, guidance, 1.0, None, 0.0, eps, 0.0, b, None, seed, step, offset, lo, hi, None)
    return eps


@custom_op("scorefast_triton::snr_corrector_step", mutates_args=())
def snr_corrector_step(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    snr: float,
    batch_mean: bool,
    seed: int,
    step: int,
    particle_offset: int,
    clamp_min: Optional[float],
    clamp_max: Optional[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SNR Langevin corrector; returns (a new contiguous tensor, the step sizes [P])."""
    contract.check_corrector_args(x, score, score_cond, guidance, snr, step, particle_offset, clamp_min, clamp_max)
    x_c = x.contiguous()
    out = torch.empty_like(x_c)
    eps = _corrector(
        out, x_c, score, score_cond, guidance, snr, batch_mean, seed, step, particle_offset, clamp_min, clamp_max
    )
    return out, eps


@custom_op("scorefast_triton::snr_corrector_step_", mutates_args={"x"})
def snr_corrector_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    snr: float,
    batch_mean: bool,
    seed: int,
    step: int,
    particle_offset: int,
    clamp_min: Optional[float],
    clamp_max: Optional[float],
) -> torch.Tensor:
    """The SNR Langevin corrector in place into x (any strides); returns the step sizes [P]."""
    contract.check_corrector_args(
        x, score, score_cond, guidance, snr, step, particle_offset, clamp_min, clamp_max, inplace=True
    )
    x_c = x if x.is_contiguous() else x.contiguous()
    eps = _corrector(
        x_c, x_c, score, score_cond, guidance, snr, batch_mean, seed, step, particle_offset, clamp_min, clamp_max
    )
    if x_c is not x:
        x.copy_(x_c)
    return eps
