"""Contract of the noise ops: the Philox words and the standard normals of the noise
contract (``scorefast.reference.noise`` defines them).

    philox_fill_(out, seed, step, particle_offset)   out: int64 [P, Q, 4], contiguous, values in
                                                     [0, 2^32): Philox of counter (p', step, q)
    normal_fill_(out, seed, step, particle_offset)   out: float32, dim 0 = particles, contiguous
    *_counter_                                       the same with ``step`` an int64 tensor of one
                                                     element, read when the kernel runs (CUDA graphs)

Seeds travel as int64 (the schema type); kernels read their bits as uint64.
"""

from __future__ import annotations

import torch

from ._common import check_counter, check_particle_size, fail, scalar_name

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
    if out.dtype != torch.float32:
        fail(f"out must be float32, got {scalar_name(out.dtype)}")
    if out.dim() < 1:
        fail("out must have at least one dimension (dim 0 = particles)")
    if not out.is_contiguous():
        fail("out must be contiguous")
    check_counter(step, particle_offset, out.shape[0])
    if out.numel():
        check_particle_size(out.numel() // out.shape[0])


def _fake_fill(out, seed, step, particle_offset):
    return None


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernels of the noise ops in ``ops`` (they write in place; nothing to differentiate)."""
    if fakes:
        for op in ops:
            torch.library.register_fake(f"{namespace}::{op}", _fake_fill)
