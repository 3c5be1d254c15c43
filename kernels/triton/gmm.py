"""Triton kernels of gmm_score, and the op ``scorefast_triton::gmm_score`` (schema and argument
meaning as every backend: csrc/include/scorefast/gmm.h).

Per point, the components are streamed with an online log-sum-exp, as in the C++ kernel
(csrc/cpu/isa_gmm_kernels.inc):

    l_k = log_const_k - (quad_k + log_det_k) / 2,   quad_k = sum_d h_kd t_d^2,
    t = F_k^T (x - mu_k) (x - mu_k without a factor),
    h_k = inv_var_k, or 1 / (var_k + sigma2_n) with per-point sigma2 (then
    log_det_k = sum_d log(var_kd + sigma2_n), D log(var_k + sigma2_n) for one column),
    score = sum_k e_k (-F_k (h_k . t)) / S,   log p = m + log S.

Components with l_k = -inf (weight 0) are skipped; a NaN l_k makes its point NaN.

Kernels:
  * ``_gmm_kernel`` (D <= MAX_BLOCK_D): one program holds BLOCK_N points x BLOCK_D
    coordinates in registers and loops over the K components; the running max, sum and
    score accumulator stay in registers. With a factor, t and F_k (h . t) come from one
    loop over the columns j of F_k: t_j = <x - mu_k, F_k[:, j]>, then F_k[:, j] h_j t_j is
    accumulated (F_k is read once per component and program). The tile math is the jit
    helper ``gmm_tile``, which the chain kernel (chain.py) calls once per step.
  * isotropic/diagonal with D > MAX_BLOCK_D, in two launches: ``_gmm_lse_kernel`` loops
    over D in chunks for each component, writes l [N, K] and the final (m, S), and the log
    density; ``_gmm_score_chunk_kernel`` then forms the score one D chunk per program with
    weights exp(l_k - m) / S.
  * full (a factor) with D > MAX_BLOCK_D, where t (size D) no longer fits in registers: two
    launches per component k over (blocks of points) x (D chunks). ``_gmm_full_t_kernel``
    writes t = F_k^T (x - mu_k) into a scratch [N, D]; ``_gmm_full_score_kernel`` sums l_k
    from the whole row of t, steps the online log-sum-exp (m, S) (kept in [N] buffers between
    launches) and accumulates -e_k F_k (h . t) into an [N, D] buffer, one chunk of rows of F_k
    per program; the last component writes score and log p. Extra memory O(N D), none
    N x K x D; 2K launches.

Math in float32 (float64 for float64 x; float16/bfloat16 x are computed in float32), int64
element indices.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..._env import triton_interpreting
from ...ops import gmm as contract
from .noise import custom_op, launch, to_acc

# Largest D held in one block of registers (and the chunk width above it).
MAX_BLOCK_D = 256
# Elements of one [BLOCK_N, BLOCK_D] register tile (a program keeps about four of them).
TILE = 2048
# Most points per program: small D still spreads N over many programs.
MAX_BLOCK_N = 128

_NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _iso_precision(var_k, inv_var_k, s2, D, PER_POINT: tl.constexpr):
    """(h, log_det) of an isotropic component: h a scalar or [BLOCK_N] (per-point sigma)."""
    if PER_POINT:
        v = tl.load(var_k) + s2
        h = 1.0 / v
        log_det = tl.log(v) * D
    else:
        h = tl.load(inv_var_k)
        log_det = tl.zeros_like(s2)
    return h, log_det


@triton.jit
def _diag_precision(var_k, inv_var_k, s2, d, dmask, PER_POINT: tl.constexpr):
    """(h, log_det) of the coordinates d of a diagonal component: h [1 or BLOCK_N, BLOCK_D],
    log_det [BLOCK_N] (the sum over these coordinates)."""
    if PER_POINT:
        v = tl.load(var_k + d, mask=dmask, other=1.0)[None, :] + s2[:, None]
        h = 1.0 / v
        log_det = tl.sum(tl.where(dmask[None, :], tl.log(v), 0.0), axis=1)
    else:
        h = tl.load(inv_var_k + d, mask=dmask, other=0.0)[None, :]
        log_det = tl.zeros_like(s2)
    return h, log_det


@triton.jit
def _factor_column(t_j, quad, log_det, var_k, inv_var_k, s2, h, j, ISO: tl.constexpr, PER_POINT: tl.constexpr):
    """Column j of t = F_k^T (x - mu_k) into the sums: (quad, log_det, u_j = h_j t_j). Isotropic:
    quad gets t_j^2 (times h once the sum is done) and h is the component's precision;
    otherwise h_j comes from the column's variance (per-point sigma adds log(var_kj + s2))."""
    if ISO:
        quad += t_j * t_j
        u_j = h * t_j
    else:
        if PER_POINT:
            v_j = tl.load(var_k + j) + s2
            h_j = 1.0 / v_j
            log_det += tl.log(v_j)
        else:
            h_j = tl.load(inv_var_k + j)
        quad += h_j * t_j * t_j
        u_j = h_j * t_j
    return quad, log_det, u_j


