"""Triton kernels of denoising score matching, and the ops ``scorefast_triton::dsm_perturb``,
``scorefast_triton::dsm_loss`` and ``scorefast_triton::dsm_loss_backward`` (the schemas of
scorefast.dsm; the int arguments are inferred as SymInt, as for the other Triton ops, since
triton_op infers its schema from the annotations).

    perturb:  x_tilde = x + sigma_b z
    loss:     l_b = 1/2 sigma_b^p sum_d (s + z / sigma_b)^2   (score form)
              l_b = sum_d (eps - z)^2                        (eps form)
    backward: g_b sigma_b^p (s + z / sigma_b)  or  2 g_b (eps - z)

z is the noise contract's normals for (seed, step, particle_offset + b), drawn in registers
(``noise.group_normals``) by every kernel, never stored. Perturb and backward are
elementwise passes over groups of four elements. The loss walks each sample's groups in
BLOCK-sized chunks; a sample may be split over several programs (few samples, long
samples), whose partial sums a second kernel adds. Storage float16/bfloat16/float32 computes and
accumulates in float32 (a tree reduction, tl.sum), float64 in float64. sigma_b^p is
evaluated on the host side in float64 (torch.pow, one [B] op), as the C++ kernels do with
std::pow.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._env import triton_interpreting
from ...ops import dsm as contract
from ...ops._common import acc_dtype
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

# Groups of four elements per chunk of the loss kernel.
LOSS_GROUPS = 256
# The loss kernel splits samples until about this many programs run (GPU only).
LOSS_TARGET_PROGRAMS = 1024
# Most programs per sample (the partial sums of a sample fit one block of the finish kernel).
LOSS_MAX_SPLITS = 1024
# Samples per program of the finish kernel: BLOCK_B * BLOCK_S partial sums at most.
FINISH_TILE = 4096


@triton.jit
def _residual(pred, z, inv_sigma, EPS: tl.constexpr):
    """r = eps - z (eps form) or s + z / sigma (score form, z times 1 / sigma as the C++ kernels)."""
    if EPS:
        return pred - z
    else:
        return pred + z * inv_sigma


# --------------------------------------------------------------------------------------
# kernels


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _dsm_perturb_kernel(
    x_ptr,
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
    sig = to_acc(tl.load(sigma_ptr + p, mask=row_ok, other=1.0), F64)
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
    z = to_acc(select4(k, z0, z1, z2, z3), F64)
    x = to_acc(tl.load(x_ptr + e, mask=mask, other=0.0), F64)
    v = x + sig[:, None] * z
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset", "chunks_per_split"])
def _dsm_loss_kernel(
    pred_ptr,
    sigma_ptr,
    weight_ptr,
    out_ptr,
    D,
    Q,
    chunks_per_split,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    EPS: tl.constexpr,
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
    sig = to_acc(tl.load(sigma_ptr + b), F64)
    inv_sigma = 1.0 / sig
    k = tl.arange(0, 4)
    lanes = tl.arange(0, BLOCK).to(tl.int64)
    base = b * D  # int64: B * D may exceed 2^31
    q_begin = s * chunks_per_split * BLOCK
    shift = group_shift(offset + b, D, NOISE_MODE)  # group q holds elements 4q + k - shift
    if F64:
        acc = tl.zeros([BLOCK, 4], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK, 4], dtype=tl.float32)
    for c in range(0, chunks_per_split):
        q = q_begin + c * BLOCK + lanes
        d = q[:, None] * 4 + k[None, :]
        if NOISE_MODE == NOISE_GENERAL:
            d = d - shift
            mask = (d >= 0) & (d < D)
        else:
            mask = d < D
        z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, (offset + b) + q * 0, q, D, NOISE_MODE)
        z = to_acc(select4(k, z0, z1, z2, z3), F64)
        pred = to_acc(tl.load(pred_ptr + base + d, mask=mask, other=0.0), F64)
        r = tl.where(mask, _residual(pred, z, inv_sigma, EPS), 0.0)
        acc += r * r  # a NaN prediction makes its sample's sum NaN, and only that one
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    if FINAL:
        loss = total.to(tl.float64)
        if not EPS:
            loss = loss * (0.5 * tl.load(weight_ptr + b))
        tl.store(out_ptr + b, to_acc(loss, F64))
    else:
        tl.store(out_ptr + b * tl.num_programs(1) + s, total)


@triton.jit
def _dsm_loss_finish_kernel(
    partial_ptr,
    weight_ptr,
    out_ptr,
    B,
    S,
    EPS: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # out[b] = (sum_s partial[b, s]) (times sigma_b^p / 2 in the score form).
    b = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    j = tl.arange(0, BLOCK_S)
    row_ok = b < B
    mask = row_ok[:, None] & (j < S)[None, :]
    part = tl.load(partial_ptr + b[:, None] * S + j[None, :], mask=mask, other=0.0)
    loss = tl.sum(part, axis=1).to(tl.float64)
    if not EPS:
        loss = loss * (0.5 * tl.load(weight_ptr + b, mask=row_ok, other=1.0))
    tl.store(out_ptr + b, to_acc(loss, F64), mask=row_ok)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _dsm_backward_kernel(
    pred_ptr,
    sigma_ptr,
    weight_ptr,
    g_ptr,
    out_ptr,
    n_groups,
    Q,
    D,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    EPS: tl.constexpr,
    F64: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, offset, NOISE_MODE, BLOCK)
    g = to_acc(tl.load(g_ptr + p, mask=row_ok, other=0.0), F64)
    if EPS:
        scale = 2.0 * g
        inv_sigma = g  # unused in the eps form
    else:
        # g_b times sigma_b^p rounded to the compute type, as the C++ kernels
        scale = g * to_acc(tl.load(weight_ptr + p, mask=row_ok, other=0.0), F64)
        inv_sigma = 1.0 / to_acc(tl.load(sigma_ptr + p, mask=row_ok, other=1.0), F64)
        inv_sigma = inv_sigma[:, None]
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
    z = to_acc(select4(k, z0, z1, z2, z3), F64)
    pred = to_acc(tl.load(pred_ptr + e, mask=mask, other=0.0), F64)
    v = scale[:, None] * _residual(pred, z, inv_sigma, EPS)
    tl.store(out_ptr + e, v.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# checks (the messages of the C++ ops) and launching


def _prepare(
    input: torch.Tensor, name: str, sigma: torch.Tensor, power: float, step: int, particle_offset: int
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The contract's checks; returns (input contiguous, sigma contiguous, B, D)."""
    contract.check_args(input, name, sigma, power, step, particle_offset)
    B = input.shape[0]
    D = input.numel() // B if B else 0
    return input.contiguous(), sigma.contiguous(), B, D


