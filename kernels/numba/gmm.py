"""gmm_score in numba: ``scorefast_numba::gmm_score``.

Score and log-density of a Gaussian mixture in kernel form (csrc/include/scorefast/gmm.h):
component k has log-joint l_k = log_const_k - (h . t^2 summed + log_det) / 2 with
t = F_k^T (x - mu_k) (x - mu_k without a factor), h = inv_var_k, or 1 / (var_k + sigma2_n)
with a per-point sigma (then log_det = sum_j log(var_kj + sigma2_n), times D for a single
variance column). Then

    score = sum_k e_k (-F_k (h . t)) / S,   log_prob = m + log S,   e_k = exp(l_k - m),

with m the largest l_k (a NaN l_k sticks, so a NaN row stays NaN and only that row) and
components with l_k = -inf left out. Same semantics as the C++ CPU kernels: float32 math
for float32 and 16-bit storage (16-bit inputs are widened to float32 copies here and the
results rounded back by torch, RNE), float64 math for float64.

The kernel (gmm_kernel below; gmm_blocks.py, and gmm_factor.py with a factor) works on
blocks of points, each point one lane of loops that vectorise, in two passes over the
components (every l_k, then the weights), so every (point, component) costs one exp: vmath's
polynomial in float32, which gives 0 for l_k - m < -87 (a weight below ~2^-126 of the
largest, as the C++ kernels' vexp_nonpos). Points are split into fixed chunks for the
threads; each point is computed alone, so no result depends on the chunking or thread count.
gmm_point is the same math for one point at a time (the chain kernel's).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from numba import prange

from ...ops import gmm as contract
from .gmm_blocks import P, _chunk_plain
from .gmm_factor import _chunk_factor, upper_triangular
from .noise import jit, sync_threads

# Work items aim at about this many multiply-adds (K * D, K * D^2 with a factor, per point).
_CHUNK_WORK = 1 << 16


@jit(helper=True, ieee_division=True)
def gmm_point(
    x,
    means,
    var,
    inv_var,
    factor,
    log_const,
    s2,
    score,
    log_prob,
    n,
    lbuf,
    hbuf,
    ubuf,
    acc,
    has_factor,
    per_point,
    iso,
    zero,
    half,
    one,
    neg_inf,
    dim_f,
):
    """score[n], log_prob[n] of point n (shared with the chain kernel).

    Scratch: lbuf [K] log-joints; hbuf [K] isotropic precisions; ubuf [K, D] h . t (only
    with a factor, or diagonal variances with a per-point sigma); acc [D].
    """
    K, D = means.shape
    store_u = has_factor or not (iso or not per_point)
    # Pass 1: l_k for every component (and u_k = h . t where pass 2 needs it), and the
    # running max of the l_k (a NaN sticks).
    m = neg_inf
    for k in range(K):
        quad = zero
        log_det = zero
        h0 = one
        if iso:
            if per_point:
                v = var[k, 0] + s2
                h0 = one / v
                log_det = dim_f * math.log(v)
            else:
                h0 = inv_var[k, 0]
            hbuf[k] = h0
        if has_factor:
            for j in range(D):
                ubuf[k, j] = zero
            for i in range(D):
                di = x[n, i] - means[k, i]
                for j in range(D):
                    ubuf[k, j] += di * factor[k, i, j]
            for d in range(D):
                h = h0
                if not iso:
                    if per_point:
                        v = var[k, d] + s2
                        h = one / v
                        log_det += math.log(v)
                    else:
                        h = inv_var[k, d]
                hu = h * ubuf[k, d]
                quad += hu * ubuf[k, d]
                ubuf[k, d] = hu
        elif iso:
            # sum_d (x_d - mu_kd)^2 with 8 partial sums (vectorises without reassociation);
            # written out here: a call per component would cost more than the sum for small D.
            p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = zero
            d = 0
            while d + 8 <= D:
                t0 = x[n, d] - means[k, d]
                t1 = x[n, d + 1] - means[k, d + 1]
                t2 = x[n, d + 2] - means[k, d + 2]
                t3 = x[n, d + 3] - means[k, d + 3]
                t4 = x[n, d + 4] - means[k, d + 4]
                t5 = x[n, d + 5] - means[k, d + 5]
                t6 = x[n, d + 6] - means[k, d + 6]
                t7 = x[n, d + 7] - means[k, d + 7]
                p0 += t0 * t0
                p1 += t1 * t1
                p2 += t2 * t2
                p3 += t3 * t3
                p4 += t4 * t4
                p5 += t5 * t5
                p6 += t6 * t6
                p7 += t7 * t7
                d += 8
            while d < D:
                t0 = x[n, d] - means[k, d]
                p0 += t0 * t0
                d += 1
            quad = h0 * (((p0 + p4) + (p1 + p5)) + ((p2 + p6) + (p3 + p7)))
        elif per_point:
            for d in range(D):
                v = var[k, d] + s2
                t = x[n, d] - means[k, d]
                hu = t / v
                log_det += math.log(v)
                quad += hu * t
                ubuf[k, d] = hu
        else:
            for d in range(D):
                t = x[n, d] - means[k, d]
                quad += inv_var[k, d] * t * t
        l = log_const[k] - half * (quad + log_det)
        lbuf[k] = l
        if l > m or l != l:
            m = l
    # Pass 2: e_k = exp(l_k - m), S = sum e_k, score = -sum_k e_k F_k (h_k . t_k) / S;
    # without a factor and with h_k known, as the weighted sum of means
    # sum_k e_k h_k (mu_k - x).
    S = zero
    W = zero
    for d in range(D):
        acc[d] = zero
    for k in range(K):
        l = lbuf[k]
        if l == neg_inf:  # weight 0, or infinitely far: contributes nothing
            continue
        e = math.exp(l - m)  # NaN l (or m) gives NaN: the row's results are NaN
        S += e
        if has_factor:
            for i in range(D):
                sum_fu = zero
                for j in range(D):
                    sum_fu += factor[k, i, j] * ubuf[k, j]
                acc[i] -= e * sum_fu
        elif store_u:
            for d in range(D):
                acc[d] -= e * ubuf[k, d]
        elif iso:
            w = e * hbuf[k]
            W += w
            for d in range(D):
                acc[d] += w * means[k, d]
        else:
            for d in range(D):
                acc[d] += e * inv_var[k, d] * (means[k, d] - x[n, d])
    inv_S = one / S
    if store_u or has_factor or not iso:
        for d in range(D):
            score[n, d] = acc[d] * inv_S
    else:
        for d in range(D):
            score[n, d] = (acc[d] - W * x[n, d]) * inv_S
    log_prob[n] = m + math.log(S)


@jit(parallel=True, ieee_division=True)
def gmm_kernel(
    x,
    means,
    var,
    inv_var,
    factor,
    log_const,
    sigma2,
    score,
    log_prob,
    chunk,
    has_factor,
    iso,
    per_point,
    rows,
    upper,
    lanes,
):
    """score [N, D], log_prob [N] in the math dtype; chunk: points per work item, a multiple of
    the points per block (P, or lanes with a factor)."""
    N = x.shape[0]
    for c in prange((N + chunk - 1) // chunk):
        begin = c * chunk
        end = min(begin + chunk, N)
        if has_factor:
            _chunk_factor(
                x,
                means,
                var,
                inv_var,
                factor,
                log_const,
                sigma2,
                score,
                log_prob,
                begin,
                end,
                iso,
                per_point,
                upper,
                lanes,
            )
        else:
            _chunk_plain(x, means, var, inv_var, log_const, sigma2, score, log_prob, begin, end, iso, per_point, rows)


# ---------------------------------------------------------------------------------------
# Launcher: the contract's argument checks, dtype handling, then the kernel.


def check_args(x, means, var, inv_var, factor, log_const, sigma2) -> None:
    """The contract's checks of x and the mixture parameters (also used by the chain op)."""
    contract.check_args(
        x, means, var, inv_var, factor, log_const, sigma2, device_type="cpu", kernels="the numba kernels"
    )


