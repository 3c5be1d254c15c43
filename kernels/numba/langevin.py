"""langevin_step in numba: ``scorefast_numba::langevin_step`` and ``langevin_step_``.

    x_new = clamp(x + a_p·c_p·g + b_p·z),   g = s_u + w·(s_c − s_u)

Same semantics as the C++ CPU kernels: math in float32 (float64 for float64 storage;
float16/bfloat16 are widened to float32 here and rounded back by torch, RNE); the
clipping factor c_p comes from the norm of g per particle accumulated in float64
(a NaN norm gives a NaN factor); clamp keeps NaN; b == 0 with no per-particle b draws
no noise; an explicit ``noise`` replaces the contract's normals.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from ...ops import langevin as contract
from .noise import CHUNK, fill_normals, jit, key_words, sync_threads


@jit(helper=True)
def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)  # NaN compares false: stays NaN


@jit(helper=True)
def _update_run(x, s, sc, z, out, e0, z0, n, a, b, w, lo, hi, guided, use_noise):
    """out[e0 : e0 + n] = clamp(x + a·g + b·z) with z read from z[z0 : z0 + n].

    The clamp always runs: without bounds lo = -inf and hi = +inf leave every value
    (NaN included) unchanged, and one loop version less halves the JIT compile. Slices
    and a branch-free body per case let LLVM vectorize the loops.
    """
    xv, sv, ov = x[e0 : e0 + n], s[e0 : e0 + n], out[e0 : e0 + n]
    if guided:
        cv = sc[e0 : e0 + n]
        if use_noise:
            zv = z[z0 : z0 + n]
            for k in range(n):
                g = sv[k] + w * (cv[k] - sv[k])
                ov[k] = _clamp(xv[k] + a * g + b * zv[k], lo, hi)
        else:
            for k in range(n):
                g = sv[k] + w * (cv[k] - sv[k])
                ov[k] = _clamp(xv[k] + a * g, lo, hi)
    elif use_noise:
        zv = z[z0 : z0 + n]
        for k in range(n):
            ov[k] = _clamp(xv[k] + a * sv[k] + b * zv[k], lo, hi)
    else:
        for k in range(n):
            ov[k] = _clamp(xv[k] + a * sv[k], lo, hi)


@jit(parallel=True)
def _clip_factors(s, sc, guided, w, P, D, max_norm, factors):
    """factors[p] = max_norm / ‖g_p‖ where that is < 1, else 1 (NaN norm -> NaN)."""
    for p in prange(P):
        sum_sq = 0.0
        for d in range(D):
            e = p * D + d
            g = s[e]
            if guided:
                g = g + w * (sc[e] - g)
            gd = np.float64(g)
            sum_sq += gd * gd
        norm = np.sqrt(sum_sq)
        factors[p] = max_norm / norm if not (norm <= max_norm) else 1.0


@jit(helper=True)
def _langevin_chunk(
    x,
    s,
    sc,
    noise,
    a_pp,
    b_pp,
    factors,
    out,
    D,
    a,
    b,
    w,
    lo,
    hi,
    guided,
    use_noise,
    explicit_noise,
    has_a_pp,
    has_b_pp,
    has_factors,
    k0,
    k1,
    step,
    offset,
    begin,
    n,
):
    """The update of the flattened elements [begin, begin + n)."""
    # The chunk's noise first (contract normals are float32 on every backend; widened
    # here for float64 math), then one fused pass. A single z buffer and a single update
    # call keep the JIT compile short.
    z = np.empty(n if use_noise else 0, x.dtype)
    if use_noise:
        if explicit_noise:
            for k in range(n):
                z[k] = noise[begin + k]
        else:
            fill_normals(z, 0, D, k0, k1, step, offset, begin, n)
    uniform_coefs = not (has_a_pp or has_b_pp or has_factors)
    # Per-particle coefficients: one run per particle segment of the chunk.
    p = begin // D
    d = begin - p * D
    i = 0
    while i < n:
        m = n - i if uniform_coefs else min(n - i, D - d)
        a_p = a_pp[p] if has_a_pp else a
        if has_factors:
            a_p = a_p * factors[p]
        b_p = b_pp[p] if has_b_pp else b
        _update_run(x, s, sc, z, out, begin + i, i, m, a_p, b_p, w, lo, hi, guided, use_noise)
        i += m
        d = 0
        p += 1


@jit(parallel=True)
def _langevin_kernel(
    x,
    s,
    sc,
    noise,
    a_pp,
    b_pp,
    factors,
    out,
    D,
    a,
    b,
    w,
    lo,
    hi,
    guided,
    use_noise,
    explicit_noise,
    has_a_pp,
    has_b_pp,
    has_factors,
    k0,
    k1,
    step,
    offset,
    chunk,
):
    # Fixed chunks: the numbers never depend on the thread count. The loop body is one
    # call, which keeps numba's parallel compile short.
    total = out.shape[0]
    for c in prange((total + chunk - 1) // chunk):
        begin = c * chunk
        _langevin_chunk(
            x,
            s,
            sc,
            noise,
            a_pp,
            b_pp,
            factors,
            out,
            D,
            a,
            b,
            w,
            lo,
            hi,
            guided,
            use_noise,
            explicit_noise,
            has_a_pp,
            has_b_pp,
            has_factors,
            k0,
            k1,
            step,
            offset,
            begin,
            min(chunk, total - begin),
        )


# ---------------------------------------------------------------------------------------
# Launcher: the contract's argument checks, dtype handling, then the kernels.


def _check(*args, inplace: bool = False) -> None:
    contract.check_args(*args, inplace=inplace, device_type="cpu", kernels="the numba kernels")


def _flat(t: torch.Tensor | None, dtype: torch.dtype, empty: np.ndarray) -> np.ndarray:
    """t as a 1-D C-contiguous numpy array of ``dtype`` (a view when possible), or ``empty``.

    Unused arrays are passed as ``empty`` so every call has one signature per math dtype
    (one JIT compile each, not one per combination of options).
    """
    if t is None:
        return empty
    return t.detach().to(dtype).contiguous().view(-1).numpy()


def _run(
    x,
    score,
    score_cond,
    guidance,
    step_size,
    a_pp,
    noise_scale,
    b_pp,
    noise,
    seed,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
    out_np: np.ndarray | None,
) -> np.ndarray:
    """Computes the update of x as a flat numpy array of the math dtype.

    Writes into ``out_np`` when given (it may be x's own buffer: each element is read
    before it is written), else into a fresh array.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    np_acc = np.float64 if acc == torch.float64 else np.float32
    P = x.shape[0]
    D = x.numel() // P if P else 0
    empty = np.empty(0, np_acc)
    xs = _flat(x, acc, empty)
    out = np.empty(xs.shape[0], np_acc) if out_np is None else out_np
    if P * D == 0:
        return out
    sync_threads()
    ss = _flat(score, acc, empty)
    scs = _flat(score_cond, acc, empty)
    use_noise = b_pp is not None or noise_scale != 0.0
    explicit = noise is not None and use_noise
    zs = _flat(noise if explicit else None, acc, empty)
    aps = _flat(a_pp, acc, empty)
    bps = _flat(b_pp, acc, empty)
    guided = score_cond is not None
    w = np_acc(guidance)
    factors = empty
    if max_score_norm is not None:
        factors = np.empty(P, np_acc)
        _clip_factors(ss, scs, guided, w, P, D, np.float64(max_score_norm), factors)
    with np.errstate(over="ignore"):  # a bound beyond the math dtype's range rounds to inf, as in C++
        lo = np_acc(-np.inf if clamp_min is None else clamp_min)
        hi = np_acc(np.inf if clamp_max is None else clamp_max)
    k0, k1 = key_words(seed)
    _langevin_kernel(
        xs,
        ss,
        scs,
        zs,
        aps,
        bps,
        factors,
        out,
        D,
        np_acc(step_size),
        np_acc(noise_scale),
        w,
        lo,
        hi,
        guided,
        use_noise,
        explicit,
        a_pp is not None,
        b_pp is not None,
        max_score_norm is not None,
        k0,
        k1,
        np.uint64(step),
        np.uint64(particle_offset),
        CHUNK,
    )
    return out