@triton.jit
def _lse_update(l, m, S):
    """One step of the online log-sum-exp: (m, S, r, e, skip); S and the score accumulator
    are rescaled by r when l is a new maximum; skip where l = -inf (contributes nothing)."""
    skip = l == _NEG_INF
    grow = l > m  # NaN l never grows m, and exp(NaN - m) makes its point NaN
    # The exponents are formed so that no inf - inf arises in the lanes a where discards:
    # r = exp(m - l) where l grows m, else exp(0) = 1; e = exp(-inf - 0) = 0 where skipped.
    r = tl.exp(tl.where(grow, m, 0.0) - tl.where(grow, l, 0.0))
    m = tl.where(grow, l, m)
    e = tl.exp(l - tl.where(skip, 0.0, m))
    S = S * r + e
    return m, S, r, e, skip


@triton.jit
def gmm_tile(
    x,
    s2,
    d,
    dmask,
    means_ptr,
    var_ptr,
    inv_var_ptr,
    factor_ptr,
    log_const_ptr,
    D,
    K,
    FULL: tl.constexpr,
    ISO: tl.constexpr,
    PER_POINT: tl.constexpr,
):
    """(score [BLOCK_N, BLOCK_D], log p [BLOCK_N]) of the points x held in registers.

    x: [BLOCK_N, BLOCK_D] in the compute type, 0 in padded coordinates (d >= D); s2:
    [BLOCK_N] per-point sigma^2 (read only with PER_POINT). Shared with the chain kernel.
    """
    m = tl.zeros_like(s2) + _NEG_INF
    S = tl.zeros_like(s2)
    acc = tl.zeros_like(x)
    # Per-component pointers advance by whole rows: 64-bit pointer arithmetic, no k * D product.
    mu_k = means_ptr
    var_k = var_ptr
    inv_var_k = inv_var_ptr
    f_k = factor_ptr
    for k in range(K):
        mu = tl.load(mu_k + d, mask=dmask, other=0.0)
        diff = x - mu[None, :]  # 0 in padded coordinates (both loads give 0 there)
        if FULL:
            quad = tl.zeros_like(s2)
            log_det = tl.zeros_like(s2)
            fu = tl.zeros_like(x)  # F_k (h . t)
            h = s2  # read only when isotropic, where it is set here
            if ISO:
                h, log_det = _iso_precision(var_k, inv_var_k, s2, D, PER_POINT)
            for j in range(D):
                f_col = tl.load(f_k + d * D + j, mask=dmask, other=0.0)  # F_k[:, j]
                t_j = tl.sum(diff * f_col[None, :], axis=1)
                quad, log_det, u_j = _factor_column(t_j, quad, log_det, var_k, inv_var_k, s2, h, j, ISO, PER_POINT)
                fu += u_j[:, None] * f_col[None, :]
            if ISO:
                quad = quad * h
            u = fu
        else:
            if ISO:
                h, log_det = _iso_precision(var_k, inv_var_k, s2, D, PER_POINT)
                quad = tl.sum(diff * diff, axis=1) * h
                if PER_POINT:
                    u = h[:, None] * diff
                else:
                    u = h * diff
            else:
                h, log_det = _diag_precision(var_k, inv_var_k, s2, d, dmask, PER_POINT)
                quad = tl.sum(h * diff * diff, axis=1)
                u = h * diff
        l = tl.load(log_const_ptr + k) - 0.5 * (quad + log_det)
        m, S, r, e, skip = _lse_update(l, m, S)
        acc = acc * r[:, None] - tl.where(skip[:, None], 0.0, e[:, None] * u)
        mu_k += D
        if ISO:
            var_k += 1
            inv_var_k += 1
        else:
            var_k += D
            inv_var_k += D
        if FULL:
            f_k += D * D
    inv_s = 1.0 / S
    return acc * inv_s[:, None], m + tl.log(S)


