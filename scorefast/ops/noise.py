"""Contract of the noise ops: the Philox words and the standard normals of the noise
contract, and their definition: the reference at the end of this module.

    philox_fill_(out, seed, step, particle_offset)   out: int64 [P, Q, 4], contiguous, values in
                                                     [0, 2^32): Philox of counter (p', step, q)
    normal_fill_(out, seed, step, particle_offset)   out: float32, float64, float16 or bfloat16,
                                                     dim 0 = particles, contiguous: the float32
                                                     normals rounded to out's dtype
    *_counter_                                       the same with ``step`` an int64 tensor of one
                                                     element, read when the kernel runs (CUDA graphs)

Seeds travel as int64 (the schema type); kernels read their bits as uint64.
"""

from __future__ import annotations

import torch

from ._common import check_counter, check_storage, fail, scalar_name

SCHEMAS = {
    "philox_fill_": "(Tensor(a!) out, SymInt seed, SymInt step, SymInt particle_offset) -> ()",
    "normal_fill_": "(Tensor(a!) out, SymInt seed, SymInt step, SymInt particle_offset) -> ()",
    "philox_fill_counter_": "(Tensor(a!) out, SymInt seed, Tensor step, SymInt particle_offset) -> ()",
    "normal_fill_counter_": "(Tensor(a!) out, SymInt seed, Tensor step, SymInt particle_offset) -> ()",
}


def check_philox_fill(out: torch.Tensor, step: int, particle_offset: int) -> None:
    """The checks of ``philox_fill_`` (messages of csrc/cpu/noise_cpu.cpp)."""
    if out.dtype != torch.int64:
        fail(f"out must be int64, got {scalar_name(out.dtype)}")
    if out.dim() != 3 or out.shape[2] != 4:
        fail(f"out must have shape [P, Q, 4], got {list(out.shape)}")
    if not out.is_contiguous():
        fail("out must be contiguous")
    check_counter(step, particle_offset, out.shape[0])
    if out.shape[1] > 2**32:
        fail(f"Q must be <= 2^32, got {out.shape[1]}")


