"""gmm_score's kernel: blocks of P = 64 points, two passes over the components per block:

  pass 1: every log-joint l_k into [K, P] and the max m over k (a NaN sticks);
  pass 2: e_k = exp(l_k - m) (0 for l_k = -inf), S = sum_k e_k, the score from the weights.

Three layouts, the branches on the covariance case outside their inner loops:
  lanes (no factor, smaller D): x copied transposed into [D, P], so the inner loops run over
    the points (vectorised, every sum in order); quad_k accumulates over d for all k at
    once and the score is formed one coordinate at a time: the buffers are [K, P];
  rows (no factor, larger D; gmm._along_rows): the sums over d run along the rows of x,
    vectorised with reassociation (in the order fixed by the compiled loop), four points
    per pass over the means; the rest as the lanes';
  factor: lanes, blocks of up to 256 points (gmm._factor_lanes), with t_k = F_k^T (x - mu_k)
    and F_k u_k as tiled products over the lanes (the exact-zero terms of upper triangular
    factors left out), u_k = h_k . t_k kept for pass 2 ([K, D, lanes]).

Each lane is one point computed alone (the last block of a range is padded with copies of a
real point, whose results are dropped), so no result depends on how points are chunked.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from .noise import jit
from .vmath import vexp, vlog

P = 64  # points per block: a few vectors of lanes, a constant trip count for the compiler


@jit(helper=True)
def _load_block(x, sigma2, n0, nb, per_point, rows, xs, s2):
    """xs[d, p] = x[n0 + p, d] (unless rows) and s2[p] = sigma2[n0 + p]; lanes past nb repeat
    point n0."""
    D = 0 if rows else x.shape[1]
    if nb == P and D <= 16:  # a whole block of few coordinates: strided reads along the lanes
        for d in range(D):
            for p in range(P):
                xs[d, p] = x[n0 + p, d]
    else:
        for d0 in range(0, D, 16):  # 16 coordinates at a time: the lines of xs in use stay in L1
            d1 = min(D, d0 + 16)
            for p in range(P):
                n = n0 + p if p < nb else n0
                for d in range(d0, d1):
                    xs[d, p] = x[n, d]
    if per_point:
        for p in range(P):
            s2[p] = sigma2[n0 + p if p < nb else n0]


@jit(helper=True)
def _running_max(l, m):
    """m = max_k l_k over P lanes (a NaN sticks)."""
    neg_inf = l.dtype.type(-np.inf)
    m[:] = neg_inf
    for k in range(l.shape[0]):
        for p in range(P):
            lk = l[k, p]
            mp = m[p]
            m[p] = lk if (lk > mp) | (lk != lk) else mp


@jit(helper=True)
def _weights_all(l, m, h, S, W, iso):
    """l_k -> e_k (isotropic: w_k = e_k h_k, W = sum_k w_k), S = sum_k e_k, over P lanes."""
    zero = l.dtype.type(0.0)
    neg_inf = l.dtype.type(-np.inf)
    S[:] = zero
    W[:] = zero
    for k in range(l.shape[0]):
        for p in range(P):
            lk = l[k, p]
            ek = zero if lk == neg_inf else vexp(lk - m[p])
            S[p] += ek
            l[k, p] = ek
        if iso:
            for p in range(P):
                w = l[k, p] * h[k, p]
                l[k, p] = w
                W[p] += w


@jit(helper=True, ieee_division=True)
def _quad_lanes(xs, s2, means, var, inv_var, l, ld, iso, per_point):
    """l[k, p] = sum_d h_kd (x_pd - mu_kd)^2 (isotropic: without h), ld[k, p] = sum_d log(var_kd
    + s2_p) (diagonal, per-point sigma), over d in order for all k at once."""
    K, D = means.shape
    l[:] = 0
    ld[:] = 0
    for d in range(D):
        for k in range(K):
            mu = means[k, d]
            if iso:
                for p in range(P):
                    t = xs[d, p] - mu
                    l[k, p] += t * t
            elif per_point:
                vk = var[k, d]
                for p in range(P):
                    v = vk + s2[p]
                    t = xs[d, p] - mu
                    l[k, p] += t / v * t
                    ld[k, p] += vlog(v)
            else:
                hk = inv_var[k, d]
                for p in range(P):
                    t = xs[d, p] - mu
                    l[k, p] += hk * t * t


@jit(helper=True, ieee_division=True, reassoc=True)
def _quad_rows(x, n0, nb, s2, means, var, inv_var, l, ld, iso, per_point):
    """_quad_lanes' sums along the rows of x (no transposed copy), four points per pass over
    mu_k (a quarter of the reads of the means), each a vectorised sum over d (reassociated);
    the lanes past nb repeat point n0 + nb - 1."""
    K, D = means.shape
    zero = means.dtype.type(0.0)
    for p in range(0, P, 4):
        if p >= nb:  # padding: a copy of a real lane
            for k in range(K):
                for j in range(4):
                    l[k, p + j] = l[k, nb - 1]
                    if per_point and not iso:
                        ld[k, p + j] = ld[k, nb - 1]
            continue
        r0, r1 = n0 + p, n0 + min(p + 1, nb - 1)
        r2, r3 = n0 + min(p + 2, nb - 1), n0 + min(p + 3, nb - 1)
        for k in range(K):
            q0 = q1 = q2 = q3 = zero
            if iso:
                for d in range(D):
                    mu = means[k, d]
                    t0 = x[r0, d] - mu
                    t1 = x[r1, d] - mu
                    t2 = x[r2, d] - mu
                    t3 = x[r3, d] - mu
                    q0 += t0 * t0
                    q1 += t1 * t1
                    q2 += t2 * t2
                    q3 += t3 * t3
            elif per_point:  # one point at a time: the log dominates
                for j in range(4):
                    r = n0 + min(p + j, nb - 1)
                    sj = s2[min(p + j, nb - 1)]
                    q = zero
                    s = zero
                    for d in range(D):
                        v = var[k, d] + sj
                        t = x[r, d] - means[k, d]
                        q += t / v * t
                        s += vlog(v)
                    l[k, p + j] = q
                    ld[k, p + j] = s
                continue
            else:
                for d in range(D):
                    mu = means[k, d]
                    hk = inv_var[k, d]
                    t0 = x[r0, d] - mu
                    t1 = x[r1, d] - mu
                    t2 = x[r2, d] - mu
                    t3 = x[r3, d] - mu
                    q0 += hk * t0 * t0
                    q1 += hk * t1 * t1
                    q2 += hk * t2 * t2
                    q3 += hk * t3 * t3
            l[k, p] = q0
            l[k, p + 1] = q1
            l[k, p + 2] = q2
            l[k, p + 3] = q3


@jit(helper=True, ieee_division=True)
def _log_joints(l, ld, h, s2, var, inv_var, log_const, D, iso, per_point):
    """quad_k (in l) -> l_k = log_const_k - (h_k quad_k + log_det) / 2; h [K, P]: the isotropic
    precisions."""
    K = l.shape[0]
    dt = l.dtype
    half, one, dim = dt.type(0.5), dt.type(1.0), dt.type(D)
    for k in range(K):
        c = log_const[k]
        if iso and per_point:
            vk = var[k, 0]
            for p in range(P):
                v = vk + s2[p]
                hp = one / v
                h[k, p] = hp
                l[k, p] = c - half * (hp * l[k, p] + dim * vlog(v))
        elif iso:
            hk = inv_var[k, 0]
            for p in range(P):
                h[k, p] = hk
                l[k, p] = c - half * (hk * l[k, p])
        elif per_point:
            for p in range(P):
                l[k, p] = c - half * (l[k, p] + ld[k, p])
        else:
            for p in range(P):
                l[k, p] = c - half * l[k, p]


@jit(helper=True, ieee_division=True)
def _score_lanes(xs, s2, means, var, inv_var, l, W, S, score, n0, nb, iso, per_point, a):
    """score[n0 + p] from the weights in l: one coordinate at a time, all lanes at once."""
    K, D = means.shape
    one = means.dtype.type(1.0)
    for d in range(D):
        a[:] = 0
        for k in range(K):
            mu = means[k, d]
            if iso:
                for p in range(P):
                    a[p] += l[k, p] * mu
            elif per_point:
                vk = var[k, d]
                for p in range(P):
                    a[p] -= l[k, p] * ((xs[d, p] - mu) / (vk + s2[p]))
            else:
                hk = inv_var[k, d]
                for p in range(P):
                    a[p] += l[k, p] * hk * (mu - xs[d, p])
        for p in range(nb):
            sd = a[p] - W[p] * xs[d, p] if iso else a[p]
            score[n0 + p, d] = sd * (one / S[p])


@jit(helper=True, ieee_division=True)
def _score_rows(x, s2, means, var, inv_var, l, W, S, score, n0, nb, iso, per_point, a0, a1, a2, a3):
    """_score_lanes along the rows of x and score, four points per pass over mu_k."""
    K, D = means.shape
    one = means.dtype.type(1.0)
    for p in range(0, nb, 4):
        r0, r1 = n0 + p, n0 + min(p + 1, nb - 1)
        r2, r3 = n0 + min(p + 2, nb - 1), n0 + min(p + 3, nb - 1)
        a0[:] = 0
        a1[:] = 0
        a2[:] = 0
        a3[:] = 0
        k = 0
        while k + 2 <= K and not per_point:  # two components per pass over the sums
            w0, w1, w2, w3 = l[k, p], l[k, p + 1], l[k, p + 2], l[k, p + 3]
            v0, v1, v2, v3 = l[k + 1, p], l[k + 1, p + 1], l[k + 1, p + 2], l[k + 1, p + 3]
            if iso:
                for d in range(D):
                    mu = means[k, d]
                    nu = means[k + 1, d]
                    a0[d] = (a0[d] + w0 * mu) + v0 * nu
                    a1[d] = (a1[d] + w1 * mu) + v1 * nu
                    a2[d] = (a2[d] + w2 * mu) + v2 * nu
                    a3[d] = (a3[d] + w3 * mu) + v3 * nu
            else:
                for d in range(D):
                    mu, hk = means[k, d], inv_var[k, d]
                    nu, gk = means[k + 1, d], inv_var[k + 1, d]
                    a0[d] = (a0[d] + w0 * hk * (mu - x[r0, d])) + v0 * gk * (nu - x[r0, d])
                    a1[d] = (a1[d] + w1 * hk * (mu - x[r1, d])) + v1 * gk * (nu - x[r1, d])
                    a2[d] = (a2[d] + w2 * hk * (mu - x[r2, d])) + v2 * gk * (nu - x[r2, d])
                    a3[d] = (a3[d] + w3 * hk * (mu - x[r3, d])) + v3 * gk * (nu - x[r3, d])
            k += 2
        while k < K:
            w0, w1, w2, w3 = l[k, p], l[k, p + 1], l[k, p + 2], l[k, p + 3]
            if iso:
                for d in range(D):
                    mu = means[k, d]
                    a0[d] += w0 * mu
                    a1[d] += w1 * mu
                    a2[d] += w2 * mu
                    a3[d] += w3 * mu
            elif per_point:
                s0, s1, s2_, s3 = s2[p], s2[p + 1], s2[p + 2], s2[p + 3]
                for d in range(D):
                    mu = means[k, d]
                    vk = var[k, d]
                    a0[d] -= w0 * ((x[r0, d] - mu) / (vk + s0))
                    a1[d] -= w1 * ((x[r1, d] - mu) / (vk + s1))
                    a2[d] -= w2 * ((x[r2, d] - mu) / (vk + s2_))
                    a3[d] -= w3 * ((x[r3, d] - mu) / (vk + s3))
            else:
                for d in range(D):
                    mu = means[k, d]
                    hk = inv_var[k, d]
                    a0[d] += w0 * hk * (mu - x[r0, d])
                    a1[d] += w1 * hk * (mu - x[r1, d])
                    a2[d] += w2 * hk * (mu - x[r2, d])
                    a3[d] += w3 * hk * (mu - x[r3, d])
            k += 1
        for j in range(min(4, nb - p)):
            acc = (a0, a1, a2, a3)[j]
            n = n0 + p + j
            r = one / S[p + j]
            Wp = W[p + j]
            for d in range(D):
                sd = acc[d] - Wp * x[n, d] if iso else acc[d]
                score[n, d] = sd * r


@jit(helper=True, ieee_division=True)
def _chunk_plain(x, means, var, inv_var, log_const, sigma2, score, log_prob, begin, end, iso, per_point, rows):
    """Points [begin, end), no factor: isotropic or diagonal, folded or per-point sigma.
    rows: passes 1 and 2 along the rows of x (larger D), else on a transposed copy."""
    K, D = means.shape
    dt = means.dtype
    xs = np.empty((0 if rows else D, P), dt)
    s2 = np.zeros(P, dt)
    l = np.empty((K, P), dt)  # quad_k, then l_k, then e_k (isotropic: w_k = e_k h_k)
    h = np.empty((K if iso else 0, P), dt)  # isotropic precisions
    ld = np.empty((K if (per_point and not iso) else 0, P), dt)  # diagonal per-point log-determinants
    m = np.empty(P, dt)
    S = np.empty(P, dt)
    W = np.empty(P, dt)
    a = np.empty(D if rows else P, dt)
    a1 = np.empty(D if rows else 0, dt)
    a2 = np.empty(D if rows else 0, dt)
    a3 = np.empty(D if rows else 0, dt)
    for n0 in range(begin, end, P):
        nb = min(P, end - n0)
        _load_block(x, sigma2, n0, nb, per_point, rows, xs, s2)
        if rows:
            _quad_rows(x, n0, nb, s2, means, var, inv_var, l, ld, iso, per_point)
        else:
            _quad_lanes(xs, s2, means, var, inv_var, l, ld, iso, per_point)
        _log_joints(l, ld, h, s2, var, inv_var, log_const, D, iso, per_point)
        _running_max(l, m)
        # Pass 2: the weights, then the score.
        _weights_all(l, m, h, S, W, iso)
        if rows:
            _score_rows(x, s2, means, var, inv_var, l, W, S, score, n0, nb, iso, per_point, a, a1, a2, a3)
        else:
            _score_lanes(xs, s2, means, var, inv_var, l, W, S, score, n0, nb, iso, per_point, a)
        for p in range(nb):
            log_prob[n0 + p] = m[p] + vlog(S[p])


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
                    out[r, p] = (((out[r, p] + src[i, p] * c0) + src[i + 1, p] * c1) + src[i + 2, p] * c2) \
                        + src[i + 3, p] * c3
        for i in range(i4, ib):
            for r in range(r0, r1):
                c = M[r, i] if trans else M[i, r]
                for p in range(L):
                    out[r, p] += src[i, p] * c


@jit(helper=True, ieee_division=True)
def _chunk_factor(x, means, var, inv_var, factor, log_const, sigma2, score, log_prob, begin, end, iso,
                  per_point, upper, L):
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
            _load_block(x, sigma2, n0 + p0 if real else n0, min(P, nb - p0) if real else 0, per_point, False,
                        xs[:, p0:p0 + P], s2[p0:p0 + P])
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


@jit(parallel=True, ieee_division=True)
def gmm_kernel(x, means, var, inv_var, factor, log_const, sigma2, score, log_prob, chunk, has_factor, iso,
               per_point, rows, upper, lanes):
    """score [N, D], log_prob [N] in the math dtype; chunk: points per work item, a multiple of
    the points per block (P, or lanes with a factor)."""
    N = x.shape[0]
    for c in prange((N + chunk - 1) // chunk):
        begin = c * chunk
        end = min(begin + chunk, N)
        if has_factor:
            _chunk_factor(x, means, var, inv_var, factor, log_const, sigma2, score, log_prob, begin, end, iso,
                          per_point, upper, lanes)
        else:
            _chunk_plain(x, means, var, inv_var, log_const, sigma2, score, log_prob, begin, end, iso, per_point,
                         rows)
