"""Triton kernels of the diffusion forward process and loss, and the ops
``scorefast_triton::dsm_vp_perturb``, ``dsm_vp_loss`` and ``dsm_vp_loss_backward`` (the schemas
of scorefast.ops.dsm_vp; the int arguments are inferred as SymInt from the annotations).

    perturb:  x_t = alpha_b x + sigma_b z
    loss:     l_b = w_b sum_d (pred - a_b z - c_b x)^2      (no c x term without x)
    backward: g_b (2 w_b) (pred - a_b z - c_b x)

z is the noise contract's normals for (seed, step, particle_offset + b), drawn in registers
(``noise.group_normals``) by every kernel, never stored. The launch layout is that of the
DSM kernels (kernels/triton/dsm.py): perturb and backward are elementwise passes over groups
of four elements; the loss walks each sample's groups in BLOCK-sized chunks, a sample possibly
split over several programs whose partial sums a second kernel adds. Storage float16/bfloat16/float32
computes and accumulates in float32 (a tree reduction, tl.sum), float64 in float64; the
float64 weight w_b multiplies the sum in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...ops import dsm_vp as contract
from ...ops._common import acc_dtype
from .dsm import FINISH_TILE, LOSS_GROUPS, _loss_split
from .noise import (
    NOISE_GENERAL,
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


@triton.jit
def _residual(pred, z, x, a, c, HAS_X: tl.constexpr):
    """pred - a z - c x (no c x term without x), each product rounded before the subtraction."""
    r = pred - a * z
    if HAS_X:
        r = r - c * x
    return r


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _vp_perturb_kernel(
    x_ptr,
    alpha_ptr,
    sigma_ptr,
    out_ptr,
    n_groups,
    Q,
    D,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    F64: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One lane per group of four elements of a particle (noise: ``group_normals``).
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, offset, NOISE_MODE, BLOCK)
    al = to_acc(tl.load(alpha_ptr + p, mask=row_ok, other=1.0), F64)
    sig = to_acc(tl.load(sigma_ptr + p, mask=row_ok, other=1.0), F64)
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
    z = to_acc(select4(k, z0, z1, z2, z3), F64)
    x = to_acc(tl.load(x_ptr + e, mask=mask, other=0.0), F64)
    v = al[:, None] * x + sig[:, None] * z
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset", "chunks_per_split"])
def _vp_loss_kernel(
    pred_ptr,
    x_ptr,
    a_ptr,
    c_ptr,
    weight_ptr,
    out_ptr,
    D,
    Q,
    chunks_per_split,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    HAS_X: tl.constexpr,
    F64: tl.constexpr,
    FINAL: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # Program (b, s): groups [s * chunks_per_split * BLOCK, (s + 1) * chunks_per_split * BLOCK)
    # of sample b. FINAL (one program per sample): the weighted loss into out[b]; otherwise
    # the partial sum of squares into out[b, s] (out is [B, num_programs(1)]).
    b = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    a = to_acc(tl.load(a_ptr + b), F64)
    c = to_acc(tl.load(c_ptr + b), F64)
    k = tl.arange(0, 4)
    lanes = tl.arange(0, BLOCK).to(tl.int64)
    base = b * D  # int64: B * D may exceed 2^31
    q_begin = s * chunks_per_split * BLOCK
    shift = group_shift(offset + b, D, NOISE_MODE)  # group q holds elements 4q + k - shift
    if F64:
        acc = tl.zeros([BLOCK, 4], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK, 4], dtype=tl.float32)
    for i in range(0, chunks_per_split):
        q = q_begin + i * BLOCK + lanes
        d = q[:, None] * 4 + k[None, :]
        if NOISE_MODE == NOISE_GENERAL:
            d = d - shift
            mask = (d >= 0) & (d < D)
        else:
            mask = d < D
        z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, (offset + b) + q * 0, q, D, NOISE_MODE)
        z = to_acc(select4(k, z0, z1, z2, z3), F64)
        pred = to_acc(tl.load(pred_ptr + base + d, mask=mask, other=0.0), F64)
        x = pred
        if HAS_X:
            x = to_acc(tl.load(x_ptr + base + d, mask=mask, other=0.0), F64)
        r = tl.where(mask, _residual(pred, z, x, a, c, HAS_X), 0.0)
        acc += r * r  # a NaN input makes its sample's sum NaN, and only that one
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    if FINAL:
        loss = total.to(tl.float64) * tl.load(weight_ptr + b)
        tl.store(out_ptr + b, to_acc(loss, F64))
    else:
        tl.store(out_ptr + b * tl.num_programs(1) + s, total)


@triton.jit
def _vp_loss_finish_kernel(
    partial_ptr,
    weight_ptr,
    out_ptr,
    B,
    S,
    F64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # out[b] = (sum_s partial[b, s]) * w_b.
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    j = tl.arange(0, BLOCK_S)
    row_ok = b < B
    mask = row_ok[:, None] & (j < S)[None, :]
    part = tl.load(partial_ptr + b[:, None] * S + j[None, :], mask=mask, other=0.0)
    loss = tl.sum(part, axis=1).to(tl.float64) * tl.load(weight_ptr + b, mask=row_ok, other=1.0)
    tl.store(out_ptr + b, to_acc(loss, F64), mask=row_ok)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _vp_backward_kernel(
    pred_ptr,
    x_ptr,
    a_ptr,
    c_ptr,
    weight2_ptr,
    g_ptr,
    out_ptr,
    n_groups,
    Q,
    D,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    HAS_X: tl.constexpr,
    F64: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, offset, NOISE_MODE, BLOCK)
    g = to_acc(tl.load(g_ptr + p, mask=row_ok, other=0.0), F64)
    # g_b times 2 w_b rounded to the compute type, as the C++ kernels
    scale = g * to_acc(tl.load(weight2_ptr + p, mask=row_ok, other=0.0), F64)
    a = to_acc(tl.load(a_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
    c = to_acc(tl.load(c_ptr + p, mask=row_ok, other=0.0), F64)[:, None]
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
    z = to_acc(select4(k, z0, z1, z2, z3), F64)
    pred = to_acc(tl.load(pred_ptr + e, mask=mask, other=0.0), F64)
    x = pred
    if HAS_X:
        x = to_acc(tl.load(x_ptr + e, mask=mask, other=0.0), F64)
    v = scale[:, None] * _residual(pred, z, x, a, c, HAS_X)
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# ops


def _shape(t: torch.Tensor) -> tuple[int, int]:
    B = t.shape[0]
    return B, (t.numel() // B if B else 0)


@custom_op("scorefast_triton::dsm_vp_perturb", mutates_args=())
def dsm_vp_perturb(
    x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, seed: int, step: int, particle_offset: int
) -> torch.Tensor:
    """alpha_b x + sigma_b z as a new contiguous tensor of x's dtype (see scorefast.dsm_vp_perturb)."""
    contract.check_perturb_args(x, alpha, sigma, step, particle_offset)
    x_c = x.contiguous()
    B, D = _shape(x)
    out = torch.empty_like(x_c)
    if B * D == 0:
        return out
    mode, Q = noise_layout(D)
    n_groups = B * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _vp_perturb_kernel,
        (triton.cdiv(n_groups, block),),
        x_c,
        x_c,
        alpha.contiguous(),
        sigma.contiguous(),
        out,
        n_groups,
        Q,
        D,
        lo,
        hi,
        step,
        particle_offset,
        F64=x_c.dtype == torch.float64,
        NOISE_MODE=mode,
        BLOCK=block,
    )
    return out