@triton.jit
def _gmm_kernel(
    x_ptr,
    means_ptr,
    var_ptr,
    inv_var_ptr,
    factor_ptr,
    log_const_ptr,
    sigma2_ptr,
    score_ptr,
    log_prob_ptr,
    N,
    D,
    K,
    FULL: tl.constexpr,
    ISO: tl.constexpr,
    PER_POINT: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    mask = row_ok[:, None] & dmask[None, :]
    offs = n[:, None] * D + d[None, :]
    x = to_acc(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
    s2 = tl.zeros([BLOCK_N], dtype=x.dtype)
    if PER_POINT:
        s2 = tl.load(sigma2_ptr + n, mask=row_ok, other=0.0)
    score, log_prob = gmm_tile(
        x, s2, d, dmask, means_ptr, var_ptr, inv_var_ptr, factor_ptr, log_const_ptr, D, K, FULL, ISO, PER_POINT
    )
    tl.store(score_ptr + offs, score.to(score_ptr.dtype.element_ty), mask=mask)
    tl.store(log_prob_ptr + n, log_prob.to(log_prob_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _gmm_lse_kernel(
    x_ptr,
    means_ptr,
    var_ptr,
    inv_var_ptr,
    log_const_ptr,
    sigma2_ptr,
    l_ptr,
    m_ptr,
    s_ptr,
    log_prob_ptr,
    N,
    D,
    K,
    ISO: tl.constexpr,
    PER_POINT: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Pass 1 of the chunked path: l [N, K], the final (m, S) [N] and log p."""
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    s2 = tl.zeros([BLOCK_N], dtype=l_ptr.dtype.element_ty)
    if PER_POINT:
        s2 = tl.load(sigma2_ptr + n, mask=row_ok, other=0.0)
    m = tl.full([BLOCK_N], _NEG_INF, dtype=s2.dtype)
    S = tl.zeros([BLOCK_N], dtype=s2.dtype)
    mu_k = means_ptr
    var_k = var_ptr
    inv_var_k = inv_var_ptr
    for k in range(K):
        quad = tl.zeros([BLOCK_N], dtype=s2.dtype)
        log_det = tl.zeros([BLOCK_N], dtype=s2.dtype)
        if ISO:
            h, log_det = _iso_precision(var_k, inv_var_k, s2, D, PER_POINT)
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            dmask = d < D
            mask = row_ok[:, None] & dmask[None, :]
            x = to_acc(tl.load(x_ptr + n[:, None] * D + d[None, :], mask=mask, other=0.0), F64)
            diff = x - tl.load(mu_k + d, mask=dmask, other=0.0)[None, :]
            if ISO:
                quad += tl.sum(diff * diff, axis=1)
            else:
                h_c, log_det_c = _diag_precision(var_k, inv_var_k, s2, d, dmask, PER_POINT)
                quad += tl.sum(h_c * diff * diff, axis=1)
                log_det += log_det_c
        if ISO:
            quad = quad * h
        l = tl.load(log_const_ptr + k) - 0.5 * (quad + log_det)
        tl.store(l_ptr + n * K + k, l, mask=row_ok)
        m, S, r, e, skip = _lse_update(l, m, S)
        mu_k += D
        if ISO:
            var_k += 1
            inv_var_k += 1
        else:
            var_k += D
            inv_var_k += D
    tl.store(m_ptr + n, m, mask=row_ok)
    tl.store(s_ptr + n, S, mask=row_ok)
    tl.store(log_prob_ptr + n, (m + tl.log(S)).to(log_prob_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _gmm_score_chunk_kernel(
    x_ptr,
    means_ptr,
    var_ptr,
    inv_var_ptr,
    sigma2_ptr,
    l_ptr,
    m_ptr,
    s_ptr,
    score_ptr,
    N,
    D,
    K,
    ISO: tl.constexpr,
    PER_POINT: tl.constexpr,
    F64: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Pass 2 of the chunked path: score[n, chunk] = sum_k exp(l_k - m) (-h_k . t) / S."""
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    mask = row_ok[:, None] & dmask[None, :]
    offs = n[:, None] * D + d[None, :]
    x = to_acc(tl.load(x_ptr + offs, mask=mask, other=0.0), F64)
    s2 = tl.zeros([BLOCK_N], dtype=x.dtype)
    if PER_POINT:
        s2 = tl.load(sigma2_ptr + n, mask=row_ok, other=0.0)
    m = tl.load(m_ptr + n, mask=row_ok, other=0.0)
    S = tl.load(s_ptr + n, mask=row_ok, other=1.0)
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=x.dtype)
    mu_k = means_ptr
    var_k = var_ptr
    inv_var_k = inv_var_ptr
    for k in range(K):
        l = tl.load(l_ptr + n * K + k, mask=row_ok, other=0.0)
        skip = l == _NEG_INF
        e = tl.exp(l - tl.where(skip, 0.0, m))  # 0 where skipped (as in _lse_update)
        diff = x - tl.load(mu_k + d, mask=dmask, other=0.0)[None, :]
        if ISO:
            h, log_det = _iso_precision(var_k, inv_var_k, s2, D, PER_POINT)
            if PER_POINT:
                u = h[:, None] * diff
            else:
                u = h * diff
        else:
            h, log_det = _diag_precision(var_k, inv_var_k, s2, d, dmask, PER_POINT)
            u = h * diff
        acc = acc - tl.where(skip[:, None], 0.0, e[:, None] * u)
        mu_k += D
        if ISO:
            var_k += 1
            inv_var_k += 1
        else:
            var_k += D
            inv_var_k += D
    inv_s = 1.0 / S
    tl.store(score_ptr + offs, (acc * inv_s[:, None]).to(score_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gmm_full_t_kernel(
    x_ptr, means_ptr, factor_ptr, t_ptr, N, D, F64: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr
):
    """Full, D > MAX_BLOCK_D, step 1 for one component k (means_ptr, factor_ptr at its row and
    matrix): t[n, chunk] = sum_i (x_ni - mu_ki) F_k[i, chunk] into the scratch t [N, D], one D
    chunk of columns per program, rows of F_k read in order (the C++ kernel's summation order)."""
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    j = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    jmask = j < D
    t = tl.zeros([BLOCK_N, BLOCK_D], dtype=t_ptr.dtype.element_ty)
    x_col = x_ptr + n * D  # x[:, i], advanced by one column per row i of F_k
    f_row = factor_ptr  # F_k[i, :]
    for i in range(D):
        d_i = to_acc(tl.load(x_col, mask=row_ok, other=0.0), F64) - tl.load(means_ptr + i)
        t += d_i[:, None] * tl.load(f_row + j, mask=jmask, other=0.0)[None, :]
        x_col += 1
        f_row += D
    tl.store(t_ptr + n[:, None] * D + j[None, :], t, mask=row_ok[:, None] & jmask[None, :])


@triton.jit
def _gmm_full_score_kernel(
    t_ptr,
    factor_ptr,
    var_ptr,
    inv_var_ptr,
    log_const_ptr,
    sigma2_ptr,
    state_in_ptr,
    state_out_ptr,
    acc_ptr,
    score_ptr,
    log_prob_ptr,
    N,
    D,
    ISO: tl.constexpr,
    PER_POINT: tl.constexpr,
    LAST: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Full, D > MAX_BLOCK_D, step 2 for one component k (parameter pointers at component k):
    l_k from the whole row of t, the online log-sum-exp step from state_in (m, S) [2, N] to
    state_out, and acc[n, chunk] = acc * r - e F_k[chunk, :] (h . t), one D chunk per program.
    Every chunk's program forms the same l_k (same sums in the same order); the first chunk's
    writes the new state. At the last component: score = acc / S and log p = m + log S."""
    n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = n < N
    chunk = tl.program_id(1)
    d = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    mask = row_ok[:, None] & dmask[None, :]
    offs = n[:, None] * D + d[None, :]
    s2 = tl.zeros([BLOCK_N], dtype=t_ptr.dtype.element_ty)
    if PER_POINT:
        s2 = tl.load(sigma2_ptr + n, mask=row_ok, other=0.0)
    quad = tl.zeros_like(s2)
    log_det = tl.zeros_like(s2)
    h = s2  # read only when isotropic, where it is set here
    if ISO:
        h, log_det = _iso_precision(var_ptr, inv_var_ptr, s2, D, PER_POINT)
    fu = tl.zeros([BLOCK_N, BLOCK_D], dtype=s2.dtype)  # F_k[chunk, :] (h . t)
    t_col = t_ptr + n * D  # t[:, j]
    f_col = factor_ptr + d.to(tl.int64) * D  # F_k[chunk, j]
    for j in range(D):
        t_j = tl.load(t_col, mask=row_ok, other=0.0)
        quad, log_det, u_j = _factor_column(t_j, quad, log_det, var_ptr, inv_var_ptr, s2, h, j, ISO, PER_POINT)
        fu += u_j[:, None] * tl.load(f_col, mask=dmask, other=0.0)[None, :]
        t_col += 1
        f_col += 1
    if ISO:
        quad = quad * h
    l = tl.load(log_const_ptr) - 0.5 * (quad + log_det)
    m = tl.load(state_in_ptr + n, mask=row_ok, other=0.0)
    S = tl.load(state_in_ptr + N + n, mask=row_ok, other=1.0)
    m, S, r, e, skip = _lse_update(l, m, S)
    acc = tl.load(acc_ptr + offs, mask=mask, other=0.0)
    acc = acc * r[:, None] - tl.where(skip[:, None], 0.0, e[:, None] * fu)
    if LAST:
        inv_s = 1.0 / S
        tl.store(score_ptr + offs, (acc * inv_s[:, None]).to(score_ptr.dtype.element_ty), mask=mask)
        if chunk == 0:
            tl.store(log_prob_ptr + n, (m + tl.log(S)).to(log_prob_ptr.dtype.element_ty), mask=row_ok)
    else:
        tl.store(acc_ptr + offs, acc, mask=mask)
        if chunk == 0:
            tl.store(state_out_ptr + n, m, mask=row_ok)
            tl.store(state_out_ptr + N + n, S, mask=row_ok)


# --------------------------------------------------------------------------------------
# launching and the op

_STORAGE = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_args(x, means, var, inv_var, factor, log_const, sigma2) -> None:
    """The contract's checks (also used by the chain op)."""
    contract.check_args(x, means, var, inv_var, factor, log_const, sigma2)


def _block_n(n: int, block_d: int) -> int:
    """Points per program: a TILE-element tile; on the interpreter no more than the work."""
    block = max(1, min(MAX_BLOCK_N, TILE // block_d))
    if triton_interpreting():
        block = min(block, triton.next_power_of_2(max(n, 1)))
    return block


def _full_chunked(x, means, var, inv_var, factor, log_const, sigma2, score, log_prob, flags, block_n, block_d):
    """Full covariance with D > MAX_BLOCK_D: two launches per component (t, then the state and
    score step), so only one component's t [N, D] exists at a time, never N x K x D."""
    N, D = x.shape
    K = means.shape[0]
    acc_t = means.dtype
    t = torch.empty((N, D), dtype=acc_t, device=x.device)
    acc = torch.zeros((N, D), dtype=acc_t, device=x.device)  # sum_k e_k (-F_k u_k), scaled to m
    # (m, S) before and after each component, ping-pong: a launch reads one and writes the other.
    state = torch.zeros((2, 2, N), dtype=acc_t, device=x.device)
    state[0, 0] = float("-inf")  # before the first component: m = -inf, S = 0
    grid = (triton.cdiv(N, block_n), triton.cdiv(D, block_d))
    for k in range(K):
        # Views at component k: 64-bit offsets from the host, none formed in the kernels.
        launch(
            _gmm_full_t_kernel,
            grid,
            x,
            x,
            means[k],
            factor[k],
            t,
            N,
            D,
            F64=flags["F64"],
            BLOCK_N=block_n,
            BLOCK_D=block_d,
        )
        launch(
            _gmm_full_score_kernel,
            grid,
            x,
            t,
            factor[k],
            var[k],
            inv_var[k],
            log_const[k:],
            sigma2,
            state[k % 2],
            state[(k + 1) % 2],
            acc,
            score,
            log_prob,
            N,
            D,
            ISO=flags["ISO"],
            PER_POINT=flags["PER_POINT"],
            LAST=k == K - 1,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
        )


@custom_op("scorefast_triton::gmm_score", mutates_args=())
def gmm_score(
    x: torch.Tensor,
    means: torch.Tensor,
    var: torch.Tensor,
    inv_var: torch.Tensor,
    factor: Optional[torch.Tensor],
    log_const: torch.Tensor,
    sigma2: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [N, D], log_prob [N]) of the mixture in kernel form (see scorefast.gmm_score)."""
    check_args(x, means, var, inv_var, factor, log_const, sigma2)
    N, D = x.shape
    K = means.shape[0]
    score = torch.empty((N, D), dtype=x.dtype, device=x.device)
    log_prob = torch.empty((N,), dtype=x.dtype, device=x.device)
    full = factor is not None
    if N == 0:
        return score, log_prob
    x_c = x.contiguous()
    means_c, var_c, inv_var_c, log_const_c = (t.contiguous() for t in (means, var, inv_var, log_const))
    factor_c = factor.contiguous() if full else means_c  # stand-ins are never read
    sigma2_c = sigma2.contiguous() if sigma2 is not None else log_const_c
    flags = dict(ISO=var.shape[1] == 1, PER_POINT=sigma2 is not None, F64=x.dtype == torch.float64)
    if D <= MAX_BLOCK_D:
        block_d = triton.next_power_of_2(D)
        block_n = _block_n(N, block_d)
        launch(
            _gmm_kernel,
            (triton.cdiv(N, block_n),),
            x_c,
            x_c,
            means_c,
            var_c,
            inv_var_c,
            factor_c,
            log_const_c,
            sigma2_c,
            score,
            log_prob,
            N,
            D,
            K,
            FULL=full,
            **flags,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
        )
        return score, log_prob
    block_d = MAX_BLOCK_D
    block_n = _block_n(N, block_d)
    if full:
        _full_chunked(
            x_c, means_c, var_c, inv_var_c, factor_c, log_const_c, sigma2_c, score, log_prob, flags, block_n, block_d
        )
        return score, log_prob
    # Chunked over D (isotropic/diagonal): l [N, K] and (m, S) between the two passes.
    acc = means.dtype
    l = torch.empty((N, K), dtype=acc, device=x.device)
    m = torch.empty((N,), dtype=acc, device=x.device)
    s = torch.empty((N,), dtype=acc, device=x.device)
    launch(
        _gmm_lse_kernel,
        (triton.cdiv(N, block_n),),
        x_c,
        x_c,
        means_c,
        var_c,
        inv_var_c,
        log_const_c,
        sigma2_c,
        l,
        m,
        s,
        log_prob,
        N,
        D,
        K,
        **flags,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    launch(
        _gmm_score_chunk_kernel,
        (triton.cdiv(N, block_n), triton.cdiv(D, block_d)),
        x_c,
        x_c,
        means_c,
        var_c,
        inv_var_c,
        sigma2_c,
        l,
        m,
        s,
        score,
        N,
        D,
        K,
        **flags,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return score, log_prob
