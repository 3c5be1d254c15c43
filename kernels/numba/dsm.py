"""Denoising score matching in numba: ``scorefast_numba::dsm_perturb``, ``dsm_loss`` and
``dsm_loss_backward`` (contract: scorefast.ops.dsm).

    perturb:  x_tilde = x + sigma_b z
    loss:     l_b = 1/2 sigma_b^p sum (s + z / sigma_b)^2   (score form)
              l_b = sum (eps - z)^2                         (eps form)
    backward: dl/ds = g_b sigma_b^p (s + z / sigma_b),  dl/deps = 2 g_b (eps - z)

Same semantics as the C++ CPU kernels: z is the contract's float32 normals, regenerated
from (seed, step, sample) and never stored; math in float32 (float64 for float64 data;
float16/bfloat16 are widened to float32 here and rounded back by torch, RNE); the
residuals are squared and summed in float64, and the weight 1/2 sigma^p is applied in
float64 (a NaN prediction gives a NaN loss for its own sample only).

Work items are fixed, contiguous ranges of the flattened [B, D] elements: whole samples
(as many as fit in CHUNK elements) or, for D > CHUNK, CHUNK-sized pieces of one sample
whose float64 partial sums are added in a fixed order afterwards. The numbers therefore
never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from ...ops import dsm as contract
from ...ops._common import acc_dtype
from .noise import CHUNK, fill_normals, jit, key_words, sync_threads

# Kernel kinds (one compiled kernel per math dtype serves all three ops).
_PERTURB, _LOSS, _BACKWARD = 0, 1, 2


@jit(helper=True)
def _sum_squares(inp, z, e0, z0, n, inv_s, eps_form):
    """sum over k < n of r_k^2 in float64, r_k = p - z (eps) or p + z * (1 / sigma)
    (score) formed in the math dtype; four partial sums as the C++ kernel."""
    pv = inp[e0 : e0 + n]
    zv = z[z0 : z0 + n]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    n4 = n - (n & 3)
    if eps_form:
        for k in range(0, n4, 4):
            r0 = np.float64(pv[k] - zv[k])
            r1 = np.float64(pv[k + 1] - zv[k + 1])
            r2 = np.float64(pv[k + 2] - zv[k + 2])
            r3 = np.float64(pv[k + 3] - zv[k + 3])
            a0 += r0 * r0
            a1 += r1 * r1
            a2 += r2 * r2
            a3 += r3 * r3
        for k in range(n4, n):
            r = np.float64(pv[k] - zv[k])
            a0 += r * r
    else:
        for k in range(0, n4, 4):
            r0 = np.float64(pv[k] + zv[k] * inv_s)
            r1 = np.float64(pv[k + 1] + zv[k + 1] * inv_s)
            r2 = np.float64(pv[k + 2] + zv[k + 2] * inv_s)
            r3 = np.float64(pv[k + 3] + zv[k + 3] * inv_s)
            a0 += r0 * r0
            a1 += r1 * r1
            a2 += r2 * r2
            a3 += r3 * r3
        for k in range(n4, n):
            r = np.float64(pv[k] + zv[k] * inv_s)
            a0 += r * r
    return (a0 + a1) + (a2 + a3)


@jit(helper=True)
def _elementwise_run(inp, z, out, e0, z0, n, coef, inv_s, kind, eps_form):
    """out[e0 : e0 + n] for one sample's run: x + sigma z (perturb, coef = sigma) or
    coef * r (backward, coef = the per-sample scale)."""
    pv = inp[e0 : e0 + n]
    zv = z[z0 : z0 + n]
    ov = out[e0 : e0 + n]
    if kind == _PERTURB:
        for k in range(n):
            ov[k] = pv[k] + coef * zv[k]
    elif eps_form:
        for k in range(n):
            ov[k] = coef * (pv[k] - zv[k])
    else:
        for k in range(n):
            ov[k] = coef * (pv[k] + zv[k] * inv_s)


@jit(helper=True)
def _dsm_item(inp, coef, inv_sigma, out, partial, kind, eps_form, B, D, rows, nblk, k0, k1, step, offset, item):
    """One work item: rows [b0, b0 + rows) whole (nblk == 1), or one CHUNK piece of a row."""
    group = item // nblk
    blk = item - group * nblk
    b0 = group * rows
    if nblk == 1:
        b1 = min(B, b0 + rows)
        d0 = 0
        d1 = D
    else:
        b1 = b0 + 1
        d0 = blk * CHUNK
        d1 = min(D, d0 + CHUNK)
    begin = b0 * D + d0
    n = (b1 - b0) * D if nblk == 1 else d1 - d0
    # The item's noise first (float32 normals of the contract, widened for float64 math),
    # then one pass per sample.
    z = np.empty(n, inp.dtype)
    fill_normals(z, 0, D, k0, k1, step, offset, begin, n)
    m = d1 - d0
    for b in range(b0, b1):
        z0 = (b - b0) * m
        e0 = begin + z0
        if kind == _LOSS:
            partial[b * nblk + blk] = _sum_squares(inp, z, e0, z0, m, inv_sigma[b], eps_form)
        else:
            _elementwise_run(inp, z, out, e0, z0, m, coef[b], inv_sigma[b], kind, eps_form)


@jit(parallel=True)
def _dsm_kernel(inp, coef, inv_sigma, out, partial, kind, eps_form, B, D, rows, nblk, k0, k1, step, offset):
    # A single call in the prange body keeps numba's parallel compile short.
    items = ((B + rows - 1) // rows) * nblk
    for item in prange(items):
        _dsm_item(inp, coef, inv_sigma, out, partial, kind, eps_form, B, D, rows, nblk, k0, k1, step, offset, item)


# ---------------------------------------------------------------------------------------
# Launcher: the checks of the C++ ops (csrc/dsm_op.h), dtype handling, then the kernel.


def _check(inp: torch.Tensor, name: str, sigma: torch.Tensor, power: float, step: int, particle_offset: int) -> None:
    contract.check_args(inp, name, sigma, power, step, particle_offset, device_type="cpu", kernels="the numba kernels")


def _flat(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """t as a 1-D C-contiguous numpy array of ``dtype`` (a view when possible)."""
    return t.detach().to(dtype).contiguous().view(-1).numpy()


def _launch(
    kind: int,
    inp: torch.Tensor,
    sigma: torch.Tensor,
    coef: np.ndarray | None,
    eps_form: bool,
    seed: int,
    step: int,
    particle_offset: int,
    out: np.ndarray | None,
    partial: np.ndarray | None,
) -> None:
    acc = acc_dtype(inp.dtype)
    np_acc = np.float64 if acc == torch.float64 else np.float32
    B = inp.shape[0]
    D = inp.numel() // B
    rows = max(1, CHUNK // D)
    nblk = (D + CHUNK - 1) // CHUNK
    s = _flat(sigma, acc)
    inv_sigma = np_acc(1) / s  # 1 / sigma in the math dtype, as the C++ kernel
    empty = np.empty(0, np_acc)
    sync_threads()
    k0, k1 = key_words(seed)
    _dsm_kernel(
        _flat(inp, acc),
        s if coef is None else coef,
        inv_sigma,
        empty if out is None else out,
        np.empty(0, np.float64) if partial is None else partial,
        kind,
        bool(eps_form),
        B,
        D,
        rows,
        nblk,
        k0,
        k1,
        np.uint64(step),
        np.uint64(particle_offset),
    )


def _elementwise_out(kind, inp, sigma, coef, eps_form, seed, step, particle_offset) -> torch.Tensor:
    """A new contiguous tensor of inp's shape and dtype (perturb or backward)."""
    B = inp.shape[0]
    if inp.dtype in (torch.float32, torch.float64):
        out = torch.empty(inp.shape, dtype=inp.dtype)
        if inp.numel() > 0:
            _launch(kind, inp, sigma, coef, eps_form, seed, step, particle_offset, out.view(-1).numpy(), None)
        return out
    # 16-bit storage: float32 math, rounded back by torch (round to nearest even).
    out = torch.empty(inp.shape, dtype=torch.float32)
    if B > 0 and inp.numel() > 0:
        _launch(kind, inp, sigma, coef, eps_form, seed, step, particle_offset, out.view(-1).numpy(), None)
    return out.to(inp.dtype)