@custom_op("scorefast_triton::dsm_vp_loss", mutates_args=())
def dsm_vp_loss(
    pred: torch.Tensor,
    x: torch.Tensor | None,
    a: torch.Tensor,
    c: torch.Tensor,
    weight: torch.Tensor,
    seed: int,
    step: int,
    particle_offset: int,
) -> torch.Tensor:
    """Per-sample losses [B], float32 (float64 for float64 pred) (see scorefast.dsm_vp_loss)."""
    contract.check_loss_args(pred, x, a, c, weight, step, particle_offset)
    B, D = _shape(pred)
    acc = acc_dtype(pred.dtype)
    if D == 0:
        return torch.zeros(B, dtype=acc, device=pred.device)
    pred_c = pred.contiguous()
    x_c = pred_c if x is None else x.contiguous()
    a_c, c_c, w_c = a.contiguous(), c.contiguous(), weight.contiguous()
    out = torch.empty(B, dtype=acc, device=pred.device)
    f64 = pred.dtype == torch.float64
    mode, Q = noise_layout(D)
    block = max(1, min(LOSS_GROUPS, triton.next_power_of_2(Q)))
    splits, per = _loss_split(B, triton.cdiv(Q, block))
    lo, hi = seed_halves(seed)
    target = out if splits == 1 else torch.empty(B, splits, dtype=acc, device=pred.device)
    launch(
        _vp_loss_kernel,
        (B, splits),
        pred_c,
        pred_c,
        x_c,
        a_c,
        c_c,
        w_c,
        target,
        D,
        Q,
        per,
        lo,
        hi,
        step,
        particle_offset,
        HAS_X=x is not None,
        F64=f64,
        FINAL=splits == 1,
        NOISE_MODE=mode,
        BLOCK=block,
    )
    if splits == 1:
        return out
    block_s = triton.next_power_of_2(splits)
    block_b = max(1, min(FINISH_TILE // block_s, triton.next_power_of_2(B)))
    launch(
        _vp_loss_finish_kernel,
        (triton.cdiv(B, block_b),),
        pred_c,
        target,
        w_c,
        out,
        B,
        splits,
        F64=f64,
        BLOCK_B=block_b,
        BLOCK_S=block_s,
    )
    return out


@custom_op("scorefast_triton::dsm_vp_loss_backward", mutates_args=())
def dsm_vp_loss_backward(
    grad_per_sample: torch.Tensor,
    pred: torch.Tensor,
    x: torch.Tensor | None,
    a: torch.Tensor,
    c: torch.Tensor,
    weight: torch.Tensor,
    seed: int,
    step: int,
    particle_offset: int,
) -> torch.Tensor:
    """dL/dpred = g_b (2 w_b) (pred - a_b z - c_b x), pred's dtype, contiguous."""
    contract.check_loss_args(pred, x, a, c, weight, step, particle_offset)
    contract.check_grad_per_sample(grad_per_sample, pred)
    B, D = _shape(pred)
    pred_c = pred.contiguous()
    out = torch.empty_like(pred_c)
    if B * D == 0:
        return out
    mode, Q = noise_layout(D)
    n_groups = B * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _vp_backward_kernel,
        (triton.cdiv(n_groups, block),),
        pred_c,
        pred_c,
        pred_c if x is None else x.contiguous(),
        a.contiguous(),
        c.contiguous(),
        2.0 * weight,  # exact in float64
        grad_per_sample.contiguous(),
        out,
        n_groups,
        Q,
        D,
        lo,
        hi,
        step,
        particle_offset,
        HAS_X=x is not None,
        F64=pred.dtype == torch.float64,
        NOISE_MODE=mode,
        BLOCK=block,
    )
    return out
