"""Triton kernels of langevin_step, and the ops ``scorefast_triton::langevin_step`` (out of
place) and ``scorefast_triton::langevin_step_`` (in place), with the schema of every backend.

    x_new = clamp(x + a_p·c_p·g + b_p·z),   g = s_u + w·(s_c − s_u)
    c_p = min(1, max_score_norm / ‖g_p‖) per particle (NaN when ‖g_p‖ is NaN)

Two kernels: the clip factors c_p (one float64 norm per particle, only with clipping),
then one fused pass over groups of four elements that loads x and the score(s), draws the
contract noise in registers (``noise.group_normals``) or reads an explicit noise tensor,
and stores the result. Storage float16/bfloat16/float32 computes in float32, float64 in
float64 (the contract noise is float32 normals either way).
"""

from __future__ import annotations

import math
import struct
from typing import Optional

import torch
import triton
import triton.language as tl

from ...ops import langevin as contract
from .noise import block_for, custom_op, group_normals, group_tile, launch, noise_layout, seed_halves, select4, to_acc

# Tile of the norm kernel: up to NORM_TILE elements, BLOCK_D of one particle by BLOCK_P particles.
NORM_TILE = 2048
MAX_BLOCK_D = 512

_NOISE_NONE, _NOISE_CONTRACT, _NOISE_EXPLICIT = 0, 1, 2


@triton.jit
def _guided_score(s_ptr, sc_ptr, e, mask, w, GUIDED: tl.constexpr, F64: tl.constexpr):
    """g = s_u + w (s_c - s_u) (or s) at elements e, in the compute type."""
    s = to_acc(tl.load(s_ptr + e, mask=mask, other=0.0), F64)
    if GUIDED:
        sc = to_acc(tl.load(sc_ptr + e, mask=mask, other=0.0), F64)
        s = s + to_acc(w, F64) * (sc - s)
    return s


