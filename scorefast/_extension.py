"""Loads the compiled extension ``scorefast._C`` (C++ CPU and CUDA kernels) and describes the
``cpp`` and ``cuda`` backends it provides.

The C++ code only registers kernels (``TORCH_LIBRARY_IMPL``); the schemas of its namespace
``scorefast`` come from the op contracts (``scorefast.ops``), declared here once the library is
loaded. A missing or broken build never makes ``import scorefast`` fail: it warns once and the
``cpp`` and ``cuda`` backends report themselves unavailable with the reason.
"""

from __future__ import annotations

import warnings

import torch

from ._backend import Backend
from ._env import CUDA_EMULATOR_FLAG
from .ops import register_namespace

NAMESPACE = "scorefast"

_module = None
_error: str | None = None

try:  # pragma: no branch - one of the two always runs
    from . import _C as _module  # noqa: F401  (registers the kernels of torch.ops.scorefast.*)
except Exception as exc:  # ImportError, or an undefined symbol from a mismatched torch
    _error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "scorefast: the compiled extension could not be loaded; the 'cpp' and 'cuda' backends are "
        f"disabled ({_error}). Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    register_namespace(NAMESPACE, define=True)


def extension():
    """The loaded ``scorefast._C`` module, or None."""
    return _module


def extension_error() -> str | None:
    """Why the extension is not loaded, or None when it is."""
    return _error


def _status_cpp() -> tuple[bool, tuple[str, ...], str]:
    if _module is None:
        return False, (), f"compiled extension not loaded ({_error})"
    return True, ("cpu",), f"CPU kernels for {', '.join(_module.supported_cpu_isas())}"


def _status_cuda() -> tuple[bool, tuple[str, ...], str]:
    hint = f" (set {CUDA_EMULATOR_FLAG}=1 to test the CUDA kernels on the CPU)"
    if _module is None:
        return False, (), "compiled extension not loaded"
    if not _module.built_with_cuda():
        return False, (), "extension built without CUDA (CPU torch or no nvcc at build time)" + hint
    if not torch.cuda.is_available():
        return False, (), "no CUDA GPU visible" + hint
    return True, ("cuda",), ""


CPP = Backend("cpp", NAMESPACE, "CPU", _status_cpp)
CUDA = Backend("cuda", NAMESPACE, "CUDA", _status_cuda)
