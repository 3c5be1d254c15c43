"""Checks shared by the op contracts, with the messages of the C++ ops (csrc/*_op.h), so a
direct ``torch.ops.<namespace>.<op>`` call fails the same way on every backend. They raise
RuntimeError, as TORCH_CHECK does; the public functions check their arguments first with
friendlier types (scorefast/_checks.py)."""

from __future__ import annotations

import math

import torch

STORAGE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_STEP = 2**32 - 1  # the step is one 32-bit word of the Philox counter
MAX_PARTICLE_SIZE = 2**34  # ceil(D / 4), the group of a MALA uniform, is one 32-bit counter word
MAX_FLAT_INDEX = 2**63  # the noise's flat element index (particle_offset + p) D + d is an int64


# torch dtypes as the C++ checks print them (c10::ScalarType names).
_SCALAR_NAMES = {
    torch.float32: "Float",
    torch.float64: "Double",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.bool: "Bool",
}


def scalar_name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype))


def fail(message: str):
    raise RuntimeError(message)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The math dtype of a storage dtype: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_storage(t: torch.Tensor, name: str) -> None:
    if t.dtype not in STORAGE_DTYPES:
        fail(f"{name} must be float32, float64, float16 or bfloat16, got {scalar_name(t.dtype)}")


def check_device(t: torch.Tensor, name: str, device_type: str | None, kernels: str) -> None:
    """Kernels that run on one device type only (None: any): e.g. 'cpu', 'the numba kernels'."""
    if device_type is not None and t.device.type != device_type:
        fail(f"{name} must be a {device_type.upper()} tensor for {kernels}, got {t.device}")


def check_like(x: torch.Tensor, t: torch.Tensor, name: str) -> None:
    if t.shape != x.shape:
        fail(f"{name} must have the shape of x {list(x.shape)}, got {list(t.shape)}")
    if t.device != x.device:
        fail(f"{name} must be on the device of x ({x.device}), got {t.device}")


def check_per_particle(x: torch.Tensor, t: torch.Tensor | None, name: str) -> None:
    if t is None:
        return
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        fail(f"{name} must have shape [P] = [{x.shape[0]}] (one value per particle), got {list(t.shape)}")
    if t.device != x.device:
        fail(f"{name} must be on the device of x ({x.device}), got {t.device}")
    acc = acc_dtype(x.dtype)
    if t.dtype != acc:
        fail(f"{name} must be {scalar_name(acc)} for x of dtype {scalar_name(x.dtype)}, got {scalar_name(t.dtype)}")


def elements_per_particle(t: torch.Tensor) -> int:
    """D of a tensor whose dim 0 holds the particles (0 when there are none)."""
    return t.numel() // t.shape[0] if t.dim() and t.shape[0] else 0


def check_counter(step: int, particle_offset: int, num_particles: int, particle_size: int = 1) -> None:
    """The noise counter of num_particles particles of particle_size elements from particle_offset
    at ``step``: each word in range, the particle size within check_particle_size's bound and
    the flat element indices within check_flat_extent's."""
    if not 0 <= step <= MAX_STEP:
        fail(f"step must be in [0, 2^32) (one 32-bit counter word), got {step}")
    if particle_offset < 0:
        fail(f"particle_offset must be >= 0, got {particle_offset}")
    if particle_offset + num_particles > 2**63:
        fail(f"particle_offset + number of particles must be <= 2^63, got {particle_offset} + {num_particles}")
    check_particle_size(particle_size)
    check_flat_extent(particle_offset, num_particles, particle_size)


def check_flat_extent(particle_offset: int, num_particles: int, particle_size: int) -> None:
    """The noise's flat element indices (particle_offset + p) D + d must stay below 2^63."""
    if num_particles and (particle_offset + num_particles) * particle_size > MAX_FLAT_INDEX:
        fail(
            f"(particle_offset + number of particles) * elements per particle must be <= 2^63 (the noise's "
            f"flat element index), got ({particle_offset} + {num_particles}) * {particle_size}"
        )


def check_particle_size(D: int) -> None:
    if D > MAX_PARTICLE_SIZE:
        fail(f"elements per particle must be <= 2^34 (ceil(D / 4) is a 32-bit counter word), got {D}")


def check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        fail(f"{name} must be finite, got {value}")


def _holds_memory(t: torch.Tensor) -> bool:
    # Tensor subclasses used for tracing (fake, functional) have no data pointer to compare.
    return type(t) in (torch.Tensor, torch.nn.Parameter) and t.device.type != "meta"


def partially_overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two dense tensors share some, but not all, of their memory. Like PyTorch's own
    overlap check, tensors that are not contiguous count as not overlapping (too costly to
    decide; the kernels update them through a contiguous copy, which reads every input first)."""
    if not (_holds_memory(a) and _holds_memory(b)):
        return False  # fake or meta tensors while tracing: nothing is written yet
    if a.device != b.device or not (a.is_contiguous() and b.is_contiguous()) or a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    a1, b1 = a0 + a.numel() * a.element_size(), b0 + b.numel() * b.element_size()
    if (a0, a1, a.dtype) == (b0, b1, b.dtype):
        return False  # the same elements (``score is x``): each is read before it is written
    return a0 < b1 and b0 < a1


def overlap_message(name: str) -> str:
    """The error for an input ``name`` that partially overlaps x (the C++ check says the same)."""
    return (
        f"{name} partially overlaps x in memory: the in-place update would read elements it has "
        f"already written (pass a copy, e.g. {name}.clone())"
    )


def check_no_partial_overlap(x: torch.Tensor, t: torch.Tensor | None, name: str) -> None:
    """An input ``t`` of an in-place update of ``x`` must not partially overlap it."""
    if t is not None and partially_overlaps(x, t):
        fail(overlap_message(name))
