"""The op contracts: one module per op family holds its schemas, the argument checks of its
kernels (the messages of the C++ checks), its fake kernels and its autograd.

Every backend's ops carry these schemas: the compiled kernels (``scorefast``, the CUDA
emulator's namespace) only register implementations in C++ and get their schemas from
``define``; the numba ops are declared with them; the Triton ops infer theirs from their
signatures, which a test compares with this table. ``register_namespace`` is the one loop
that gives every namespace its schemas, fake kernels and autograd.

This package is at the bottom of the import graph: it imports torch and nothing above it.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

# The op families, found by module name so that a new family needs no edit here.
FAMILIES = tuple(
    importlib.import_module(f"{__name__}.{m.name}")
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    if not m.name.startswith("_")
)

# Ops that take the step as a tensor read on the device (for CUDA graphs): compiled backends only.
STEP_TENSOR_OPS = frozenset(op for family in FAMILIES for op in family.SCHEMAS if op.endswith("counter_"))


def schemas() -> dict[str, str]:
    """Every op's schema after its name, e.g. ``{"dsm_perturb": "(Tensor x, ...) -> Tensor"}``."""
    return {op: schema for family in FAMILIES for op, schema in family.SCHEMAS.items()}


_libraries: dict[str, torch.library.Library] = {}  # kept alive: dropping one deregisters its ops
_registered: set[str] = set()


def register_namespace(namespace: str, *, define: bool, fakes: bool = True, step_tensor_ops: bool = True) -> None:
    """Give ``torch.ops.<namespace>`` the ops of every family (once per namespace).

    Args:
        define: declare the schemas here (kernels registered from C++ by TORCH_LIBRARY_IMPL);
            False when the backend declared its ops itself (numba, Triton).
        fakes: register the fake kernels (False for ops that are their own, as Triton's).
        step_tensor_ops: include the ``*_counter_`` ops.
    """
    if namespace in _registered:
        return
    if define:
        _libraries[namespace] = torch.library.Library(namespace, "FRAGMENT")
    for family in FAMILIES:
        ops = [op for op in family.SCHEMAS if step_tensor_ops or op not in STEP_TENSOR_OPS]
        if define:
            for op in ops:
                _libraries[namespace].define(op + family.SCHEMAS[op])
        family.register(namespace, ops, fakes=fakes)
    _registered.add(namespace)
