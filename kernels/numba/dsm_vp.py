"""The diffusion forward process and loss in numba: ``scorefast_numba::dsm_vp_perturb``,
``dsm_vp_loss`` and ``dsm_vp_loss_backward`` (contract: scorefast.ops.dsm_vp).

    perturb:  x_t = alpha_b x + sigma_b z
    loss:     l_b = w_b sum (pred - a_b z - c_b x)^2       (no c x term without x)
    backward: dl/dpred = g_b (2 w_b) (pred - a_b z - c_b x)

Same semantics as the C++ CPU kernels: z is the contract's float32 normals, regenerated from
(seed, step, sample) and never stored; math in float32 (float64 for float64 data;
float16/bfloat16 are widened to float32 here and rounded back by torch, RNE); the residuals
are squared and summed in float64 and the weight w (float64) applied to that sum, so a NaN
input gives a NaN loss for its own sample only.

Work items are those of the DSM kernels (kernels/numba/dsm.py): whole samples (as many as fit
in CHUNK elements) or, for D > CHUNK, CHUNK-sized pieces of one sample whose float64 partial
sums are added in a fixed order afterwards, so the numbers never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from ...ops import dsm_vp as contract
from ...ops._common import acc_dtype
from .noise import CHUNK, fill_normals, jit, key_words, sync_threads

# Kernel kinds (one compiled kernel per math dtype serves all three ops).
_PERTURB, _LOSS, _BACKWARD = 0, 1, 2


@jit(helper=True)
def _residual(pv, zv, xv, k, a, c, has_x):
    """pred - a z - c x in the math dtype (no FMA: numba does not contract without fastmath)."""
    r = pv[k] - a * zv[k]
    if has_x:
        r = r - c * xv[k]
    return r


@jit(helper=True)
def _sum_squares(inp, x, z, e0, z0, n, a, c, has_x):
    """sum over k < n of r_k^2 in float64, four partial sums as the C++ kernel."""
    pv = inp[e0 : e0 + n]
    xv = x[e0 : e0 + n]  # x is inp itself when has_x is False (never read)
    zv = z[z0 : z0 + n]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    n4 = n - (n & 3)
    for k in range(0, n4, 4):
        r0 = np.float64(_residual(pv, zv, xv, k, a, c, has_x))
        r1 = np.float64(_residual(pv, zv, xv, k + 1, a, c, has_x))
        r2 = np.float64(_residual(pv, zv, xv, k + 2, a, c, has_x))
        r3 = np.float64(_residual(pv, zv, xv, k + 3, a, c, has_x))
        a0 += r0 * r0
        a1 += r1 * r1
        a2 += r2 * r2
        a3 += r3 * r3
    for k in range(n4, n):
        r = np.float64(_residual(pv, zv, xv, k, a, c, has_x))
        a0 += r * r
    return (a0 + a1) + (a2 + a3)


@jit(helper=True)
def _elementwise_run(inp, x, z, out, e0, z0, n, coef, a, c, kind, has_x):
    """out[e0 : e0 + n] for one sample's run: a x + c z (perturb: a = alpha, c = sigma) or
    coef * r (backward, coef = the per-sample scale)."""
    pv = inp[e0 : e0 + n]
    xv = x[e0 : e0 + n]  # x is inp itself when has_x is False (never read)
    zv = z[z0 : z0 + n]
    ov = out[e0 : e0 + n]
    if kind == _PERTURB:
        for k in range(n):
            ov[k] = a * pv[k] + c * zv[k]
    else:
        for k in range(n):
            ov[k] = coef * _residual(pv, zv, xv, k, a, c, has_x)


@jit(helper=True)
def _item(inp, x, coef, a, c, out, partial, kind, has_x, B, D, rows, nblk, k0, k1, step, offset, item):
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
    z = np.empty(n, inp.dtype)
    fill_normals(z, 0, D, k0, k1, step, offset, begin, n)
    m = d1 - d0
    for b in range(b0, b1):
        z0 = (b - b0) * m
        e0 = begin + z0
        if kind == _LOSS:
            partial[b * nblk + blk] = _sum_squares(inp, x, z, e0, z0, m, a[b], c[b], has_x)
        else:
            _elementwise_run(inp, x, z, out, e0, z0, m, coef[b], a[b], c[b], kind, has_x)


@jit(parallel=True)
def _kernel(inp, x, coef, a, c, out, partial, kind, has_x, B, D, rows, nblk, k0, k1, step, offset):
    # A single call in the prange body keeps numba's parallel compile short.
    items = ((B + rows - 1) // rows) * nblk
    for item in prange(items):
        _item(inp, x, coef, a, c, out, partial, kind, has_x, B, D, rows, nblk, k0, k1, step, offset, item)


# ---------------------------------------------------------------------------------------
# Launchers: the checks of the C++ ops (csrc/dsm_vp_op.h), dtype handling, then the kernel.

_KERNELS = "the numba kernels"


def _flat(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """t as a 1-D C-contiguous numpy array of ``dtype`` (a view when possible)."""
    return t.detach().to(dtype).contiguous().view(-1).numpy()


def _launch(kind, inp, x, a, c, coef, seed, step, particle_offset, out, partial) -> None:
    acc = acc_dtype(inp.dtype)
    np_acc = np.float64 if acc == torch.float64 else np.float32
    B = inp.shape[0]
    D = inp.numel() // B
    rows = max(1, CHUNK // D)
    nblk = (D + CHUNK - 1) // CHUNK
    flat_in = _flat(inp, acc)
    sync_threads()
    k0, k1 = key_words(seed)
    _kernel(
        flat_in,
        flat_in if x is None else _flat(x, acc),
        np.empty(0, np_acc) if coef is None else coef,
        _flat(a, acc),
        _flat(c, acc),
        np.empty(0, np_acc) if out is None else out,
        np.empty(0, np.float64) if partial is None else partial,
        kind,
        x is not None,
        B,
        D,
        rows,
        nblk,
        k0,
        k1,
        np.uint64(step),
        np.uint64(particle_offset),
    )


def _elementwise_out(kind, inp, x, a, c, coef, seed, step, particle_offset) -> torch.Tensor:
    """A new contiguous tensor of inp's shape and dtype (perturb or backward); 16-bit storage
    computes in float32 and is rounded back by torch (round to nearest even)."""
    wide = inp.dtype in (torch.float32, torch.float64)
    out = torch.empty(inp.shape, dtype=inp.dtype if wide else torch.float32)
    if inp.numel() > 0:
        _launch(kind, inp, x, a, c, coef, seed, step, particle_offset, out.view(-1).numpy(), None)
    return out if wide else out.to(inp.dtype)


@torch.library.custom_op(
    "scorefast_numba::dsm_vp_perturb", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["dsm_vp_perturb"]
)
def dsm_vp_perturb(x, alpha, sigma, seed, step, particle_offset):
    """alpha_b x + sigma_b z: a new contiguous tensor of x's shape and dtype."""
    contract.check_perturb_args(x, alpha, sigma, step, particle_offset, device_type="cpu", kernels=_KERNELS)
    return _elementwise_out(_PERTURB, x, None, alpha, sigma, None, seed, step, particle_offset)


