"""gmm_score's kernel with a factor F_k: gmm_blocks' lanes layout, in blocks of up to 256
points (gmm._factor_lanes), component by component:

  pass 1: t_k = F_k^T (x - mu_k) as a tiled product over the lanes, u_k = h_k . t_k (kept,
          [K, D, lanes]), l_k and the max m over k (a NaN sticks);
  pass 2: e_k = exp(l_k - m), S = sum_k e_k, score = -sum_k e_k F_k u_k / S.

The products leave out the exact-zero terms of upper triangular factors (the Cholesky form of
a folded sigma), which changes no sum. Each lane is one point computed alone.
"""

from __future__ import annotations

import numpy as np

from .gmm_blocks import P, _load_block
from .noise import jit
from .vmath import vexp, vlog


@jit()
def upper_triangular(factor):
    """Whether every F_k is upper triangular (the Cholesky form of a folded sigma)."""
    K, D = factor.shape[0], factor.shape[1]
    for k in range(K):
        for i in range(1, D):
            for j in range(i):
                if factor[k, i, j] != 0:
                    return False
    return True


@jit(helper=True)
def _lanes_matmul(M, src, out, trans, upper):
    """out[r, p] = sum_i c_ir src[i, p] summed over i in order, c = M (trans: M^T). Four terms
    per pass over a row of out, and 16 rows of out at a time, so the rows in use stay in L1.
    upper: M is upper triangular, so the terms that are exact zeros (all but a corner of a
    16-row tile) are left out, which changes no sum."""
    D, L = src.shape
    for r0 in range(0, D, 16):
        r1 = min(D, r0 + 16)
        out[r0:r1] = 0
        ia = r0 if (upper and trans) else 0
        ib = r1 if (upper and not trans) else D
        i4 = ib - (ib - ia) % 4
        for i in range(ia, i4, 4):
            for r in range(r0, r1):
                if trans:
                    c0, c1, c2, c3 = M[r, i], M[r, i + 1], M[r, i + 2], M[r, i + 3]
                else:
                    c0, c1, c2, c3 = M[i, r], M[i + 1, r], M[i + 2, r], M[i + 3, r]
                for p in range(L):
                    out[r, p] = (((out[r, p] + src[i, p] * c0) + src[i + 1, p] * c1) + src[i + 2, p] * c2) + src[
                        i + 3, p
                    ] * c3
        for i in range(i4, ib):
            for r in range(r0, r1):
                c = M[r, i] if trans else M[i, r]
                for p in range(L):
                    out[r, p] += src[i, p] * c


@jit(helper=True, ieee_division=True)
def _chunk_factor(
    x, means, var, inv_var, factor, log_const, sigma2, score, log_prob, begin, end, iso, per_point, upper, L
):
    """Points [begin, end) with a factor F_k (any precision form), L points per block; upper:
    every F_k is upper triangular."""
    K, D = means.shape
    dt = means.dtype
    zero, half, one, dim = dt.type(0.0), dt.type(0.5), dt.type(1.0), dt.type(D)
    neg_inf = dt.type(-np.inf)
    xs = np.empty((D, L), dt)
    s2 = np.zeros(L, dt)
    diff = np.empty((D, L), dt)  # x - mu_k, then F_k u_k
    u = np.empty((K, D, L), dt)  # t_k = F_k^T (x - mu_k), then u_k = h_k . t_k
    l = np.empty((K, L), dt)  # l_k, then e_k
    acc = np.empty((D, L), dt)
    hv = np.empty(L, dt)
    ld = np.empty(L, dt)
    q = np.empty(L, dt)
    m = np.empty(L, dt)
    S = np.empty(L, dt)
    for n0 in range(begin, end, L):
        nb = min(L, end - n0)
        for p0 in range(0, L, P):  # P lanes per load; lanes past nb repeat point n0
            real = p0 < nb
            _load_block(
                x,
                sigma2,
                n0 + p0 if real else n0,
                min(P, nb - p0) if real else 0,
                per_point,
                False,
                xs[:, p0 : p0 + P],
                s2[p0 : p0 + P],
            )
        # Pass 1, component by component.
        for k in range(K):
            for i in range(D):
                mu = means[k, i]
                for p in range(L):
                    diff[i, p] = xs[i, p] - mu
            _lanes_matmul(factor[k], diff, u[k], False, upper)
            q[:] = zero
            ld[:] = zero
            if iso and per_point:
                vk = var[k, 0]
                for p in range(L):
                    v = vk + s2[p]
                    hv[p] = one / v
                    ld[p] = dim * vlog(v)
            elif iso:
                hv[:] = inv_var[k, 0]
            for j in range(D):
                if not iso and per_point:
                    vk = var[k, j]
                    for p in range(L):
                        v = vk + s2[p]
                        hv[p] = one / v
                        ld[p] += vlog(v)
                elif not iso:
                    hv[:] = inv_var[k, j]
                for p in range(L):
                    t = u[k, j, p]
                    hu = hv[p] * t
                    q[p] += hu * t
                    u[k, j, p] = hu
            c = log_const[k]
            for p in range(L):
                l[k, p] = c - half * (q[p] + ld[p])
        # Pass 2: score = -sum_k e_k F_k u_k / S; a component of weight 0 adds nothing (not
        # even 0 * inf).
        m[:] = neg_inf
        for k in range(K):
            for p in range(L):
                lk = l[k, p]
                mp = m[p]
                m[p] = lk if (lk > mp) | (lk != lk) else mp
        S[:] = zero
        for k in range(K):
            for p in range(L):
                lk = l[k, p]
                ek = zero if lk == neg_inf else vexp(lk - m[p])
                S[p] += ek
                l[k, p] = ek
        acc[:] = zero
        for k in range(K):
            _lanes_matmul(factor[k], u[k], diff, True, upper)
            for i in range(D):
                for p in range(L):
                    e = l[k, p]
                    acc[i, p] -= zero if e == zero else e * diff[i, p]
        for i in range(D):
            for p in range(nb):
                score[n0 + p, i] = acc[i, p] * (one / S[p])
        for p in range(nb):
            log_prob[n0 + p] = m[p] + vlog(S[p])
