"""Triton kernel of gmm_chain, and the op ``scorefast_triton::gmm_chain_`` (schema of
scorefast.chain; semantics of csrc/include/scorefast/chain.h).

One program holds BLOCK_N particles x BLOCK_D coordinates in registers and runs all T
steps on them; only the trajectory frames and the final state go to memory:

    ULA / annealed:  x <- x + a_t s_t(x) + sqrt(2 a_t) z(seed, t0 + t, p)
                     s_t = score of the mixture noised by sigma2_t (0: the mixture itself)
    MALA:            y = x + a_t s(x) + sqrt(2 a_t) z, accepted when
                     log u < log p(y) - log p(x) - |x - y - a_t s(y)|^2 / (4 a_t) + |z|^2 / 2
                     (in float64), u = uniform(word 0 of Philox counter (lo32(p'), hi32(p'),
                     t0 + t, ceil(D / 4))); a NaN ratio is a rejection.

The score is gmm.py's ``gmm_tile`` (per-point form of the parameters, sigma2_t added in the
kernel) and the normals noise.py's ``particle_normals``, so the chain equals T single
langevin_step + gmm_score calls. Math in float32 (float64 for float64 storage); 16-bit
state (and the MALA proposal) is rounded to storage, nearest even, after every step.

D is limited to gmm.MAX_BLOCK_D (one register block per particle): NotImplementedError above.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..._env import triton_interpreting
from ...ops import chain as contract
from .gmm import MAX_BLOCK_D, gmm_tile
from .noise import contract_words, custom_op, launch, noise_mode, particle_normals, round_bf16, seed_halves, to_acc

# Elements of one [BLOCK_N, BLOCK_D] state tile: a program keeps about six tiles live (state,
# score, noise, MALA's proposal and its score, the gmm accumulator), half the gmm kernel's.
TILE = 1024
MAX_BLOCK_N = 64


@triton.jit
def _sqrt(v, F64: tl.constexpr):
    """Correctly rounded square root (float32 tl.sqrt may be approximate on GPUs)."""
    if F64:
        return tl.sqrt(v)
    else:
        return tl.sqrt_rn(v)


@triton.jit
def _round_to_storage(v, x_ptr, F64: tl.constexpr, BF16: tl.constexpr):
    """v rounded to nearest even in x's storage type, returned in the compute type."""
    if BF16:
        return round_bf16(v)
    else:
        return to_acc(v.to(x_ptr.dtype.element_ty), F64)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step0", "offset"])
