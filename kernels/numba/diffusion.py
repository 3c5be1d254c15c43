"""reverse_step and snr_corrector_step in numba: ``scorefast_numba::reverse_step``,
``reverse_step_``, ``snr_corrector_step`` and ``snr_corrector_step_``.

    reverse_step:        x_new = clamp(c_x·x + c_s·c_p·g + b·z),   g = s_u + w·(s_c − s_u)
    snr_corrector_step:  the same with c_x = 1, c_s = ε_p, b = sqrt(2 ε_p) per particle

Same semantics as the C++ CPU kernels: math in float32 (float64 for float64 storage;
float16/bfloat16 are widened to float32 here and rounded back by torch, RNE); per-particle
norms accumulate in float64; clamp keeps NaN; b == 0 with no per-particle b draws no noise.
The corrector's first pass regenerates each particle's contract normals for their norm (the
noise is never stored); its step sizes are formed by the contract's ``corrector_coefficients``.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from ...ops import diffusion as contract
from .noise import CHUNK, fill_normals, jit, key_words, sync_threads


@jit(helper=True)
def _clamp(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)  # NaN compares false: stays NaN


@jit(helper=True)
def _guided(s, sc, e, w, guided):
    g = s[e]
    if guided:
        g = g + w * (sc[e] - g)
    return g


@jit(parallel=True)
def _norms_kernel(s, sc, guided, w, P, D, clip, max_norm, want_z, k0, k1, step, offset, out_g, out_z):
    """Per particle: with ``clip`` the clip factor min(1, max_norm/‖g_p‖) (NaN norm -> NaN) into
    out_g, else ‖g_p‖² (float64); with ``want_z`` also ‖z_p‖² of the contract normals."""
    for p in prange(P):
        sum_sq = 0.0
        for d in range(D):
            gd = np.float64(_guided(s, sc, p * D + d, w, guided))
            sum_sq += gd * gd
        if clip:
            norm = np.sqrt(sum_sq)
            out_g[p] = max_norm / norm if not (norm <= max_norm) else 1.0
        else:
            out_g[p] = sum_sq
        if want_z:
            z = np.empty(min(D, CHUNK), np.float32)
            z_sq = 0.0
            for d0 in range(0, D, CHUNK):
                n = min(CHUNK, D - d0)
                fill_normals(z, 0, D, k0, k1, step, offset, p * D + d0, n)
                for k in range(n):
                    zd = np.float64(z[k])
                    z_sq += zd * zd
            out_z[p] = z_sq


@jit(helper=True)
def _reverse_chunk(x, s, sc, noise, cx_pp, a_pp, b_pp, factors, out, D, cx, a, b, w, lo, hi, flags, keys, begin, n):
    """The step of the flattened elements [begin, begin + n), one run per particle segment."""
    guided, use_noise, explicit, has_cx, has_a, has_b, has_f = flags
    k0, k1, step, offset = keys
    z = np.empty(n if use_noise else 0, x.dtype)
    if use_noise:
        if explicit:
            for k in range(n):
                z[k] = noise[begin + k]
        else:
            fill_normals(z, 0, D, k0, k1, step, offset, begin, n)
    p = begin // D
    d = begin - p * D
    i = 0
    while i < n:
        m = min(n - i, D - d)
        cx_p = cx_pp[p] if has_cx else cx
        a_p = a_pp[p] if has_a else a
        if has_f:
            a_p = a_p * factors[p]
        b_p = b_pp[p] if has_b else b
        for k in range(m):
            e = begin + i + k
            v = cx_p * x[e] + a_p * _guided(s, sc, e, w, guided)
            if use_noise:
                v = v + b_p * z[i + k]
            out[e] = _clamp(v, lo, hi)
        i += m
        d = 0
        p += 1


@jit(parallel=True)
def _reverse_kernel(x, s, sc, noise, cx_pp, a_pp, b_pp, factors, out, D, cx, a, b, w, lo, hi, flags, keys, chunk):
    # Fixed chunks: the numbers never depend on the thread count.
    total = out.shape[0]
    for c in prange((total + chunk - 1) // chunk):
        begin = c * chunk
        _reverse_chunk(
            x, s, sc, noise, cx_pp, a_pp, b_pp, factors, out, D, cx, a, b, w, lo, hi, flags, keys, begin,
            min(chunk, total - begin),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Launchers: the contract's argument checks, dtype handling, then the kernels.

_KERNELS = "the numba kernels"


def _flat(t, dtype, empty):
    """t as a 1-D C-contiguous numpy array of ``dtype`` (a view when possible), or ``empty``
    (unused arrays are ``empty``: one signature, one JIT compile, per math dtype)."""
    if t is None:
        return empty
    return t.detach().to(dtype).contiguous().view(-1).numpy()


def _bounds(np_acc, clamp_min, clamp_max):
    with np.errstate(over="ignore"):  # a bound beyond the math dtype's range rounds to inf, as in C++
        lo = np_acc(-np.inf if clamp_min is None else clamp_min)
        hi = np_acc(np.inf if clamp_max is None else clamp_max)
    return lo, hi


def _run(x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm, out_np):
    """The step of x as a flat numpy array of the math dtype, into ``out_np`` when given (it may
    be x's own buffer: each element is read before it is written), else a fresh array."""
    acc = contract.acc_dtype(x.dtype)
    np_acc = np.float64 if acc == torch.float64 else np.float32
    P = x.shape[0]
    D = x.numel() // P if P else 0
    empty = np.empty(0, np_acc)
    xs = _flat(x, acc, empty)
    out = np.empty(xs.shape[0], np_acc) if out_np is None else out_np
    if P * D == 0:
        return out
    sync_threads()
    ss, scs = _flat(score, acc, empty), _flat(score_cond, acc, empty)
    guided = score_cond is not None
    use_noise = b_pp is not None or b != 0.0
    explicit = noise is not None and use_noise
    k0, k1 = key_words(seed)
    keys = (k0, k1, np.uint64(step), np.uint64(offset))
    factors = empty
    if max_norm is not None:
        factors = np.empty(P, np.float64)
        unused = np.empty(0, np.float64)
        _norms_kernel(ss, scs, guided, np_acc(w), P, D, True, np.float64(max_norm), False, *keys, factors, unused)
        factors = factors.astype(np_acc)
    lo, hi = _bounds(np_acc, lo, hi)
    flags = (guided, use_noise, explicit, cx_pp is not None, a_pp is not None, b_pp is not None, max_norm is not None)
    _reverse_kernel(
        xs, ss, scs, _flat(noise if explicit else None, acc, empty), _flat(cx_pp, acc, empty),
        _flat(a_pp, acc, empty), _flat(b_pp, acc, empty), factors, out, D, np_acc(cx), np_acc(a), np_acc(b),
        np_acc(w), lo, hi, flags, keys, CHUNK,
    )  # fmt: skip
    return out


def _write(x, run, inplace: bool):
    """Runs ``run(out_np)`` into a new tensor of x's shape, or into x (any strides)."""
    if not inplace:
        if x.dtype in (torch.float32, torch.float64):
            out = torch.empty(x.shape, dtype=x.dtype)
            run(out.view(-1).numpy())
            return out
        # 16-bit storage: float32 math, rounded back by torch (round to nearest even).
        return torch.from_numpy(run(None)).view(x.shape).to(x.dtype)
    if x.dtype in (torch.float32, torch.float64) and x.is_contiguous():
        run(x.detach().view(-1).numpy())  # elementwise: safe to alias
    else:
        x.copy_(torch.from_numpy(run(None)).view(x.shape))  # copy_ rounds 16-bit RNE and follows strides
    return x


def _reverse(
    x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm, inplace
):
    contract.check_args(
        x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, step, offset, lo, hi, max_norm,
        inplace=inplace, device_type="cpu", kernels=_KERNELS,
    )  # fmt: skip
    args = (x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm)
    return _write(x, lambda out_np: _run(*args, out_np), inplace)


@torch.library.custom_op(
    "scorefast_numba::reverse_step", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["reverse_step"]
)
def reverse_step(x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm):
    """Out of place: a new contiguous tensor of x's shape and dtype."""
    return _reverse(
        x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm, False
    )


@torch.library.custom_op(
    "scorefast_numba::reverse_step_", mutates_args=("x",), device_types="cpu", schema=contract.SCHEMAS["reverse_step_"]
)
def reverse_step_(x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm):
    """In place into x (any strides)."""
    _reverse(x, score, score_cond, w, cx, cx_pp, a, a_pp, b, b_pp, noise, seed, step, offset, lo, hi, max_norm, True)


def _corrector(x, score, score_cond, w, snr, batch_mean, seed, step, offset, lo, hi, inplace):
    contract.check_corrector_args(
        x, score, score_cond, w, snr, step, offset, lo, hi, inplace=inplace, device_type="cpu", kernels=_KERNELS
    )
    acc = contract.acc_dtype(x.dtype)
    np_acc = np.float64 if acc == torch.float64 else np.float32
    P = x.shape[0]
    D = x.numel() // P if P else 0
    g_sq, z_sq = np.zeros(P, np.float64), np.zeros(P, np.float64)
    if P:
        sync_threads()
        empty = np.empty(0, np_acc)
        ss, scs = _flat(score, acc, empty), _flat(score_cond, acc, empty)
        k0, k1 = key_words(seed)
        keys = (k0, k1, np.uint64(step), np.uint64(offset))
        _norms_kernel(ss, scs, score_cond is not None, np_acc(w), P, D, False, 0.0, True, *keys, g_sq, z_sq)
    eps, b = contract.corrector_coefficients(torch.from_numpy(g_sq), torch.from_numpy(z_sq), snr, batch_mean, acc)
    args = (x, score, score_cond, w, 1.0, None, 0.0, eps, 0.0, b, None, seed, step, offset, lo, hi, None)
    return _write(x, lambda out_np: _run(*args, out_np), inplace), eps


@torch.library.custom_op(
    "scorefast_numba::snr_corrector_step",
    mutates_args=(),
    device_types="cpu",
    schema=contract.SCHEMAS["snr_corrector_step"],
)
def snr_corrector_step(x, score, score_cond, w, snr, batch_mean, seed, step, offset, lo, hi):
    """Out of place: (a new contiguous tensor, the step sizes [P])."""
    return _corrector(x, score, score_cond, w, snr, batch_mean, seed, step, offset, lo, hi, False)


@torch.library.custom_op(
    "scorefast_numba::snr_corrector_step_",
    mutates_args=("x",),
    device_types="cpu",
    schema=contract.SCHEMAS["snr_corrector_step_"],
)
def snr_corrector_step_(x, score, score_cond, w, snr, batch_mean, seed, step, offset, lo, hi):
    """In place into x (any strides); returns the step sizes [P]."""
    return _corrector(x, score, score_cond, w, snr, batch_mean, seed, step, offset, lo, hi, True)[1]
