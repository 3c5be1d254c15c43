"""gmm_chain in numba: ``scorefast_numba::gmm_chain_`` (schema of scorefast.chain).

T Langevin steps per particle with the state kept in local buffers (semantics of the C++
kernel, csrc/include/scorefast/chain.h):

    ULA / annealed:  x <- x + a_t s_t(x) + sqrt(2 a_t) z(seed, t0 + t, p)
                     s_t = score of the mixture noised by sigma2_t (0: the mixture itself)
    MALA:            y = x + a_t s(x) + sqrt(2 a_t) z, accepted when
                     log u < log p(y) - log p(x) - |x - y - a_t s(y)|^2 / (4 a_t) + |z|^2 / 2
                     (in float64), u = uniform(word 0 of Philox group ceil(D/4)) at (p, t0 + t);
                     a NaN ratio is a rejection.

The score and log-density come from the gmm_score kernel's per-point function (per-point
form of the parameters, sigma2_t added in the kernel), the normals and the uniform from the
noise helpers, so the chain equals T single langevin_step + gmm_score calls. Math in
float32 (float64 for float64 storage); with float16/bfloat16 storage the state (and the
MALA proposal) is rounded to the storage type after every step, as T separate calls would
store it.

Particles are split into fixed chunks for the threads; each particle is computed on its
own, so no result depends on the chunking or thread count.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import prange

from ...ops import chain as contract
from .gmm import gmm_point
from .noise import fill_normals, jit, key_words, particle_words, sync_threads, uniform

# How the state is stored between steps: in the math type itself, or rounded to 16 bits.
_NATIVE, _FLOAT16, _BFLOAT16 = 0, 1, 2
_STORAGE_KIND = {torch.float32: _NATIVE, torch.float64: _NATIVE, torch.float16: _FLOAT16, torch.bfloat16: _BFLOAT16}
_FLOAT16_MAX = 65504.0
_BFLOAT16_MAX = 3.3895313892515355e38  # (2^8 - 1) 2^120

# Work items aim at about this many (step, component) evaluations, as the C++ op's grain.
_CHUNK_WORK = 1 << 14


@jit(helper=True)
def round_to_storage(v, storage):
    """v rounded to nearest even in float16 / bfloat16 (``storage``), returned in v's type.

    numba has no 16-bit float types: the rounding is done on the float64 value, where
    scaling by the quantum of v's binade is exact. Overflow gives inf; NaN stays NaN.
    """
    if storage == _NATIVE or not math.isfinite(v):
        return v
    w = np.float64(v)
    e = math.frexp(w)[1] - 1  # |w| in [2^e, 2^(e+1))
    if storage == _FLOAT16:
        q = math.ldexp(1.0, max(e, -14) - 10)  # 10 fraction bits; subnormals below 2^-14
        big = _FLOAT16_MAX
    else:
        q = math.ldexp(1.0, max(e, -126) - 7)
        big = _BFLOAT16_MAX
    r = w / q
    f = math.floor(r)
    rest = r - f
    if rest > 0.5 or (rest == 0.5 and 0.5 * f != math.floor(0.5 * f)):  # ties to even
        f += 1.0
    r = f * q
    if abs(r) > big:
        r = math.inf
    return np.float32(math.copysign(r, w))  # only float32 math has 16-bit storage


@jit(helper=True, ieee_division=True)
def _chain_range(
    x,
    means,
    var,
    factor,
    log_const,
    a_t,
    s2_t,
    mala,
    k0,
    k1,
    step0,
    offset,
    every,
    traj,
    accepted,
    storage,
    begin,
    end,
    has_factor,
    iso,
    zero,
    half,
    one,
    two,
    neg_inf,
    dim_f,
):
    """Particles [begin, end): all T steps each, state in (1, D) buffers (gmm_point's layout)."""
    K, D = means.shape
    T = a_t.shape[0]
    Q = (D + 3) // 4  # MALA's uniform: group Q of counter p', a group no normal draws from
    dt = means.dtype
    xs = np.empty((1, D), dt)
    sx = np.empty((1, D), dt)
    y = np.empty((1, D), dt)
    sy = np.empty((1, D), dt)
    lpx = np.empty(1, dt)
    lpy = np.empty(1, dt)
    z = np.empty(D, dt)
    lbuf = np.empty(K, dt)
    hbuf = np.empty(K, dt)
    ubuf = np.empty((K, D) if (has_factor or not iso) else (0, 0), dt)
    acc = np.empty(D, dt)
    for p in range(begin, end):
        for d in range(D):
            xs[0, d] = x[p, d]
        if mala:
            gmm_point(
                xs,
                means,
                var,
                var,
                factor,
                log_const,
                zero,
                sx,
                lpx,
                0,
                lbuf,
                hbuf,
                ubuf,
                acc,
                has_factor,
                True,
                iso,
                zero,
                half,
                one,
                neg_inf,
                dim_f,
            )
        count = 0
        pid = offset + np.uint64(p)
        for t in range(T):
            step = step0 + np.uint64(t)
            a = a_t[t]
            b = math.sqrt(two * a)
            fill_normals(z, 0, D, k0, k1, step, offset, p * D, D)
            if not mala:
                gmm_point(
                    xs,
                    means,
                    var,
                    var,
                    factor,
                    log_const,
                    s2_t[t],
                    sx,
                    lpx,
                    0,
                    lbuf,
                    hbuf,
                    ubuf,
                    acc,
                    has_factor,
                    True,
                    iso,
                    zero,
                    half,
                    one,
                    neg_inf,
                    dim_f,
                )
                for d in range(D):
                    xs[0, d] = round_to_storage(xs[0, d] + a * sx[0, d] + b * z[d], storage)
            else:
                for d in range(D):
                    y[0, d] = round_to_storage(xs[0, d] + a * sx[0, d] + b * z[d], storage)
                gmm_point(
                    y,
                    means,
                    var,
                    var,
                    factor,
                    log_const,
                    zero,
                    sy,
                    lpy,
                    0,
                    lbuf,
                    hbuf,
                    ubuf,
                    acc,
                    has_factor,
                    True,
                    iso,
                    zero,
                    half,
                    one,
                    neg_inf,
                    dim_f,
                )
                a64 = np.float64(a)
                back = 0.0
                fwd = 0.0
                for d in range(D):
                    r = np.float64(xs[0, d]) - np.float64(y[0, d]) - a64 * np.float64(sy[0, d])
                    back += r * r
                    zd = np.float64(z[d])
                    fwd += zd * zd
                log_alpha = np.float64(lpy[0]) - np.float64(lpx[0]) - back / (4.0 * a64) + 0.5 * fwd
                w0 = particle_words(k0, k1, step, pid, Q)[0]
                if math.log(np.float64(uniform(w0))) < log_alpha:  # NaN: false, a rejection
                    for d in range(D):
                        xs[0, d] = y[0, d]
                        sx[0, d] = sy[0, d]
                    lpx[0] = lpy[0]
                    count += 1
            if every > 0 and (t + 1) % every == 0:
                row = (t + 1) // every - 1
                for d in range(D):
                    traj[row, p, d] = xs[0, d]
        for d in range(D):
            x[p, d] = xs[0, d]
        if mala:
            accepted[p] = count


@jit(parallel=True, ieee_division=True)
def _chain_kernel(
    x,
    means,
    var,
    factor,
    log_const,
    a_t,
    s2_t,
    mala,
    k0,
    k1,
    step0,
    offset,
    every,
    traj,
    accepted,
    storage,
    chunk,
    has_factor,
    iso,
    zero,
    half,
    one,
    two,
    neg_inf,
    dim_f,
):
    # Fixed chunks of particles; the loop body is one call, which keeps the compile short.
    N = x.shape[0]
    for c in prange((N + chunk - 1) // chunk):
        begin = c * chunk
        _chain_range(
            x,
            means,
            var,
            factor,
            log_const,
            a_t,
            s2_t,
            mala,
            k0,
            k1,
            step0,
            offset,
            every,
            traj,
            accepted,
            storage,
            begin,
            min(begin + chunk, N),
            has_factor,
            iso,
            zero,
            half,
            one,
            two,
            neg_inf,
            dim_f,
        )


# ---------------------------------------------------------------------------------------
# Launcher: the contract's checks, dtype handling, then the kernel.


def _check(*args) -> None:
    contract.check_args(*args, device_type="cpu", kernels="the numba kernels")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


@torch.library.custom_op(
    "scorefast_numba::gmm_chain_",
    mutates_args=("x", "trajectory", "accepted"),
    device_types="cpu",
    schema=contract.SCHEMAS["gmm_chain_"],
)
def gmm_chain_(
    x,
    means,
    var,
    log_const,
    factor,
    step_size,
    sigma2,
    mala,
    seed,
    step_offset,
    particle_offset,
    trajectory_every,
    trajectory,
    accepted,
):
    """T steps of every particle of x [N, D] in place; parameters in per-point kernel form."""
    _check(
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
    T = step_size.numel()
    if N == 0 or T == 0:
        return
    acc = means.dtype
    np_acc = np.float64 if acc == torch.float64 else np.float32
    native = x.dtype == acc
    # 16-bit storage: the state runs in a float32 copy whose values stay representable in
    # x's dtype (rounded in the kernel), so copying back is exact.
    xw = x if native else x.to(acc)
    k = trajectory_every
    traj = trajectory if (k == 0 or native) else torch.empty(trajectory.shape, dtype=acc)
    sync_threads()
    k0, k1 = key_words(seed)
    K = means.shape[0]
    chunk = max(1, _CHUNK_WORK // max(1, T * K))
    empty_traj = np.empty((0, 0, 0), np_acc)
    _chain_kernel(
        xw.detach().numpy(),
        _np(means),
        _np(var),
        _np(factor) if factor is not None else np.empty((0, 0, 0), np_acc),
        _np(log_const),
        _np(step_size),
        _np(sigma2),
        bool(mala),
        k0,
        k1,
        np.uint64(step_offset),
        np.uint64(particle_offset),
        k,
        traj.detach().numpy() if k > 0 else empty_traj,
        accepted.detach().numpy() if mala else np.empty(0, np.int64),
        _STORAGE_KIND[x.dtype],
        chunk,
        factor is not None,
        var.shape[1] == 1,
        np_acc(0.0),
        np_acc(0.5),
        np_acc(1.0),
        np_acc(2.0),
        np_acc(-np.inf),
        np_acc(D),
    )
    if not native:
        x.copy_(xw)
        if k > 0:
            trajectory.copy_(traj)
