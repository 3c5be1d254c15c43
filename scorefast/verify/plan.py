"""What ``scorefast verify`` checks where: backends (with their device, size and availability)
and the op x variant x dtype checks, before anything runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import backend_registry
from ..testing.checks import DEFAULT_SIZE, EMULATED_SIZE, OPS, Size, emulated_options
from ..testing.checks._common import device_for

DTYPE_NAMES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "int64": torch.int64,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class BackendPlan:
    """A backend as verify will run it: its device and problem size, or why it cannot run here."""

    name: str
    required: bool
    device: torch.device | None = None
    emulated: bool = False
    size: Size = DEFAULT_SIZE
    unavailable: str | None = None  # the reason, when it cannot run here


@dataclass(frozen=True)
class PlannedCheck:
    """One op x variant x dtype; ``kernel`` the op a backend must carry, ``optional``: a backend
    without it skips the check (the step-tensor ops exist on the compiled CUDA and C++ kernels only)."""

    op: str
    variant: str
    dtype: torch.dtype
    options: dict
    kernel: str
    optional: bool

    def options_for(self, backend: BackendPlan) -> dict:
        return {**(emulated_options(self.op) if backend.emulated else {}), **self.options}


def plan_backends(names, required=(), size: Size = DEFAULT_SIZE) -> list[BackendPlan]:
    """One plan per backend in ``names`` (in the registry's order): emulated backends (Triton's
    interpreter, the CUDA emulator) get at most the tiny EMULATED_SIZE."""
    plans = []
    for name in backend_registry.NAMES:
        if name not in names:
            continue
        status = backend_registry.status(name)
        if not status.available:
            plans.append(BackendPlan(name, name in required, unavailable=status.reason))
            continue
        device = device_for(name)
        emulated = backend_registry.is_emulated(name, device.type)
        run_size = (
            Size(min(size.particles, EMULATED_SIZE.particles), min(size.dim, EMULATED_SIZE.dim)) if emulated else size
        )
        plans.append(BackendPlan(name, name in required, device, emulated, run_size))
    return plans


def plan_checks(ops=None, dtypes=None) -> list[PlannedCheck]:
    """Every variant of every op in ``ops`` (default all) in each of its dtypes within ``dtypes``."""
    checks = []
    for op, spec in OPS.items():
        if ops is not None and op not in ops:
            continue
        for variant, v in spec.variants.items():
            for dtype in v.dtypes:
                if dtypes is None or dtype in dtypes or dtype == torch.int64:  # words have one dtype
                    checks.append(
                        PlannedCheck(op, variant, dtype, dict(v.options), v.kernel or spec.kernel, v.kernel is not None)
                    )
    return checks
