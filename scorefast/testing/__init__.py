"""Tools for testing scorefast's kernels and samplers.

* ``assert_matches_reference(op, backend=..., dtype=..., variant=..., **options)``: the checks
  of ``scorefast verify`` for a pytest suite (``scorefast.testing.assertions``).
* ``budgets``, ``gmm_budgets``, ``chain_budget``: the error budgets against the float64 references.
* ``checks``: every op's named variants and their checks.
* ``statistics``: sampler-versus-target checks (moments, mode weights, energy distance).
* ``cuda_emulator``: runs the CUDA kernels on CPU tensors from a source checkout.

Not imported by ``import scorefast``; importing this package loads none of its modules until one
is used (``assert_matches_reference`` loads the checks, never the CUDA emulator).
"""

from __future__ import annotations

import importlib

__all__ = ["assert_matches_reference"]


def __getattr__(name: str):
    if name == "assert_matches_reference":
        return importlib.import_module(f"{__name__}.assertions").assert_matches_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
