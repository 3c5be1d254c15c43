"""Triton kernels of the noise contract, and the ops ``scorefast_triton::philox_fill_`` and
``scorefast_triton::normal_fill_``.

    z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(g >> 2), hi32(g >> 2), t, 0)))[g & 3]
    g = (particle_offset + p) D + d,  the element's flat index, < 2^63

(every tensor draws the noise of its flat [P D / 4, 4] view, whatever D is). The jit helpers
``contract_words`` and ``contract_normals`` compute one Philox call (four words, four normals)
per lane. The elementwise kernels run one lane per group of four elements of a particle
(``group_tile``), laid so that each group is one Philox call (see NOISE_ALIGNED below), and
draw its normals with ``group_normals``; ``particle_normals`` draws a [particles, D] tile.
Fused kernels of other ops draw the same noise by calling them. Philox, the uniform map and
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
# Groups of four elements per program. 256 groups = 1024 elements: enough work per
# program to hide memory latency, small enough to keep the register tiles in registers.
GROUPS_PER_PROGRAM = 256

# NOISE_MODE (a constexpr; ``noise_layout``): how the lanes (p, q) of the elementwise kernels,
# groups of four elements of particle p (global id p' = particle_offset + p), meet the Philox
# calls. Particle p' holds flat elements p' D .. p' D + D - 1, the first at position
# s = p' D & 3 of counter p' D >> 2:
#   ALIGNED  D % 4 == 0 (s = 0): group q is elements d = 4q + k (k = 0..3), the call of counter
#            p' (D / 4) + q. Also the plain tiling of kernels that draw no contract noise.
#   PACKED   D <= 2: one group, elements d = k < D; they lie in one Box-Muller pair of counter
#            p' D >> 2 (several particles share a counter), the only pair computed.
#   GENERAL  otherwise: group q is the call of counter (p' D >> 2) + q, output k holding element
#            d = 4q + k - s (a particle's first and last groups are partial; its neighbours'
#            groups compute the rest of the shared counters), Q = ceil((D + max s) / 4) groups.
NOISE_ALIGNED = tl.constexpr(0)
NOISE_PACKED = tl.constexpr(1)
NOISE_GENERAL = tl.constexpr(2)


# --------------------------------------------------------------------------------------
# jit helpers (shared with the kernels of other ops)


@triton.jit
def contract_words(seed_lo, seed_hi, step, counter, group):
    """Philox4x32-10 words of the counters (lo32(counter), hi32(counter), step, group).

    seed_lo, seed_hi: the 32-bit halves of the 64-bit key (scalars); step: scalar in [0, 2^32);
    counter: int64 block in [0, 2^63): g >> 2 of a flat element index g for the normals, the
    global particle id p' for ``philox_fill_`` and a MALA uniform; group: block of the same
    shape (0 for the normals). Returns four uint32 blocks.
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
def _pair_normals(w_a, w_b):
    """(r cos, r sin): Box-Muller of the uniforms of words w_a, w_b."""
    return tl.random.pair_uniform_to_normal(tl.random.uint_to_uniform_float(w_a), tl.random.uint_to_uniform_float(w_b))


@triton.jit
def contract_normals(seed_lo, seed_hi, step, counter):
    """The four float32 normals (z0, z1, z2, z3) of the Philox call of counter (lo32(counter),
    hi32(counter), step, 0): the normals of flat elements 4 counter + 0 .. 3.

    Words 0, 1 give (r cos, r sin) as outputs 0, 1; words 2, 3 give outputs 2, 3.
    """
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, counter, 0 * counter)
    z0, z1 = _pair_normals(w0, w1)
    z2, z3 = _pair_normals(w2, w3)
    return z0, z1, z2, z3


@triton.jit
def packed_normals(seed_lo, seed_hi, step, particle_id, D):
    """(z0, z1): the normals of elements 0 and 1 of particles of D = 1 or 2 elements (z1 only
    means something for D = 2), one Philox call and one Box-Muller pair per lane.

    Element d of particle p' is flat element g = p' D + d: output g & 3 of counter g >> 2. D
    divides 4, so a particle's elements are outputs first = p' D & 3 and first + 1 of counter
    p' D >> 2, one Box-Muller pair.
    """
    g = particle_id * D
    first = g.to(tl.int32) & 3  # lo32 is enough for the low bits
    w0, w1, w2, w3 = contract_words(seed_lo, seed_hi, step, g >> 2, 0 * g)
    upper = first >= 2  # outputs 2, 3 come from words 2, 3
    z_cos, z_sin = _pair_normals(tl.where(upper, w2, w0), tl.where(upper, w3, w1))
    return tl.where((first & 1) == 1, z_sin, z_cos), z_sin


