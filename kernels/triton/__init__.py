"""Triton kernels: the ``triton`` backend, ops in the namespace ``torch.ops.scorefast_triton``.

Runs on CUDA GPUs, and on CPU tensors through the Triton interpreter (``TRITON_INTERPRET=1``,
slow: for tests). One module per op family; the backend's first status check imports them
(declaring the ops) and gives them the contracts' autograd (scorefast/ops/). The ops are their
own fake kernels (see ``noise.custom_op``).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import torch

from ..._backend import Backend
from ..._env import triton_interpreting
from ...ops import register_namespace

NAMESPACE = "scorefast_triton"


def _load() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    register_namespace(NAMESPACE, define=False, fakes=False, step_tensor_ops=False)


def _status() -> tuple[bool, tuple[str, ...], str]:
    if importlib.util.find_spec("triton") is None:
        return False, (), "triton is not installed (pip install triton)"
    devices = (("cuda",) if torch.cuda.is_available() else ()) + (("cpu",) if triton_interpreting() else ())
    if not devices:
        return False, (), "no CUDA GPU (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
    try:
        _load()
    except Exception as exc:  # a triton too old or broken
        return False, (), f"Triton kernels failed to load ({type(exc).__name__}: {exc})"
    return True, devices, "interpreter on CPU (slow; for testing)" if "cpu" in devices else ""


BACKEND = Backend("triton", NAMESPACE, None, _status)