def _chain_kernel(
    x_ptr,
    means_ptr,
    var_ptr,
    factor_ptr,
    log_const_ptr,
    a_ptr,
    s2_ptr,
    traj_ptr,
    accepted_ptr,
    N,
    D,
    K,
    T,
    every,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step0: tl.int64,
    offset: tl.int64,
    FULL: tl.constexpr,
    ISO: tl.constexpr,
    MALA: tl.constexpr,
    TRAJ: tl.constexpr,
    F64: tl.constexpr,
    BF16: tl.constexpr,
    NOISE_MODE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # x_ptr: [N, D] state, storage type, updated in place; means/var/factor/log_const: the
    # mixture in per-point form (gmm.h); a_ptr, s2_ptr: [T] step sizes and noise levels;
    # traj_ptr: [T / every, N, D] (TRAJ); accepted_ptr: [N] int64 (MALA).
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    mask = row_ok[:, None] & dmask[None, :]
    offs = n[:, None] * D + d[None, :]
    x = to_acc(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
    ids = offset + n  # global particle ids p' (the noise's flat indices are p' D + d)
    zero = tl.zeros([BLOCK_N], dtype=x.dtype)
    sx = tl.zeros_like(x)
    lpx = zero
    if MALA:
        sx, lpx = gmm_tile(
            x, zero, d, dmask, means_ptr, var_ptr, var_ptr, factor_ptr, log_const_ptr, D, K, FULL, ISO, True
        )
    count = tl.zeros([BLOCK_N], dtype=tl.int64)
    for t in range(T):
        step = step0 + t  # int64: also gives the trajectory row without an int32 product
        a = tl.load(a_ptr + t)
        b = _sqrt(2.0 * a, F64)
        # padded coordinates keep x = 0, so the score's distances there stay 0
        z = tl.where(
            dmask[None, :], to_acc(particle_normals(seed_lo, seed_hi, step, ids, D, NOISE_MODE, BLOCK_D), F64), 0.0
        )
        if MALA:
            y = _round_to_storage(x + a * sx + b * z, x_ptr, F64, BF16)
            sy, lpy = gmm_tile(
                y, zero, d, dmask, means_ptr, var_ptr, var_ptr, factor_ptr, log_const_ptr, D, K, FULL, ISO, True
            )
            a64 = a.to(tl.float64)
            r = x.to(tl.float64) - y.to(tl.float64) - a64 * sy.to(tl.float64)
            z64 = z.to(tl.float64)
            log_alpha = (
                lpy.to(tl.float64)
                - lpx.to(tl.float64)
                - tl.sum(r * r, axis=1) / (4.0 * a64)
                + 0.5 * tl.sum(z64 * z64, axis=1)
            )
            # the uniform: word 0 of counter (lo32(p'), hi32(p'), t, ceil(D / 4)), whose last word
            # (>= 1) no normal's counter has (theirs is 0)
            w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, ids, 0 * ids + (D + 3) // 4)
            take = tl.log(tl.random.uint_to_uniform_float(w0).to(tl.float64)) < log_alpha  # NaN: rejected
            x = tl.where(take[:, None], y, x)
            sx = tl.where(take[:, None], sy, sx)
            lpx = tl.where(take, lpy, lpx)
            count += take.to(tl.int64)
        else:
            sx, lp = gmm_tile(
                x,
                zero + tl.load(s2_ptr + t),
                d,
                dmask,
                means_ptr,
                var_ptr,
                var_ptr,
                factor_ptr,
                log_const_ptr,
                D,
                K,
                FULL,
                ISO,
                True,
            )
            x = _round_to_storage(x + a * sx + b * z, x_ptr, F64, BF16)
        if TRAJ:
            done = step - step0 + 1
            if done % every == 0:
                tl.store(traj_ptr + (done // every - 1) * N * D + offs, x.to(traj_ptr.dtype.element_ty), mask=mask)
    tl.store(x_ptr + offs, x.to(x_ptr.dtype.element_ty), mask=mask)
    if MALA:
        tl.store(accepted_ptr + n, count, mask=row_ok)


def _block_n(n: int, block_d: int) -> int:
    """Particles per program: a TILE-element state; on the interpreter no more than the work."""
    block = max(1, min(MAX_BLOCK_N, TILE // block_d))
    if triton_interpreting():
        block = min(block, triton.next_power_of_2(max(n, 1)))
    return block


@custom_op("scorefast_triton::gmm_chain_", mutates_args={"x", "trajectory", "accepted"})
def gmm_chain_(
    x: torch.Tensor,
    means: torch.Tensor,
    var: torch.Tensor,
    log_const: torch.Tensor,
    factor: Optional[torch.Tensor],
    step_size: torch.Tensor,
    sigma2: torch.Tensor,
    mala: bool,
    seed: int,
    step_offset: int,
    particle_offset: int,
    trajectory_every: int,
    trajectory: Optional[torch.Tensor],
    accepted: Optional[torch.Tensor],
) -> None:
    """T steps of every particle of x [N, D] in place; parameters in per-point kernel form."""
    contract.check_args(
        x,
        means,
        var,
        log_const,
        factor,
        step_size,
        sigma2,
        mala,
        step_offset,
        particle_offset,
        trajectory_every,
        trajectory,
        accepted,
    )
    N, D = x.shape
    if D > MAX_BLOCK_D:
        raise NotImplementedError(
            f"gmm_chain on the triton backend supports D <= {MAX_BLOCK_D} (one register block per "
            f"particle), got D = {D}; use the cpp or numba backend"
        )
    T = step_size.numel()
    if N == 0 or T == 0:
        return
    full = factor is not None
    block_d = triton.next_power_of_2(D)
    block_n = _block_n(N, block_d)
    lo, hi = seed_halves(seed)
    k = trajectory_every
    means_c, var_c, log_const_c = means.contiguous(), var.contiguous(), log_const.contiguous()
    launch(
        _chain_kernel,
        (triton.cdiv(N, block_n),),
        x,
        x,
        means_c,
        var_c,
        factor.contiguous() if full else means_c,
        log_const_c,
        step_size,
        sigma2,
        trajectory if k > 0 else x,
        accepted if mala else x,  # stand-ins are never touched
        N,
        D,
        means.shape[0],
        T,
        k,
        lo,
        hi,
        step_offset,
        particle_offset,
        FULL=full,
        ISO=var.shape[1] == 1,
        MALA=bool(mala),
        TRAJ=k > 0,
        F64=x.dtype == torch.float64,
        BF16=x.dtype == torch.bfloat16,
        NOISE_MODE=noise_mode(D),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