@triton.jit
def group_shift(particle_id, D, NOISE_MODE: tl.constexpr):
    """The shift s of the groups of particles particle_id (int64, shaped like particle_id):
    group q holds elements d = 4q + k - s (see NOISE_MODE). s = p' D & 3 when GENERAL, else 0."""
    if NOISE_MODE == NOISE_GENERAL:
        return (particle_id * D) & 3
    else:
        return 0 * particle_id


@triton.jit
def group_normals(seed_lo, seed_hi, step, particle_id, group, D, NOISE_MODE: tl.constexpr):
    """The normals (z0, z1, z2, z3) of group ``group`` of the particles particle_id (int64
    global ids) of a [P, D] tensor; particle_id and group are blocks of one shape. z_k is
    element d = 4 group + k - ``group_shift`` (see NOISE_MODE; z_k with d outside [0, D) is
    padding: a neighbouring particle's noise, or unused).

    ALIGNED: the four outputs of counter p' (D / 4) + group; GENERAL: of counter
    (p' D >> 2) + group; PACKED (group 0): ``packed_normals``, z2 and z3 padding. p' D < 2^63
    (the ops check it), so the int64 products are exact.
    """
    if NOISE_MODE == NOISE_ALIGNED:
        z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, particle_id * (D // 4) + group)
    elif NOISE_MODE == NOISE_PACKED:
        z0, z1 = packed_normals(seed_lo, seed_hi, step, particle_id, D)
        z2 = z1
        z3 = z1
    else:
        z0, z1, z2, z3 = contract_normals(seed_lo, seed_hi, step, ((particle_id * D) >> 2) + group)
    return z0, z1, z2, z3


@triton.jit
def _straddling_normals(seed_lo, seed_hi, step, first):
    """The normals (z0, z1, z2, z3) of flat elements first + 0 .. 3 (first: int64 block, any
    alignment), which lie in the calls of counters c = first >> 2 and c + 1.

    Element first + k is position r + k (r = first & 3) of the eight outputs of the two calls,
    i.e. of their four Box-Muller pairs (a0, a1), (a2, a3), (b0, b1), (b2, b3). It needs the
    pairs j0 = r >> 1, j0 + 1 and (r odd only) j0 + 2: three Box-Muller pairs per lane, not
    four; their normals n0 .. n5 hold element first + k at n_{k + (r & 1)}.
    """
    c = first >> 2
    r = first.to(tl.int32) & 3  # lo32 is enough for the low bits
    a0, a1, a2, a3 = contract_words(seed_lo, seed_hi, step, c, 0 * c)
    b0, b1, b2, b3 = contract_words(seed_lo, seed_hi, step, c + 1, 0 * c)
    upper = r >= 2  # j0 = 1: pairs (a2, a3), (b0, b1), (b2, b3); else (a0, a1), (a2, a3), (b0, b1)
    n0, n1 = _pair_normals(tl.where(upper, a2, a0), tl.where(upper, a3, a1))
    n2, n3 = _pair_normals(tl.where(upper, b0, a2), tl.where(upper, b1, a3))
    n4, n5 = _pair_normals(tl.where(upper, b2, b0), tl.where(upper, b3, b1))
    odd = (r & 1) == 1
    return tl.where(odd, n1, n0), tl.where(odd, n2, n1), tl.where(odd, n3, n2), tl.where(odd, n4, n3)


@triton.jit
def particle_normals(seed_lo, seed_hi, step, particle_id, D, NOISE_MODE: tl.constexpr, BLOCK_D: tl.constexpr):
    """[BLOCK_P, BLOCK_D] tile of the normals of elements d = 0 .. BLOCK_D - 1 of the particles
    particle_id ([BLOCK_P], int64 global ids) of a [P, D] tensor with BLOCK_D = 2^ceil(log2 D)
    and NOISE_MODE = ``noise_mode(D)``; columns d >= D are padding.

    The tile's columns are the particle's elements in order, so its groups of four elements
    d = 4q .. 4q + 3 ([BLOCK_P, BLOCK_D / 4], four normals interleaved into place) are Philox
    calls only when ALIGNED. GENERAL: each group straddles two calls (three Box-Muller pairs:
    ``_straddling_normals``); PACKED (D = BLOCK_D <= 2): ``packed_normals``.
    """
    if NOISE_MODE == NOISE_PACKED:
        z0, z1 = packed_normals(seed_lo, seed_hi, step, particle_id, D)
        d = tl.arange(0, BLOCK_D)
        return tl.where(d[None, :] == 0, z0[:, None], z1[:, None])
    else:
        q = tl.arange(0, BLOCK_D // 4)
        ids = particle_id[:, None] + 0 * q[None, :]
        groups = q[None, :] + 0 * particle_id[:, None]
        if NOISE_MODE == NOISE_ALIGNED:
            z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, ids, groups, D, NOISE_MODE)
        else:
            z0, z1, z2, z3 = _straddling_normals(seed_lo, seed_hi, step, ids * D + 4 * groups)
        return tl.interleave(tl.interleave(z0, z2), tl.interleave(z1, z3))


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
def group_tile(n_groups, Q, D, offset, NOISE_MODE: tl.constexpr, BLOCK: tl.constexpr):
    """This program's BLOCK groups of four elements of a contiguous [P, D] tensor, Q per
    particle, laid as NOISE_MODE says (``noise_layout`` gives both): one lane per group.

    Returns (p, q, k, e, row_ok, mask): particle and group index of each group ([BLOCK],
    int64), k = 0..3, the flat element index e = p D + d of output k, d = 4 q + k - s
    ([BLOCK, 4], int64; s = ``group_shift`` of p' = offset + p), the valid groups and the
    valid elements (0 <= d < D: a particle's first and last groups may be partial).
    ``group_normals`` draws the noise of groups (p, q), output k of each.
    """
    # int64 from the start: P * D may exceed 2^31 even when each factor does not.
    g = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    row_ok = g < n_groups
    p = g // Q
    q = g - p * Q
    k = tl.arange(0, 4)
    d = q[:, None] * 4 + k[None, :]
    if NOISE_MODE == NOISE_GENERAL:
        d = d - group_shift(offset + p, D, NOISE_MODE)[:, None]
        mask = row_ok[:, None] & (d >= 0) & (d < D)
    else:
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
    NOISE_MODE: tl.constexpr,
    BLOCK: tl.constexpr,
    BF16: tl.constexpr,
):
    p, q, k, e, row_ok, mask = group_tile(n_groups, Q, D, offset, NOISE_MODE, BLOCK)
    z0, z1, z2, z3 = group_normals(seed_lo, seed_hi, step, offset + p, q, D, NOISE_MODE)
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


