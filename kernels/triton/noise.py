"""Triton kernels of the noise contract, and the ops ``scorefast_triton::philox_fill_`` and
``scorefast_triton::normal_fill_``.

    z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(p'), hi32(p'), t, d >> 2)))[d & 3]
    p' = particle_offset + p

The jit helpers ``contract_words`` and ``contract_normals`` compute one Philox group (four
words, four normals) per lane, and ``particle_normals`` a [particles, D] tile, so fused
kernels of other ops draw the same noise by calling them. Philox, the uniform map and
Box-Muller are Triton's own (``tl.random``), so the contract holds by construction here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._env import triton_interpreting
from ...ops import noise as contract

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
# Philox groups (4 elements) per program. 256 groups = 1024 elements: enough work per
# program to hide memory latency, small enough to keep the register tiles in registers.
GROUPS_PER_PROGRAM = 256


# --------------------------------------------------------------------------------------
# jit helpers (shared with the kernels of other ops)


@triton.jit
def contract_words(seed_lo, seed_hi, step, particle_id, group):
    """Philox4x32-10 words of the counters (lo32(particle_id), hi32(particle_id), step, group).

    seed_lo, seed_hi: the 32-bit halves of the 64-bit key (scalars); step: scalar in [0, 2^32);
    particle_id: int64 block of global particle ids (p' = particle_offset + p); group: block of
    the same shape with the group index d >> 2. Returns four uint32 blocks.
    """
    # The key is rebuilt as the uint64 tl.random.philox splits again: its lo/hi halves are
    # (seed_lo, seed_hi), so the key matches the unsigned seed whatever its sign as int64.
    seed = (seed_hi.to(tl.uint64) << 32) | seed_lo.to(tl.uint64)
    c0 = particle_id.to(tl.uint32)  # int64 -> uint32 truncates: lo32
    c1 = (particle_id >> 32).to(tl.uint32)  # ids are < 2^63, so the arithmetic shift is exact
    c3 = group.to(tl.uint32)
    c2 = c3 * 0 + step.to(tl.uint32)  # broadcast the scalar step to the block
    return tl.random.philox(seed, c0, c1, c2, c3)


@triton.jit
def contract_normals(seed_lo, seed_hi, step, particle_id, group):
    """The four float32 normals (z0, z1, z2, z3) of each Philox group (see ``contract_words``).

    Element d of particle p is output d & 3 of group d >> 2: words 0, 1 give (r cos, r sin)
    as outputs 0, 1; words 2, 3 give outputs 2, 3.
    """
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, particle_id, group)
    u0 = tl.random.uint_to_uniform_float(w0)
    u1 = tl.random.uint_to_uniform_float(w1)
    u2 = tl.random.uint_to_uniform_float(w2)
    u3 = tl.random.uint_to_uniform_float(w3)
    z0, z1 = tl.random.pair_uniform_to_normal(u0, u1)
    z2, z3 = tl.random.pair_uniform_to_normal(u2, u3)
    return z0, z1, z2, z3


@triton.jit
def particle_normals(seed_lo, seed_hi, step, particle_id, BLOCK_D: tl.constexpr):
    """[BLOCK_P, BLOCK_D] tile of the normals of elements d = 0 .. BLOCK_D - 1 of the particles
    particle_id ([BLOCK_P], int64 global ids), one Philox call per group of four elements.

    BLOCK_D >= 4: groups are tiled [BLOCK_P, BLOCK_D / 4] and their four outputs interleaved
    into place (element 4q + k); BLOCK_D < 4 (D <= 2): outputs 0 and 1 of group 0 only.
    """
    if BLOCK_D >= 4:
        q = tl.arange(0, BLOCK_D // 4)
        ids = particle_id[:, None] + 0 * q[None, :]
        groups = q[None, :] + 0 * particle_id[:, None]
        z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, ids, groups)
        return tl.interleave(tl.interleave(z0, z2), tl.interleave(z1, z3))
    else:
        w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, particle_id, 0 * particle_id)
        z0, z1 = tl.random.pair_uniform_to_normal(
            tl.random.uint_to_uniform_float(w0), tl.random.uint_to_uniform_float(w1)
        )
        d = tl.arange(0, BLOCK_D)
        return tl.where(d[None, :] == 0, z0[:, None], z1[:, None])


@triton.jit
def round_bf16(v):
    """float32 v rounded to nearest even at bfloat16 precision, still float32 (NaN kept).

    Spelled out on the float32 bits, because the interpreter's float32 -> bfloat16 cast
    truncates; the bfloat16 store of the result is then exact everywhere. A NaN is kept as
    it is (its bits could carry into the sign).
    """
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
    return tl.where(v != v, v, bits.to(tl.float32, bitcast=True))


@triton.jit
def to_acc(v, F64: tl.constexpr):
    """The compute type of every kernel here: float64 for float64 storage, float32 otherwise."""
    if F64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def select4(k, z0, z1, z2, z3):
    """[BLOCK, 4] tile whose column k holds z_k ([BLOCK] blocks; k = tl.arange(0, 4))."""
    kk = k[None, :]
    return tl.where(kk == 0, z0[:, None], tl.where(kk == 1, z1[:, None], tl.where(kk == 2, z2[:, None], z3[:, None])))


@triton.jit
def group_tile(n_groups, Q, D, BLOCK: tl.constexpr):
    """This program's BLOCK Philox groups of a contiguous [P, D] tensor with Q = ceil(D / 4).

    Returns (p, q, k, e, row_ok, mask): particle and group index of each group ([BLOCK],
    int64), k = 0..3, the flat element index e = p * D + 4 q + k ([BLOCK, 4], int64), the
    valid groups and the valid elements (a particle's last group may be partial).
    """
    # int64 from the start: P * D may exceed 2^31 even when each factor does not.
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    row_ok = g < n_groups
    p = g // Q
    q = g - p * Q
    k = tl.arange(0, 4)
    d = q[:, None] * 4 + k[None, :]
    mask = row_ok[:, None] & (d < D)
    e = p[:, None] * D + d
    return p, q, k, e, row_ok, mask


# --------------------------------------------------------------------------------------
# kernels


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _philox_fill_kernel(
    out_ptr, n_groups, seed_lo: tl.int64, seed_hi: tl.int64, step: tl.int64, offset: tl.int64, Q, BLOCK: tl.constexpr
):
    # out is int64 [P, Q, 4] contiguous: group g = p * Q + q holds words 4g .. 4g + 3.
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = g < n_groups
    p = g // Q
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, offset + p, g - p * Q)
    base = out_ptr + g * 4
    tl.store(base, w0.to(tl.int64), mask=ok)  # uint32 -> int64 zero-extends: values in [0, 2^32)
    tl.store(base + 1, w1.to(tl.int64), mask=ok)
    tl.store(base + 2, w2.to(tl.int64), mask=ok)
    tl.store(base + 3, w3.to(tl.int64), mask=ok)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "offset"])
def _normal_fill_kernel(
    out_ptr,
    n_groups,
    Q,
    D,
    seed_lo: tl.int64,
    seed_hi: tl.int64,
    step: tl.int64,
    offset: tl.int64,
    BLOCK: tl.constexpr,
    BF16: tl.constexpr,
):
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, BLOCK)
    z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, offset + p, q)
    z = select4(k, z0, z1, z2, z3)
    if BF16:
        z = round_bf16(z)
    # float32 normals rounded to nearest even in out's dtype
    tl.store(out_ptr + e, z.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------
# launching


def seed_halves(seed: int) -> tuple[int, int]:
    """(lo32, hi32) of a seed given as int64 bits (the schema type) or as uint64."""
    seed = int(seed) & MASK64
    return seed & MASK32, seed >> 32


def block_for(n_groups: int) -> int:
    """Groups per program: fixed on GPUs; on the interpreter no larger than the work, since
    every lane costs time there."""
    if triton_interpreting():
        return max(1, min(GROUPS_PER_PROGRAM, triton.next_power_of_2(max(n_groups, 1))))
    return GROUPS_PER_PROGRAM


def launch(kernel, grid, probe: torch.Tensor, *args, **kwargs) -> None:
    """Launch ``kernel[grid](*args)`` through ``wrap_triton`` so torch.compile can trace it.

    Interpreted kernels (TRITON_INTERPRET=1) cannot be traced and read real memory, so the
    ops are opaque there and a launch on fake tensors (``probe`` is one of the arguments)
    is skipped: shapes are all a fake run needs.
    """
    if triton_interpreting():
        from torch._subclasses.fake_tensor import is_fake

        if is_fake(probe) or probe.device.type == "meta":
            return
        kernel[grid](*args, **kwargs)
        return
    # Triton launches on the current device and its current stream: make that the tensors'
    # device (a tensor on cuda:1 while cuda:0 is current would run on the wrong GPU).
    with torch.cuda.device(probe.device):
        torch.library.wrap_triton(kernel)[grid](*args, **kwargs)


def custom_op(name: str, mutates_args):
    """``torch.library.triton_op`` on GPUs (torch.compile sees the Triton kernels); a plain
    ``custom_op`` on the interpreter, where kernels cannot be traced. The function itself is
    the fake kernel in both cases (it only allocates and launches)."""
    if not triton_interpreting():
        return torch.library.triton_op(name, mutates_args=mutates_args)

    def decorate(fn):
        op = torch.library.custom_op(name, mutates_args=mutates_args)(fn)
        op.register_fake(fn)
        return op

    return decorate


# --------------------------------------------------------------------------------------
# ops


@custom_op("scorefast_triton::philox_fill_", mutates_args={"out"})
def philox_fill_(out: torch.Tensor, seed: int, step: int, particle_offset: int) -> None:
    """Philox words of the contract into ``out`` (int64 [P, Q, 4], contiguous), values in [0, 2^32)."""
    contract.check_philox_fill(out, step, particle_offset)
    P, Q = out.shape[0], out.shape[1]
    n_groups = P * Q
    if n_groups == 0:
        return
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _philox_fill_kernel,
        (triton.cdiv(n_groups, block),),
        out,
        out,
        n_groups,
        lo,
        hi,
        step,
        particle_offset,
        Q,
        BLOCK=block,
    )


@custom_op("scorefast_triton::normal_fill_", mutates_args={"out"})
def normal_fill_(out: torch.Tensor, seed: int, step: int, particle_offset: int) -> None:
    """Standard normals of the contract into ``out`` (dim 0 = particles, contiguous): float32,
    rounded to out's dtype (float32, float64, float16 or bfloat16)."""
    contract.check_normal_fill(out, step, particle_offset)
    P = out.shape[0]
    if out.numel() == 0:
        return
    D = out.numel() // P
    Q = (D + 3) // 4
    n_groups = P * Q
    lo, hi = seed_halves(seed)
    block = block_for(n_groups)
    launch(
        _normal_fill_kernel,
        (triton.cdiv(n_groups, block),),
        out,
        out,
        n_groups,
        Q,
        D,
        lo,
        hi,
        step,
        particle_offset,
        BLOCK=block,
        BF16=out.dtype == torch.bfloat16,
    )