@torch.library.custom_op(
    "scorefast_numba::dsm_perturb", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["dsm_perturb"]
)
def dsm_perturb(x, sigma, seed, step, particle_offset):
    """x + sigma_b z: a new contiguous tensor of x's shape and dtype."""
    _check(x, "x", sigma, 2.0, step, particle_offset)
    return _elementwise_out(_PERTURB, x, sigma, None, False, seed, step, particle_offset)


@torch.library.custom_op(
    "scorefast_numba::dsm_loss", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["dsm_loss"]
)
def dsm_loss(pred, sigma, power, eps_form, seed, step, particle_offset):
    """Per-sample losses [B] in the math dtype (float64 for float64 pred, else float32)."""
    _check(pred, "pred", sigma, power, step, particle_offset)
    acc = acc_dtype(pred.dtype)
    B = pred.shape[0]
    D = pred.numel() // B if B else 0
    if B == 0 or D == 0:
        return torch.zeros(B, dtype=acc)
    nblk = (D + CHUNK - 1) // CHUNK
    partial = np.empty(B * nblk, np.float64)
    _launch(_LOSS, pred, sigma, None, eps_form, seed, step, particle_offset, None, partial)
    per = partial if nblk == 1 else partial.reshape(B, nblk).sum(axis=1)
    if not eps_form:
        per = per * (0.5 * np.power(_flat(sigma, torch.float64), power))
    return torch.from_numpy(np.ascontiguousarray(per)).to(acc)


@torch.library.custom_op(
    "scorefast_numba::dsm_loss_backward",
    mutates_args=(),
    device_types="cpu",
    schema=contract.SCHEMAS["dsm_loss_backward"],
)
def dsm_loss_backward(grad_per_sample, pred, sigma, power, eps_form, seed, step, particle_offset):
    """dL/dpred = g_b sigma_b^p (pred + z / sigma_b) (score) or 2 g_b (pred - z) (eps)."""
    _check(pred, "pred", sigma, power, step, particle_offset)
    acc = acc_dtype(pred.dtype)
    contract.check_grad_per_sample(grad_per_sample, pred)
    g = _flat(grad_per_sample, acc)
    if eps_form:
        scale = g * g.dtype.type(2)
    else:  # g * (math dtype)(sigma^p evaluated in float64), as the C++ kernel
        scale = g * np.power(_flat(sigma, torch.float64), power).astype(g.dtype)
    return _elementwise_out(_BACKWARD, pred, sigma, np.ascontiguousarray(scale), eps_form, seed, step, particle_offset)