def _along_rows(K: int, D: int) -> bool:
    """Whether the kernel reads x row by row (no transposed copy; sums over d vectorised):
    the faster layout once D is large against K (measured)."""
    return D >= 64 or (D >= 32 and K <= D)


def _factor_lanes(K: int, D: int) -> int:
    """Points per block with a factor, a multiple of P: 256, so the loops of the products run
    long (measured: twice the speed of 64 at D = 784), fewer where the [K, D, lanes] buffer
    would pass 4M values."""
    return max(P, min(256, (1 << 22) // (K * D) // P * P))


def _chunk_size(N: int, work: int, block: int) -> int:
    """Points per work item: about _CHUNK_WORK operations, whole blocks, and a number of items
    that the threads share evenly (numba hands each thread an equal range of them)."""
    threads = numba.get_num_threads()
    items = -(-N * work // _CHUNK_WORK)
    items = -(-items // threads) * threads
    per_item = -(-N // items)  # ceil(N / items)
    return -(-per_item // block) * block


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@torch.library.custom_op(
    "scorefast_numba::gmm_score", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["gmm_score"]
)
def gmm_score(x, means, var, inv_var, factor, log_const, sigma2):
    """(score [N, D], log_prob [N]) in x's dtype; parameters in the math dtype (gmm.h)."""
    check_args(x, means, var, inv_var, factor, log_const, sigma2)
    N, D = x.shape
    K = means.shape[0]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    np_acc = np.float64 if acc == torch.float64 else np.float32
    score = torch.empty((N, D), dtype=acc)
    log_prob = torch.empty((N,), dtype=acc)
    if N > 0:
        sync_threads()
        xs = _np(x.to(acc))  # 16-bit: a float32 copy
        fs = _np(factor) if factor is not None else np.empty((0, 0, 0), np_acc)
        s2 = _np(sigma2) if sigma2 is not None else np.empty(0, np_acc)
        lanes = _factor_lanes(K, D) if factor is not None else P
        chunk = _chunk_size(N, K * D * (D if factor is not None else 1), lanes)
        gmm_kernel(
            xs,
            _np(means),
            _np(var),
            _np(inv_var),
            fs,
            _np(log_const),
            s2,
            score.numpy(),
            log_prob.numpy(),
            chunk,
            factor is not None,
            var.shape[1] == 1,
            sigma2 is not None,
            _along_rows(K, D),
            factor is not None and upper_triangular(fs),
            lanes,
        )
    if x.dtype != acc:  # 16-bit storage: float32 math, rounded back by torch (RNE)
        return score.to(x.dtype), log_prob.to(x.dtype)
    return score, log_prob
