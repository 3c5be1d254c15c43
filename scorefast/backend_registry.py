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
import importlib.util
import os
from dataclasses import dataclass

import torch

from . import _extension, cuda_emulator

NAMES = ("reference", "cpp", "cuda", "triton", "numba")
_AUTO_ORDER = {"cpu": ("cpp", "numba", "reference"), "cuda": ("cuda", "triton", "reference")}
# The dispatch key of the compiled backends' kernels in the scorefast namespace.
_DISPATCH_KEYS = {"cpp": "CPU", "cuda": "CUDA"}


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


def triton_interpreting() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _status_cpp() -> BackendStatus:
    if _extension.extension() is None:
        return BackendStatus("cpp", False, (), f"compiled extension not loaded ({_extension.extension_error()})")
    return BackendStatus("cpp", True, ("cpu",), f"CPU kernels for {', '.join(_extension.extension().supported_cpu_isas())}")


def _status_cuda() -> BackendStatus:
    if cuda_emulator.requested():
        try:
            cuda_emulator.load()
        except Exception as exc:  # no compiler, no ninja, no source tree, a build error
            return BackendStatus("cuda", False, (), f"the CUDA emulator failed to build ({type(exc).__name__}: {exc})")
        return BackendStatus("cuda", True, ("cpu",), "emulated on the CPU (slow; for testing)")
    ext = _extension.extension()
    hint = f" (set {cuda_emulator.ENV_FLAG}=1 to test the CUDA kernels on the CPU)"
    if ext is None:
        return BackendStatus("cuda", False, (), "compiled extension not loaded")
    if not ext.built_with_cuda():
        return BackendStatus("cuda", False, (), "extension built without CUDA (CPU torch or no nvcc at build time)" + hint)
    if not torch.cuda.is_available():
        return BackendStatus("cuda", False, (), "no CUDA GPU visible" + hint)
    return BackendStatus("cuda", True, ("cuda",))


def _status_triton() -> BackendStatus:
    if importlib.util.find_spec("triton") is None:
        return BackendStatus("triton", False, (), "triton is not installed (pip install triton)")
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if triton_interpreting():
        devices.append("cpu")
    if not devices:
        return BackendStatus("triton", False, (), "no CUDA GPU (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)")
    try:
        importlib.import_module("scorefast.triton_kernels")
    except Exception as exc:  # a triton too old or broken
        return BackendStatus("triton", False, (), f"Triton kernels failed to load ({type(exc).__name__}: {exc})")
    reason = "interpreter on CPU (slow; for testing)" if "cpu" in devices else ""
    return BackendStatus("triton", True, tuple(devices), reason)


def _status_numba() -> BackendStatus:
    if importlib.util.find_spec("numba") is None:
        return BackendStatus("numba", False, (), "numba is not installed (pip install numba)")
    try:
        importlib.import_module("scorefast.numba_kernels")
    except Exception as exc:
        return BackendStatus("numba", False, (), f"numba kernels failed to load ({type(exc).__name__}: {exc})")
    return BackendStatus("numba", True, ("cpu",))


@functools.lru_cache(maxsize=None)
def _status_cached(name: str, interpreting: bool, emulating: bool) -> BackendStatus:
    if name == "reference":
        return BackendStatus("reference", True, ("cpu", "cuda"), "pure PyTorch")
    return {"cpp": _status_cpp, "cuda": _status_cuda, "triton": _status_triton, "numba": _status_numba}[name]()


def status(name: str) -> BackendStatus:
    """The availability of backend ``name``."""
    check_name(name)
    return _status_cached(name, triton_interpreting(), cuda_emulator.requested())


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
    return _resolve(backend, device.type, op, triton_interpreting(), cuda_emulator.requested())


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


_NAMESPACES = {"cpp": "scorefast", "cuda": "scorefast", "triton": "scorefast_triton", "numba": "scorefast_numba"}


def _library(backend: str) -> tuple[str, str | None]:
    """(the ``torch.ops`` namespace of a compiled backend's ops, the dispatch key of its
    kernels there, or None for a namespace of its own). The CUDA emulator registers the
    CUDA kernels in its own namespace under the CPU key."""
    if backend not in _NAMESPACES:
        raise ValueError(f"backend {backend!r} has no compiled ops")
    if backend == "cuda" and cuda_emulator.requested():
        return cuda_emulator.LIBRARY, "CPU"
    return _NAMESPACES[backend], _DISPATCH_KEYS.get(backend)


def op_namespace(backend: str):
    """The ``torch.ops`` namespace holding a compiled backend's ops (after ``resolve`` loaded it)."""
    return getattr(torch.ops, _library(backend)[0])