@torch.library.custom_op(
    "scorefast_numba::langevin_step", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["langevin_step"]
)
def langevin_step(
    x,
    score,
    score_cond,
    guidance,
    step_size,
    step_size_per_particle,
    noise_scale,
    noise_scale_per_particle,
    noise,
    seed,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
):
    """Out of place: a new contiguous tensor of x's shape and dtype."""
    args = (
        x,
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
    _check(*args)
    common = (
        x,
        score,
        score_cond,
        guidance,
        step_size,
        step_size_per_particle,
        noise_scale,
        noise_scale_per_particle,
        noise,
        seed,
        step,
        particle_offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    )
    if x.dtype in (torch.float32, torch.float64):
        out = torch.empty(x.shape, dtype=x.dtype)
        _run(*common, out_np=out.view(-1).numpy())
        return out
    # 16-bit storage: float32 math, rounded back by torch (round to nearest even).
    return torch.from_numpy(_run(*common, out_np=None)).view(x.shape).to(x.dtype)


@torch.library.custom_op(
    "scorefast_numba::langevin_step_",
    mutates_args=("x",),
    device_types="cpu",
    schema=contract.SCHEMAS["langevin_step_"],
)
def langevin_step_(
    x,
    score,
    score_cond,
    guidance,
    step_size,
    step_size_per_particle,
    noise_scale,
    noise_scale_per_particle,
    noise,
    seed,
    step,
    particle_offset,
    clamp_min,
    clamp_max,
    max_score_norm,
):
    """In place into x (any strides)."""
    _check(
        x,
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
        inplace=True,
    )
    common = (
        x,
        score,
        score_cond,
        guidance,
        step_size,
        step_size_per_particle,
        noise_scale,
        noise_scale_per_particle,
        noise,
        seed,
        step,
        particle_offset,
        clamp_min,
        clamp_max,
        max_score_norm,
    )
    if x.dtype in (torch.float32, torch.float64) and x.is_contiguous():
        _run(*common, out_np=x.detach().view(-1).numpy())  # elementwise: safe to alias
        return
    result = _run(*common, out_np=None)
    x.copy_(torch.from_numpy(result).view(x.shape))  # copy_ rounds 16-bit RNE and follows strides
