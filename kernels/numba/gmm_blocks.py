"""gmm_score's kernel, without a factor: blocks of P = 64 points, two passes over the
components per block:

  pass 1: every log-joint l_k into [K, P] and the max m over k (a NaN sticks);
  pass 2: e_k = exp(l_k - m) (0 for l_k = -inf), S = sum_k e_k, the score from the weights.

Two layouts, the branches on the covariance case outside their inner loops:
  lanes (smaller D): x copied transposed into [D, P], so the inner loops run over the points
    (vectorised, every sum in order); quad_k accumulates over d for all k at once and the
    score is formed one coordinate at a time: the buffers are [K, P];
  rows (larger D; gmm._along_rows): the sums over d run along the rows of x, vectorised with
    reassociation (in the order fixed by the compiled loop), four points per pass over the
    means; the rest as the lanes'.
With a factor, gmm_factor.py. Each lane is one point computed alone (the last block of a range
is padded with copies of a real point, whose results are dropped), so no result depends on
how points are chunked.
"""

from __future__ import annotations

import numpy as np

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
