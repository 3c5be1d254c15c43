"""The noise contract as public functions, on every backend.

    z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(g >> 2), hi32(g >> 2), t, 0)))[g & 3]
    g = (particle_offset + p) D + d  (< 2^63),  t = step,  tensor viewed as [P, D] (dim 0 = particles)

Every tensor draws the noise of its flat [P D / 4, 4] view, so every word of a Philox call is
used whatever D is. The same (seed, particle, step, D) gives the same noise on every backend,
whatever the batch chunking, thread count or launch configuration. See
``scorefast.reference.noise``.

``step`` may also be a one-element int64 tensor on the output's device, read by the kernel
when it runs (ops ``<ns>::philox_fill_counter_`` / ``normal_fill_counter_``): a CUDA graph
that captured the call draws the noise of whatever step the tensor holds at replay.
"""

from __future__ import annotations

import math

import torch

from . import _checks, _extension
from . import backend_registry as backends
from .ops.noise import normal_ref, philox_words_ref


def _step_and_op(step, device: torch.device, op: str):
    """(int step for the checks, the step tensor or None, the op that takes it)."""
    if isinstance(step, torch.Tensor):
        return 0, _checks.check_step_tensor(step, device), op + "counter_"
    return step, None, op


def philox_words(
    num_particles: int,
    num_groups: int,
    *,
    seed: int,
    step=0,
    particle_offset: int = 0,
    device="cpu",
    backend: str = "auto",
) -> torch.Tensor:
    """Raw Philox words of the contract.

    Returns int64 [num_particles, num_groups, 4] with values in [0, 2^32): entry [p, q, :] is
    Philox4x32-10 of counter (lo32(p'), hi32(p'), step, q), key (lo32(seed), hi32(seed)).
    ``seed`` in [0, 2^64), ``step`` in [0, 2^32) (an int, or an int64 tensor of one element
    on ``device``, read when the kernel runs), ``particle_offset`` >= 0.
    """
    P = _checks.check_int(num_particles, "num_particles", 0, 2**63 - 1)
    Q = _checks.check_int(num_groups, "num_groups", 0, 2**32)
    seed64 = _checks.seed_to_int64(seed)
    seed = seed64 % 2**64  # a Python int for the reference (numpy integers overflow there)
    device = torch.device(device)
    step, step_tensor, op = _step_and_op(step, device, "philox_fill_")
    step, particle_offset = _checks.check_counter(step, particle_offset, P)
    name = backends.resolve(backend, device, op)
    if name == "reference":
        step = step if step_tensor is None else int(step_tensor)  # a host read: not for CUDA graphs
        return philox_words_ref(P, Q, seed, step, particle_offset, device)
    out = torch.empty((P, Q, 4), dtype=torch.int64, device=device)
    if step_tensor is None:
        backends.op_namespace(name).philox_fill_(out, seed64, step, particle_offset)
    else:
        backends.op_namespace(name).philox_fill_counter_(out, seed64, step_tensor, particle_offset)
    return out


def normal(
    shape, *, seed: int, step=0, particle_offset: int = 0, dtype=torch.float32, device="cpu", backend: str = "auto"
) -> torch.Tensor:
    """Standard normals of the contract for a tensor of ``shape`` (dim 0 = particles).

    The values are float32 (Box-Muller in float32, as Triton's randn); ``dtype`` (float32,
    float64, float16 or bfloat16; default float32) only sets the storage of the result, the
    float32 values rounded to nearest even as the kernels store them. ``seed`` in [0, 2^64),
    ``step`` in [0, 2^32) (an int, or an int64 tensor of one element on ``device``, read when
    the kernel runs).
    """
    dims = shape if isinstance(shape, (tuple, list, torch.Size)) else (shape,)
    shape = tuple(_checks.check_int(s, "shape entry", 0, 2**63 - 1) for s in dims)
    if len(shape) == 0:
        raise ValueError("shape must have at least one dimension (dim 0 = particles)")
    if dtype not in _checks.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32, float64, float16 or bfloat16, got {dtype}")
    seed64 = _checks.seed_to_int64(seed)
    seed = seed64 % 2**64  # a Python int for the reference (numpy integers overflow there)
    device = torch.device(device)
    step, step_tensor, op = _step_and_op(step, device, "normal_fill_")
    step, particle_offset = _checks.check_counter(step, particle_offset, shape[0], math.prod(shape[1:]))
    name = backends.resolve(backend, device, op)
    P = shape[0]
    D = math.prod(shape[1:]) if P else 0
    if name == "reference":
        step = step if step_tensor is None else int(step_tensor)  # a host read: not for CUDA graphs
        out = normal_ref(P, D, seed, step, particle_offset, device).reshape(shape)
        return out.to(dtype)
    if name == "cpp" and not torch.compiler.is_compiling():
        # large outputs from the CPU kernels' cache of released outputs (no page faults); a
        # compiled graph allocates its own
        out = _extension.extension().empty_cpu_output(list(shape), dtype)
    else:
        out = torch.empty(shape, dtype=dtype, device=device)
    # the kernels round to dtype as they store
    if step_tensor is None:
        backends.op_namespace(name).normal_fill_(out, seed64, step, particle_offset)
    else:
        backends.op_namespace(name).normal_fill_counter_(out, seed64, step_tensor, particle_offset)
    return out


def normal_like(x: torch.Tensor, *, seed: int, step=0, particle_offset: int = 0, backend: str = "auto") -> torch.Tensor:
    """Contract normals shaped like ``x`` (dim 0 = particles), in x's dtype and device."""
    _checks.check_float_tensor(x, "x")
    return normal(
        x.shape, seed=seed, step=step, particle_offset=particle_offset, dtype=x.dtype, device=x.device, backend=backend
    )


def random_seed() -> int:
    """A fresh 64-bit seed drawn from torch's global generator (so torch.manual_seed applies)."""
    hi, lo = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
    return (hi << 32) | lo


def resolve_seed(seed, noise=None) -> tuple[int, int]:
    """The key of an op call's noise: (the int64 with the seed's bits, the ops' schema type;
    the seed in [0, 2^64), a Python int for the references). ``seed`` None draws one with
    random_seed(); with explicit ``noise`` the seed must be None (the ops are given 0, unread)."""
    if noise is not None:
        if seed is not None:
            raise ValueError("pass either noise= (explicit noise) or seed= (counter-based noise), not both")
        seed = 0
    elif seed is None:
        seed = random_seed()
    seed64 = _checks.seed_to_int64(seed)
    return seed64, seed64 % 2**64


def resolve_counter(seed, step, particle_offset, num_particles: int, particle_size: int) -> tuple[int, int, int, int]:
    """(seed in [0, 2^64), its int64 bits, step, particle_offset) of a call that draws its own
    noise: resolve_seed's and _checks.check_counter's checks."""
    seed64, seed = resolve_seed(seed)
    step, particle_offset = _checks.check_counter(step, particle_offset, num_particles, particle_size)
    return seed, seed64, step, particle_offset
