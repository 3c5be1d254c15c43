"""Loads the compiled extension ``scorefast._C`` (C++ CPU and CUDA kernels).

A missing or broken build never makes ``import scorefast`` fail: it warns once and
the ``cpp`` and ``cuda`` backends report themselves unavailable with the reason.
"""
from __future__ import annotations

import warnings

import torch  # noqa: F401  (loads libtorch, which _C links against)

_module = None
_error: str | None = None

try:  # pragma: no branch - one of the two always runs
    from . import _C as _module  # noqa: F401  (registers torch.ops.scorefast.*)
except Exception as exc:  # ImportError, or an undefined symbol from a mismatched torch
    _error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        "scorefast: the compiled extension could not be loaded; the 'cpp' and 'cuda' backends are "
        f"disabled ({_error}). Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )


def extension():
    """The loaded ``scorefast._C`` module, or None."""
    return _module


def extension_error() -> str | None:
    """Why the extension is not loaded, or None when it is."""
    return _error
