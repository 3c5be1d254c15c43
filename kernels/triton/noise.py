"""Triton kernels of the noise contract, and the ops ``scorefast_triton::philox_fill_`` and
``scorefast_triton::normal_fill_``.

    z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(c), hi32(c), t, grp)))[j]
    p' = particle_offset + p
    D >= 3:       c = p',              grp = d >> 2,  j = d & 3
    D in {1, 2}:  c = (p' D + d) >> 2,  grp = 0,       j = (p' D + d) & 3

(particles of one or two elements share a counter, so every word of a Philox call is used:
such a tensor draws the noise of its [P D / 4, 4] view). The jit helpers ``contract_words``
and ``contract_normals`` compute one Philox call (four words, four normals) per lane,
``group_normals`` the normals of elements 4q .. 4q + 3 of a particle under either rule, and
``particle_normals`` a [particles, D] tile, so fused kernels of other ops draw the same
noise by calling them. Philox, the uniform map and Box-Muller are Triton's own
(``tl.random``), so the contract holds by construction here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._env import triton_interpreting
from ...ops import noise as contract
from ...ops.noise import particles_per_counter

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
# Philox groups (4 elements) per program. 256 groups = 1024 elements: enough work per
# program to hide memory latency, small enough to keep the register tiles in registers.
GROUPS_PER_PROGRAM = 256


# --------------------------------------------------------------------------------------
# jit helpers (shared with the kernels of other ops)


@triton.jit
def contract_words(seed_lo, seed_hi, step, counter, group):
    """Philox4x32-10 words of the counters (lo32(counter), hi32(counter), step, group).

    seed_lo, seed_hi: the 32-bit halves of the 64-bit key (scalars); step: scalar in [0, 2^32);
    counter: int64 block in [0, 2^63), the global particle id p' = particle_offset + p (or the
    packed counter of ``packed_normals``); group: block of the same shape (d >> 2, or 0 when
    packed). Returns four uint32 blocks.
    """
    # The key is rebuilt as the uint64 tl.random.philox splits again: its lo/hi halves are
    # (seed_lo, seed_hi), so the key matches the unsigned seed whatever its sign as int64.
    seed = (seed_hi.to(tl.uint64) << 32) | seed_lo.to(tl.uint64)
    c0 = counter.to(tl.uint32)  # int64 -> uint32 truncates: lo32
    c1 = (counter >> 32).to(tl.uint32)  # counters are < 2^63, so the arithmetic shift is exact
    c3 = group.to(tl.uint32)
    c2 = c3 * 0 + step.to(tl.uint32)  # broadcast the scalar step to the block
    return tl.random.philox(seed, c0, c1, c2, c3)


@triton.jit
def contract_normals(seed_lo, seed_hi, step, counter, group):
    """The four float32 normals (z0, z1, z2, z3) of each Philox call (see ``contract_words``).

    Words 0, 1 give (r cos, r sin) as outputs 0, 1; words 2, 3 give outputs 2, 3. For D >= 3,
    element d of particle p' is output d & 3 of counter (p', group d >> 2).
    """
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, counter, group)
    u0 = tl.random.uint_to_uniform_float(w0)
    u1 = tl.random.uint_to_uniform_float(w1)
    u2 = tl.random.uint_to_uniform_float(w2)
    u3 = tl.random.uint_to_uniform_float(w3)
    z0, z1 = tl.random.pair_uniform_to_normal(u0, u1)
    z2, z3 = tl.random.pair_uniform_to_normal(u2, u3)
    return z0, z1, z2, z3


@triton.jit
def packed_normals(seed_lo, seed_hi, step, particle_id, D: tl.constexpr):
    """(z0, z1): the normals of elements 0 and 1 of particles of D = 1 or 2 elements (z1 only
    means something for D = 2), one Philox call and one Box-Muller pair per lane.

    Element d of particle p' is element g = p' D + d of the flat stream: output g & 3 of
    counter g >> 2, group 0. D divides 4, so a particle's elements are outputs first = p' D & 3
    (from lo32(p')) and first + 1 of counter p' >> (3 - D), one Box-Muller pair (p' D itself
    may pass 2^63).
    """
    counter = particle_id >> (3 - D)
    first = (particle_id.to(tl.int32) * D) & 3
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, counter, 0 * particle_id)
    upper = first >= 2  # outputs 2, 3 come from words 2, 3
    u_a = tl.random.uint_to_uniform_float(tl.where(upper, w2, w0))
    u_b = tl.random.uint_to_uniform_float(tl.where(upper, w3, w1))
    z_cos, z_sin = tl.random.pair_uniform_to_normal(u_a, u_b)
    return tl.where((first & 1) == 1, z_sin, z_cos), z_sin


@triton.jit
def group_normals(seed_lo, seed_hi, step, particle_id, group, PER_COUNTER: tl.constexpr):
    """The normals (z0, z1, z2, z3) of elements 4 group + 0 .. 3 of the particles particle_id
    (int64 global ids) of a [P, D] tensor; particle_id and group are blocks of one shape.

    PER_COUNTER = ``particles_per_counter(D)``, a constexpr (so kernels of D >= 3 compile the
    code they always had): 1 gives the four outputs of counter (p', group); 2 or 4 (D = 2 or
    1, group 0 only) the packed rule of ``packed_normals``, z2 and z3 padding like elements
    d >= D.
    """
    if PER_COUNTER == 1:
        z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, particle_id, group)
    else:
        z0, z1 = packed_normals(seed_lo, seed_hi, step, particle_id, 4 // PER_COUNTER)
        z2 = z1
        z3 = z1
    return z0, z1, z2, z3


@triton.jit
def particle_normals(seed_lo, seed_hi, step, particle_id, BLOCK_D: tl.constexpr):
    """[BLOCK_P, BLOCK_D] tile of the normals of elements d = 0 .. BLOCK_D - 1 of the particles
    particle_id ([BLOCK_P], int64 global ids) of a [P, D] tensor with BLOCK_D = 2^ceil(log2 D).

    BLOCK_D >= 4 (D >= 3): one Philox call per group of four elements, groups tiled
    [BLOCK_P, BLOCK_D / 4] and their four outputs interleaved into place (element 4q + k);
    BLOCK_D < 4 (D = BLOCK_D <= 2): the packed rule (``packed_normals``).
    """
    if BLOCK_D >= 4:
        q = tl.arange(0, BLOCK_D // 4)
        ids = particle_id[:, None] + 0 * q[None, :]
        groups = q[None, :] + 0 * particle_id[:, None]
        z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, ids, groups)
        return tl.interleave(tl.interleave(z0, z2), tl.interleave(z1, z3))
    else:
        z0, z1 = packed_normals(seed_lo, seed_hi, step, particle_id, BLOCK_D)
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
    valid groups and the valid elements (a particle's last group may be partial). For D <= 2
    a group is one particle, whose noise ``group_normals`` draws from a shared counter.
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
    PER_COUNTER: tl.constexpr,
    BLOCK: tl.constexpr,
    BF16: tl.constexpr,
):
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, BLOCK)
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, PER_COUNTER)
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


def per_counter(particle_size) -> int:
    """The kernels' PER_COUNTER constexpr: how many particles share a Philox counter (4 // D
    for D = 1 or 2, else 1: ``ops.noise.particles_per_counter``). A plain int: a symbolic
    size gets a guard, as the noise depends on it."""
    return int(particles_per_counter(particle_size))


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
        PER_COUNTER=per_counter(D),
        BLOCK=block,
        BF16=out.dtype == torch.bfloat16,
    )
