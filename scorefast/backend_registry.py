"""Backend registry: which kernel implementations exist here, and which one a call uses.

Backends:
    reference  pure PyTorch, any device; the definition of every op
    cpp        C++ CPU kernels (OpenMP threads, AVX2/FMA or portable)
    cuda       CUDA C++ kernels (built only with a CUDA torch and nvcc; on CPU tensors
               through the emulator when SCOREFAST_CUDA_EMULATOR=1, for testing)
    triton     Triton kernels (CUDA GPUs; CPU tensors too when TRITON_INTERPRET=1)
    numba      numba-JIT CPU kernels (no compiler needed)

``backend="auto"`` picks, for CPU tensors: cpp, then numba, then reference; for CUDA
tensors: cuda, then triton, then reference. A backend asked for by name that cannot run
raises an error naming what is missing; it never silently falls back.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import torch

from . import _extension
from ._backend import Backend
from ._env import cuda_emulator_requested, triton_interpreting
from .kernels import numba as _numba_kernels
from .kernels import triton as _triton_kernels

NAMES = ("reference", "cpp", "cuda", "triton", "numba")
_AUTO_ORDER = {"cpu": ("cpp", "numba", "reference"), "cuda": ("cuda", "triton", "reference")}
# Each compiled backend describes itself (namespace, dispatch key, status) where it lives.
_BACKENDS = {b.name: b for b in (_extension.CPP, _extension.CUDA, _triton_kernels.BACKEND, _numba_kernels.BACKEND)}
# The CUDA emulator is a test tool above the package (scorefast.testing), loaded by name only
# when SCOREFAST_CUDA_EMULATOR asks for it; it then stands in for the cuda backend.
_CUDA_EMULATOR_MODULE = "scorefast.testing.cuda_emulator"

__all__ = [
    "BackendStatus",
    "backends",
    "status",
    "resolve",
    "has_op",
    "op_namespace",
    "is_emulated",
    "triton_interpreting",
]


@dataclass(frozen=True)
class BackendStatus:
    """Availability of one backend: ``available``, the device types it runs on, and why not."""

    name: str
    available: bool
    devices: tuple[str, ...]
    reason: str = ""

    def __str__(self) -> str:
        where = ", ".join(self.devices) if self.devices else "-"
        return f"{self.name:<10} {'yes' if self.available else 'no':<4} {where:<10} {self.reason}"


_emulator: list[Backend] = []  # the emulator's description once imported (no import under torch.compile)


def _backend(name: str) -> Backend:
    """The description of compiled backend ``name`` (the emulator's for cuda when requested)."""
    if name == "cuda" and cuda_emulator_requested():
        if not _emulator:
            _emulator.append(importlib.import_module(_CUDA_EMULATOR_MODULE).BACKEND)
        return _emulator[0]
    return _BACKENDS[name]


@functools.cache
def _status_cached(name: str, interpreting: bool, emulating: bool) -> BackendStatus:
    if name == "reference":
        return BackendStatus("reference", True, ("cpu", "cuda"), "pure PyTorch")
    available, devices, reason = _backend(name).status()
    return BackendStatus(name, available, devices, reason)


def status(name: str) -> BackendStatus:
    """The availability of backend ``name``."""
    check_name(name)
    return _status_cached(name, triton_interpreting(), cuda_emulator_requested())


def backends() -> dict[str, BackendStatus]:
    """Every backend and whether it can run here (``print(*backends().values(), sep="\\n")``)."""
    return {name: status(name) for name in NAMES}


def is_emulated(name: str, device_type: str) -> bool:
    """True where ``name`` runs on ``device_type`` only to be tested, not timed: Triton's
    interpreter and the CUDA emulator on CPU tensors."""
    return name in ("triton", "cuda") and device_type == "cpu"


def check_name(name: str) -> None:
    if name != "auto" and name not in NAMES:
        raise ValueError(f"backend must be 'auto' or one of {', '.join(map(repr, NAMES))}, got {name!r}")


def has_op(backend: str, op: str) -> bool:
    """Whether an available ``backend`` carries a kernel for ``op`` (the reference has them all)."""
    if backend == "reference":
        return True
    if not status(backend).available:
        return False
    namespace, key = _library(backend)
    try:
        getattr(getattr(torch.ops, namespace), op)
    except (AttributeError, RuntimeError):
        return False
    if key is not None:
        # cpp and cuda share one namespace whose schemas are all declared: the op must also
        # have a kernel for the backend's device.
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"{namespace}::{op}", key)
    return True


# Under torch.compile the choice is made once at trace time and baked into the graph.
@torch.compiler.assume_constant_result
def resolve(backend: str, device: torch.device, op: str = "langevin_step") -> str:
    """The backend that runs ``op`` on ``device``: ``backend`` itself, checked, or the auto choice."""
    return _resolve(backend, device.type, op, triton_interpreting(), cuda_emulator_requested())


# Cached: small ops are called thousands of times a second (errors are not cached, so a
# bad choice raises every time).
@functools.lru_cache(maxsize=256)
def _resolve(backend: str, dev: str, op: str, interpreting: bool, emulating: bool) -> str:
    check_name(backend)
    if backend == "auto":
        for name in _AUTO_ORDER.get(dev, ("reference",)):
            s = status(name)
            if s.available and dev in s.devices and has_op(name, op):
                return name
        return "reference"
    s = status(backend)
    if not s.available:
        raise RuntimeError(f"backend {backend!r} is not available: {s.reason}")
    if dev not in s.devices:
        runs_on = " and ".join(s.devices)
        raise ValueError(f"backend {backend!r} runs on {runs_on} tensors, got tensors on {dev}")
    if not has_op(backend, op):
        raise NotImplementedError(f"backend {backend!r} has no {op} kernel; use backend='auto' or 'reference'")
    return backend


def _library(backend: str) -> tuple[str, str | None]:
    """(the ``torch.ops`` namespace of a compiled backend's ops, the dispatch key of its kernels
    there, or None for a namespace of its own)."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r} has no compiled ops")
    b = _backend(backend)
    return b.namespace, b.dispatch_key


def op_namespace(backend: str):
    """The ``torch.ops`` namespace holding a compiled backend's ops (after ``resolve`` loaded it)."""
    return getattr(torch.ops, _library(backend)[0])