@triton.jit
def _f64(bits):
    """A float64 kernel argument passed as its int64 bit pattern (see ``f64_bits``)."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


def f64_bits(value: float) -> int:
    """The bits of a float64 as an int64 kernel argument.

    Triton passes Python floats as float32; float64 storage needs its coefficients unrounded
    (float32 math rounds them once in the kernel, as the C++ kernels do). Bits travel the
    same way on GPUs, under torch.compile and in the interpreter.
    """
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


_F64_ARGS = ["w", "a", "b", "lo", "hi", "max_norm"]


@triton.jit(do_not_specialize=["w", "max_norm"])
def _clip_factor_kernel(
    s_ptr,
    sc_ptr,
    factor_ptr,
    P,
    D,
    w: tl.int64,
    max_norm: tl.int64,
    GUIDED: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = p < P
    w = _f64(w)
    max_norm = _f64(max_norm)
    sum_sq = tl.zeros([BLOCK_P, BLOCK_D], dtype=tl.float64)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (d < D)[None, :]
        g = _guided_score(s_ptr, sc_ptr, p[:, None] * D + d[None, :], mask, w, GUIDED, F64)
        g64 = g.to(tl.float64)  # the norm accumulates in float64 for every storage type
        sum_sq += g64 * g64
    norm = tl.sqrt(tl.sum(sum_sq, axis=1))
    # !(norm <= max) rather than norm > max: a NaN norm gives a NaN factor (the particle is
    # NaN). Unclipped particles divide by 1, so a zero norm divides nothing by zero.
    small = norm <= max_norm
    factor = tl.where(small, 1.0, max_norm / tl.where(small, 1.0, norm))
    tl.store(factor_ptr + p, to_acc(factor, F64), mask=row_ok)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"] + _F64_ARGS)
def _langevin_kernel(
    x_ptr,
    s_ptr,
    sc_ptr,
    noise_ptr,
    out_ptr,
    a_pp_ptr,
    b_pp_ptr,
    factor_ptr,
    n_groups,
    Q,
    D,
    w: tl.int64,
    a: tl.int64,
    b: tl.int64,
    lo: tl.int64,
    hi: tl.int64,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    GUIDED: tl.constexpr,
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
    w = _f64(w)
    a = _f64(a)
    b = _f64(b)
    lo = _f64(lo)
    hi = _f64(hi)
    g = _guided_score(s_ptr, sc_ptr, e, mask, w, GUIDED, F64)
    x = to_acc(tl.load(x_ptr + e, mask=mask, other=0.0), F64)

    if A_PP:
        a_p = to_acc(tl.load(a_pp_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
        if CLIP:
            a_p = a_p * to_acc(tl.load(factor_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
        v = x + a_p * g
    elif CLIP:
        a_p = to_acc(a, F64) * to_acc(tl.load(factor_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
        v = x + a_p * g
    else:
        v = x + to_acc(a, F64) * g

    if NOISE != 0:
        if NOISE == 1:
            z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
            z = to_acc(select4(k, z0, z1, z2, z3), F64)
        else:
            z = to_acc(tl.load(noise_ptr + e, mask=mask, other=0.0), F64)
        if B_PP:
            v = v + to_acc(tl.load(b_pp_ptr + p, mask=row_ok, other=0.0), F64)[:, None] * z
        else:
            v = v + to_acc(b, F64) * z

    if CLAMP:
        lo_c = to_acc(lo, F64)
        hi_c = to_acc(hi, F64)
        v = tl.where(v < lo_c, lo_c, tl.where(v > hi_c, hi_c, v))  # NaN fails both: stays NaN
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


def _check_args(x, *args, inplace: bool = False) -> None:
    contract.check_args(x, *args, inplace=inplace)


def _run(
    out,
    x,
    score,
    score_cond,
    guidance,
    step_size,
    step_pp,
    noise_scale,
    noise_pp,
    noise,
    seed,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
) -> None:
    """Write the update of contiguous x, score, ... into contiguous ``out`` (may be x)."""
    P = x.shape[0]
    if x.numel() == 0:
        return
    D = x.numel() // P
    f64 = x.dtype == torch.float64
    guided = score_cond is not None
    # b == 0 for every particle: no noise term, nothing drawn (an explicit noise is ignored).
    needs_noise = noise_pp is not None or noise_scale != 0.0
    mode = _NOISE_NONE if not needs_noise else (_NOISE_EXPLICIT if noise is not None else _NOISE_CONTRACT)
    dummy = x  # stands in for absent optional tensors; the kernels never read it

    factor = None
    if max_score_norm is not None:
        factor = torch.empty(P, dtype=torch.float64 if f64 else torch.float32, device=x.device)
        block_d = min(triton.next_power_of_2(D), MAX_BLOCK_D)
        block_p = max(1, min(NORM_TILE // block_d, triton.next_power_of_2(P)))
        launch(
            _clip_factor_kernel,
            (triton.cdiv(P, block_p),),
            x,
            score,
            score_cond if guided else dummy,
            factor,
            P,
            D,
            f64_bits(guidance),
            f64_bits(max_score_norm),
            GUIDED=guided,
            F64=f64,
            BLOCK_P=block_p,
            BLOCK_D=block_d,
        )

    layout, Q = noise_layout(D, draws=mode == _NOISE_CONTRACT)
    n_groups = P * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _langevin_kernel,
        (triton.cdiv(n_groups, block),),
        x,
        x,
        score,
        score_cond if guided else dummy,
        noise if mode == _NOISE_EXPLICIT else dummy,
        out,
        step_pp if step_pp is not None else dummy,
        noise_pp if noise_pp is not None else dummy,
        factor if factor is not None else dummy,
        n_groups,
        Q,
        D,
        f64_bits(guidance),
        f64_bits(step_size),
        f64_bits(noise_scale),
        f64_bits(-math.inf if clamp_min is None else clamp_min),
        f64_bits(math.inf if clamp_max is None else clamp_max),
        lo,
        hi,
        step,
        particle_offset,
        GUIDED=guided,
        A_PP=step_pp is not None,
        B_PP=noise_pp is not None,
        CLIP=factor is not None,
        NOISE=mode,
        CLAMP=clamp_min is not None or clamp_max is not None,
        F64=f64,
        NOISE_MODE=layout,
        BLOCK=block,
    )


def _contiguous(t):
    return None if t is None else t.contiguous()


@custom_op("scorefast_triton::langevin_step", mutates_args=())
def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    step_size: float,
    step_size_per_particle: Optional[torch.Tensor],
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
    """One Langevin update; returns a new contiguous tensor (see scorefast.langevin_step)."""
    args = (
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
    )
    _check_args(x, *args)
    x_c = x.contiguous()
    out = torch.empty_like(x_c)
    _run(
        out,
        x_c,
        score.contiguous(),
        _contiguous(score_cond),
        guidance,
        step_size,
        _contiguous(step_size_per_particle),
        noise_scale,
        _contiguous(noise_scale_per_particle),
        _contiguous(noise),
        seed,
        step,
        particle_offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    )
    return out


@custom_op("scorefast_triton::langevin_step_", mutates_args={"x"})
def langevin_step_(
    x: torch.Tensor,
    score: torch.Tensor,
    score_cond: Optional[torch.Tensor],
    guidance: float,
    step_size: float,
    step_size_per_particle: Optional[torch.Tensor],
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
    """In-place Langevin update of x (any strides)."""
    args = (
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
    )
    _check_args(x, *args, inplace=True)
    # A contiguous x is updated where it lies (each element is read, then written, by one
    # lane); otherwise the update goes to a contiguous copy that is written back.
    x_c = x if x.is_contiguous() else x.contiguous()
    _run(
        x_c,
        x_c,
        score.contiguous(),
        _contiguous(score_cond),
        guidance,
        step_size,
        _contiguous(step_size_per_particle),
        noise_scale,
        _contiguous(noise_scale_per_particle),
        _contiguous(noise),
        seed,
        step,
        particle_offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    )
    if x_c is not x:
        x.copy_(x_c)