def noise_mode(particle_size) -> int:
    """The NOISE_MODE constexpr of particles of D elements: NOISE_ALIGNED when 4 divides D,
    NOISE_PACKED for D <= 2, else NOISE_GENERAL. A plain int; a symbolic size gets guards on
    these conditions only."""
    D = particle_size
    if D % 4 == 0:
        return NOISE_ALIGNED.value
    return NOISE_PACKED.value if D <= 2 else NOISE_GENERAL.value


def noise_layout(particle_size, draws: bool = True):
    """(NOISE_MODE, Q) of ``group_tile`` for particles of D elements: the mode of ``noise_mode``
    and its groups per particle; a kernel that draws no contract noise (``draws`` False) gets
    the plain tiling (NOISE_ALIGNED, ceil(D / 4)) whatever D is. Q is ceil(D / 4) when ALIGNED,
    1 when PACKED, ceil((D + max s) / 4) when GENERAL (s = p' D & 3 is at most 3 for odd D, 2
    for even D)."""
    D = particle_size
    mode = noise_mode(D) if draws else NOISE_ALIGNED.value
    if mode == NOISE_ALIGNED.value:
        return mode, (D + 3) // 4
    if mode == NOISE_PACKED.value:
        return mode, 1
    return mode, (D + (3 if D % 2 else 2) + 3) // 4


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
    mode, Q = noise_layout(D)
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
        NOISE_MODE=mode,
        BLOCK=block,
        BF16=out.dtype == torch.bfloat16,
    )
