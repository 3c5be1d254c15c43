"""What every op's reference checks share: variants, sizes, the noise counter, input data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ... import backend_registry

# The noise counter of every check: a seed with its top bit set, particle ids that cross 2^32.
SEED = 2**63 + 12345
STEP = 7
PARTICLE_OFFSET = 2**32 - 3

FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Variant:
    """One named configuration of an op: its options, the storage dtypes it is checked in, and
    the kernel a backend must carry to run it (None: the op's usual kernel)."""

    options: dict = field(default_factory=dict)
    dtypes: tuple[torch.dtype, ...] = FLOATS
    kernel: str | None = None


@dataclass(frozen=True)
class Size:
    """Problem size: particles (rows, dim 0) and elements per particle. Mixture ops cap the
    dimension (``mixture_dim``) and chains the particles (``chain_particles``)."""

    particles: int = 257
    dim: int = 67

    @property
    def mixture_dim(self) -> int:
        return min(self.dim, 5)

    @property
    def chain_particles(self) -> int:
        return min(self.particles, 64)


DEFAULT_SIZE = Size()
EMULATED_SIZE = Size(9, 13)  # Triton's interpreter and the CUDA emulator run every lane in Python or fibers


def randn(shape, dtype: torch.dtype, device, generator: torch.Generator) -> torch.Tensor:
    """Standard normals drawn in float64 and rounded to ``dtype`` (the reference sees the rounded values)."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype).to(device)


def device_for(backend: str) -> torch.device:
    """The device a backend's checks run on: a CUDA GPU where it runs there, else the CPU."""
    if backend == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    status = backend_registry.status(backend)
    if not status.available:
        raise RuntimeError(f"backend {backend!r} is not available: {status.reason}")
    if "cuda" in status.devices and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device(status.devices[0])