@torch.library.custom_op(
    "scorefast_numba::dsm_vp_loss", mutates_args=(), device_types="cpu", schema=contract.SCHEMAS["dsm_vp_loss"]
)
def dsm_vp_loss(pred, x, a, c, weight, seed, step, particle_offset):
    """Per-sample losses [B] in the math dtype (float64 for float64 pred, else float32)."""
    contract.check_loss_args(pred, x, a, c, weight, step, particle_offset, device_type="cpu", kernels=_KERNELS)
    acc = acc_dtype(pred.dtype)
    B = pred.shape[0]
    D = pred.numel() // B if B else 0
    if B == 0 or D == 0:
        return torch.zeros(B, dtype=acc)
    nblk = (D + CHUNK - 1) // CHUNK
    partial = np.empty(B * nblk, np.float64)
    _launch(_LOSS, pred, x, a, c, None, seed, step, particle_offset, None, partial)
    per = partial if nblk == 1 else partial.reshape(B, nblk).sum(axis=1)
    per = per * _flat(weight, torch.float64)
    return torch.from_numpy(np.ascontiguousarray(per)).to(acc)


@torch.library.custom_op(
    "scorefast_numba::dsm_vp_loss_backward",
    mutates_args=(),
    device_types="cpu",
    schema=contract.SCHEMAS["dsm_vp_loss_backward"],
)
def dsm_vp_loss_backward(grad_per_sample, pred, x, a, c, weight, seed, step, particle_offset):
    """dL/dpred = g_b (2 w_b) (pred - a_b z - c_b x), pred's dtype, contiguous."""
    contract.check_loss_args(pred, x, a, c, weight, step, particle_offset, device_type="cpu", kernels=_KERNELS)
    contract.check_grad_per_sample(grad_per_sample, pred)
    acc = acc_dtype(pred.dtype)
    g = _flat(grad_per_sample, acc)
    # g times (math dtype)(2 w), as the C++ kernel
    scale = g * (2.0 * _flat(weight, torch.float64)).astype(g.dtype)
    return _elementwise_out(_BACKWARD, pred, x, a, c, np.ascontiguousarray(scale), seed, step, particle_offset)