def check_normal_fill(out: torch.Tensor, step: int, particle_offset: int) -> None:
    """The checks of ``normal_fill_``."""
    check_storage(out, "out")
    if out.dim() < 1:
        fail("out must have at least one dimension (dim 0 = particles)")
    if not out.is_contiguous():
        fail("out must be contiguous")
    check_counter(step, particle_offset, out.shape[0], out.numel() // out.shape[0] if out.shape[0] else 0)


def _fake_fill(out, seed, step, particle_offset):
    return None


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernels of the noise ops in ``ops`` (they write in place; nothing to differentiate)."""
    if fakes:
        for op in ops:
            torch.library.register_fake(f"{namespace}::{op}", _fake_fill)


# The definition: the pure-PyTorch reference every kernel is tested against.
#
# Reference of the noise contract, in plain PyTorch integer and float32 ops.
#
# A tensor viewed as [P, D] gets, at sampler step t,
#
#     z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(g >> 2), hi32(g >> 2), t, 0)))[g & 3]
#     g = (particle_offset + p) * D + d,  the flat index of the element, < 2^63
#
# (every tensor draws the noise of its flat [P D / 4, 4] view, so every word of a Philox call
# is used whatever D is, and the noise of a particle depends on its id and D only). Counters
# with a last word >= 1 are free for other draws: a MALA step's acceptance uniform is word 0
# of counter (lo32(p'), hi32(p'), t, ceil(D / 4)), p' = particle_offset + p.
#
# Philox, the uint32 -> uniform map and Box-Muller are exactly Triton's ``tl.philox``,
# ``uint_to_uniform_float`` and ``pair_uniform_to_normal``. Words are held in int64
# tensors with values in [0, 2^32); products are split in 16-bit halves so nothing
# overflows.


MASK32 = 0xFFFFFFFF
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUNDS = 10
UNIFORM_SCALE = 4.6566127342e-10  # largest float with INT32_MAX * scale < 1
MIN_UNIFORM = 1.0e-7
TWO_PI = 6.283185307179586


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product of constant ``a`` and words ``b``."""
    p_lo = b * (a & 0xFFFF)  # < 2^48
    p_hi = b * (a >> 16)  # < 2^48
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (mid >> 32), mid & MASK32


def philox4x32_10(c0, c1, c2, c3, seed: int):
    """Philox4x32-10 of counter words (int64 tensors in [0, 2^32)) with key (lo32, hi32) of seed."""
    seed &= 2**64 - 1
    k0, k1 = seed & MASK32, seed >> 32
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mulhilo32(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mulhilo32(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return c0, c1, c2, c3


def philox_words_ref(
    num_particles: int, num_groups: int, seed: int, step: int = 0, particle_offset: int = 0, device=None
) -> torch.Tensor:
    """Words of counters (particle_offset + p, step, q): int64 [P, Q, 4] in [0, 2^32)."""
    p = torch.arange(num_particles, dtype=torch.int64, device=device) + particle_offset
    q = torch.arange(num_groups, dtype=torch.int64, device=device)
    c0 = (p & MASK32)[:, None].expand(-1, num_groups)
    c1 = (p >> 32)[:, None].expand(-1, num_groups)
    c2 = torch.full_like(c0, step)
    c3 = q[None, :].expand(num_particles, -1)
    return torch.stack(philox4x32_10(c0, c1, c2, c3, seed), dim=-1)


def uniform_ref(words: torch.Tensor) -> torch.Tensor:
    """uint32 words (int64 tensor) -> float32 uniforms in [0, 1), as Triton's uint_to_uniform_float."""
    i = torch.where(words >= 2**31, words - 2**32, words)  # bits as int32
    i = torch.where(i < 0, -i - 1, i)
    scale = torch.tensor(UNIFORM_SCALE, dtype=torch.float32)  # a CPU scalar: no copy to the device
    return i.to(torch.float32) * scale


def box_muller_ref(u1: torch.Tensor, u2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(r cos th, r sin th) of float32 uniforms, as Triton's pair_uniform_to_normal."""
    f32 = dict(dtype=torch.float32, device=u1.device)
    u1 = torch.maximum(u1, torch.tensor(MIN_UNIFORM, **f32))
    theta = torch.tensor(TWO_PI, **f32) * u2
    radius = torch.sqrt(torch.tensor(-2.0, **f32) * torch.log(u1))
    return radius * torch.cos(theta), radius * torch.sin(theta)


def _normals_of_words(w: torch.Tensor) -> torch.Tensor:
    """The four normals of each Philox group: int64 words [..., 4] -> float32 [..., 4]."""
    u = uniform_ref(w)
    z0, z1 = box_muller_ref(u[..., 0], u[..., 1])
    z2, z3 = box_muller_ref(u[..., 2], u[..., 3])
    return torch.stack((z0, z1, z2, z3), dim=-1)


def contract_outputs_ref(
    num_particles: int, particle_size: int, seed: int, step: int, particle_offset: int, outputs_of_words, device=None
) -> torch.Tensor:
    """[P, D] of element (p, d)'s output of the contract's Philox call: ``outputs_of_words`` maps
    int64 words [..., 4] to the four outputs [..., 4] (the normals, or any function of them)."""
    P, D = num_particles, particle_size
    start = particle_offset * D  # flat index g of element (0, 0)
    first, last = start >> 2, (start + P * D - 1) >> 2
    w = philox_words_ref(max(last - first + 1, 0), 1, seed, step, first, device)
    z = outputs_of_words(w).reshape(-1)
    return z[start & 3 : (start & 3) + P * D].reshape(P, D).contiguous()


def normal_ref(
    num_particles: int, particle_size: int, seed: int, step: int = 0, particle_offset: int = 0, device=None
) -> torch.Tensor:
    """The contract's standard normals z: float32 [P, D]."""
    return contract_outputs_ref(num_particles, particle_size, seed, step, particle_offset, _normals_of_words, device)


def normal_like_ref(x: torch.Tensor, seed: int, step: int = 0, particle_offset: int = 0) -> torch.Tensor:
    """Contract normals for a tensor shaped like x (dim 0 = particles), float32."""
    P = x.shape[0]
    D = x.numel() // P if P else 0
    return normal_ref(P, D, seed, step, particle_offset, x.device).reshape(x.shape)
