"""The noise contract: Philox words bit for bit, normals within the libm budget."""

from __future__ import annotations

import torch

from ... import noise as api
from ...ops import noise as ref
from ..budgets import Comparison, compare, mismatch, noise_tolerance, storage_rounding
from ._common import FLOATS, PARTICLE_OFFSET, SEED, STEP, Size, Variant

NAME = "noise"
VARIANTS = {
    "philox_words": Variant({"words": True}, dtypes=(torch.int64,), kernel="philox_fill_"),
    "philox_words_step_tensor": Variant(
        {"words": True, "step_tensor": True}, dtypes=(torch.int64,), kernel="philox_fill_counter_"
    ),
    "normal": Variant({}, dtypes=FLOATS),
    "normal_step_tensor": Variant({"step_tensor": True}, dtypes=(torch.float32,), kernel="normal_fill_counter_"),
}


def check(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    words: bool = False,
    step_tensor: bool = False,
) -> Comparison:
    """Philox words (int64 (P, ceil(D/4), 4)) must equal the reference's bit for bit; normals
    (P, D) stored in ``dtype`` must be within r * NOISE_REL_TOL (r the Box-Muller radius) plus
    one storage ulp. ``step_tensor``: the step as a one-element int64 tensor."""
    P, D = size.particles, size.dim
    step = torch.tensor([STEP], dtype=torch.int64, device=device) if step_tensor else STEP
    counter = dict(seed=SEED, step=step, particle_offset=PARTICLE_OFFSET, device=device, backend=backend)
    if words:
        q = (D + 3) // 4
        got = api.philox_words(P, q, **counter).cpu()
        expected = ref.philox_words_ref(P, q, SEED, STEP, PARTICLE_OFFSET)
        differ = int((got != expected).sum()) if got.shape == expected.shape else got.numel()
        detail = "bit-identical" if differ == 0 else f"{differ} of {expected.numel()} words differ"
        err = float((got - expected).abs().max()) if differ and got.shape == expected.shape else 0.0
        return Comparison(differ == 0, err, 0.0, 0.0 if differ == 0 else float("inf"), detail)
    got = api.normal((P, D), dtype=dtype, **counter)
    expected = ref.normal_ref(P, D, SEED, STEP, PARTICLE_OFFSET).double()
    tol = noise_tolerance(P, D, SEED, STEP, PARTICLE_OFFSET) + storage_rounding(expected, dtype)
    if got.dtype != dtype:
        return mismatch(f"result {got.dtype}, expected {dtype}")
    return compare(got, expected, tol)
