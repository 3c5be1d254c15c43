"""Environment switches read by several layers (kept at the bottom so that any layer may ask)."""

from __future__ import annotations

import os

CUDA_EMULATOR_FLAG = "SCOREFAST_CUDA_EMULATOR"


def triton_interpreting() -> bool:
    """True when Triton kernels run on the CPU through ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cuda_emulator_requested() -> bool:
    """True when ``SCOREFAST_CUDA_EMULATOR`` asks for the emulated CUDA backend (tests only)."""
    return os.environ.get(CUDA_EMULATOR_FLAG, "0") not in ("", "0")