def _weight(sigma: torch.Tensor, power: float) -> torch.Tensor:
    """sigma_b^p in float64 ([B]), as std::pow(double(sigma_b), p) of the C++ kernels."""
    return torch.pow(sigma.to(torch.float64), power)


def _loss_split(B: int, n_chunks: int) -> tuple[int, int]:
    """(programs per sample, chunks per program) of the loss kernel."""
    if triton_interpreting():
        return 1, n_chunks  # every program costs time on the interpreter
    splits = min(n_chunks, LOSS_MAX_SPLITS, max(1, LOSS_TARGET_PROGRAMS // max(B, 1)))
    per = triton.cdiv(n_chunks, splits)
    return triton.cdiv(n_chunks, per), per  # no program without work


# --------------------------------------------------------------------------------------
# ops


@custom_op("scorefast_triton::dsm_perturb", mutates_args=())
def dsm_perturb(x: torch.Tensor, sigma: torch.Tensor, seed: int, step: int, particle_offset: int) -> torch.Tensor:
    """x + sigma_b z as a new contiguous tensor of x's dtype (see scorefast.dsm_perturb)."""
    x_c, sigma_c, B, D = _prepare(x, "x", sigma, 2.0, step, particle_offset)
    out = torch.empty_like(x_c)
    if B * D == 0:
        return out
    mode, Q = noise_layout(D)
    n_groups = B * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _dsm_perturb_kernel,
        (triton.cdiv(n_groups, block),),
        x_c,
        x_c,
        sigma_c,
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


@custom_op("scorefast_triton::dsm_loss", mutates_args=())
def dsm_loss(
    pred: torch.Tensor, sigma: torch.Tensor, power: float, eps_form: bool, seed: int, step: int, particle_offset: int
) -> torch.Tensor:
    """Per-sample losses [B], float32 (float64 for float64 pred) (see scorefast.dsm_loss)."""
    pred_c, sigma_c, B, D = _prepare(pred, "pred", sigma, power, step, particle_offset)
    acc = acc_dtype(pred.dtype)
    if D == 0:
        return torch.zeros(B, dtype=acc, device=pred.device)
    out = torch.empty(B, dtype=acc, device=pred.device)
    weight = sigma_c if eps_form else _weight(sigma_c, power)  # not read in the eps form
    f64 = pred.dtype == torch.float64
    mode, Q = noise_layout(D)
    block = max(1, min(LOSS_GROUPS, triton.next_power_of_2(Q)))
    splits, per = _loss_split(B, triton.cdiv(Q, block))
    lo, hi = seed_halves(seed)
    if splits == 1:
        launch(
            _dsm_loss_kernel,
            (B, 1),
            pred_c,
            pred_c,
            sigma_c,
            weight,
            out,
            D,
            Q,
            per,
            lo,
            hi,
            step,
            particle_offset,
            EPS=eps_form,
            F64=f64,
            FINAL=True,
            NOISE_MODE=mode,
            BLOCK=block,
        )
        return out
    partial = torch.empty(B, splits, dtype=acc, device=pred.device)
    launch(
        _dsm_loss_kernel,
        (B, splits),
        pred_c,
        pred_c,
        sigma_c,
        weight,
        partial,
        D,
        Q,
        per,
        lo,
        hi,
        step,
        particle_offset,
        EPS=eps_form,
        F64=f64,
        FINAL=False,
        NOISE_MODE=mode,
        BLOCK=block,
    )
    block_s = triton.next_power_of_2(splits)
    block_b = max(1, min(FINISH_TILE // block_s, triton.next_power_of_2(B)))
    launch(
        _dsm_loss_finish_kernel,
        (triton.cdiv(B, block_b),),
        pred_c,
        partial,
        weight,
        out,
        B,
        splits,
        EPS=eps_form,
        F64=f64,
        BLOCK_B=block_b,
        BLOCK_S=block_s,
    )
    return out


@custom_op("scorefast_triton::dsm_loss_backward", mutates_args=())
def dsm_loss_backward(
    grad_per_sample: torch.Tensor,
    pred: torch.Tensor,
    sigma: torch.Tensor,
    power: float,
    eps_form: bool,
    seed: int,
    step: int,
    particle_offset: int,
) -> torch.Tensor:
    """dL/dpred = g_b sigma_b^p (s + z / sigma_b) or 2 g_b (eps - z), pred's dtype, contiguous."""
    pred_c, sigma_c, B, D = _prepare(pred, "pred", sigma, power, step, particle_offset)
    contract.check_grad_per_sample(grad_per_sample, pred)
    g = grad_per_sample.contiguous()
    out = torch.empty_like(pred_c)
    if B * D == 0:
        return out
    weight = sigma_c if eps_form else _weight(sigma_c, power)  # not read in the eps form
    mode, Q = noise_layout(D)
    n_groups = B * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _dsm_backward_kernel,
        (triton.cdiv(n_groups, block),),
        pred_c,
        pred_c,
        sigma_c,
        weight,
        g,
        out,
        n_groups,
        Q,
        D,
        lo,
        hi,
        step,
        particle_offset,
        EPS=eps_form,
        F64=pred.dtype == torch.float64,
        NOISE_MODE=mode,
        BLOCK=block,
    )
    return out
