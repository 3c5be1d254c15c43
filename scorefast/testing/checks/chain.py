"""gmm_chain against the float64 reference, step by step along the kernel's recorded trajectory."""

from __future__ import annotations

import torch

from ... import chain as api
from ...targets import random_mixture
from ..budgets import Comparison, mismatch
from ..chain_budget import compare_chain_steps
from ._common import PARTICLE_OFFSET, SEED, STEP, Size, Variant

NAME = "gmm_chain"
# Each method on its own covariance kind (the kernels' three paths).
VARIANTS = {
    "ula": Variant({"method": "ula", "kind": "full"}),
    "annealed": Variant({"method": "annealed", "kind": "diagonal"}),
    "mala": Variant({"method": "mala", "kind": "isotropic"}),
}
STEPS = 20
EMULATED_STEPS = 4


def _schedule(method: str, steps: int):
    """(gmm_chain keyword arguments, step sizes [T], noise levels [T] or None)."""
    if method == "annealed":
        sigmas, per_level, epsilon = [3.0, 1.0, 0.3], max(1, steps // 3), 0.004
        a = [epsilon / 2 * s**2 / sigmas[-1] ** 2 for s in sigmas for _ in range(per_level)]
        return (
            dict(sigmas=sigmas, steps_per_level=per_level, epsilon=epsilon),
            a,
            [s for s in sigmas for _ in range(per_level)],
        )
    if method not in ("ula", "mala"):
        raise ValueError(f"method must be 'ula', 'annealed' or 'mala', got {method!r}")
    step_size = 0.05 if method == "ula" else 0.1
    return dict(steps=steps, step_size=step_size), [step_size] * steps, None


def check(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    method: str = "ula",
    kind: str = "diagonal",
    steps: int | None = None,
) -> Comparison:
    """A chain of ``steps`` (default 20; 4 on emulated backends, chosen by the caller) from exact
    samples of a random K = 3 mixture of ``kind`` (D = size.mixture_dim) for size.chain_particles
    particles in ``dtype``: every recorded step, and MALA's acceptance counts, against the float64
    reference step from the same state (``scorefast.testing.chain_budget``)."""
    N, D = size.chain_particles, size.mixture_dim
    mix = random_mixture(3, D, seed=6, kind=kind, spread=2.0)
    x = mix.sample(N, seed=7).to(dtype)
    kw, a, sigmas = _schedule(method, STEPS if steps is None else steps)
    counter = dict(seed=SEED, step_offset=STEP, particle_offset=PARTICLE_OFFSET)
    res = api.gmm_chain(x.to(device), mix, method=method, trajectory_every=1, backend=backend, **counter, **kw)
    if (method == "mala") != (res.accepted is not None):
        return mismatch("accepted must be the acceptance counts for MALA and None otherwise")
    if res.x.dtype != dtype:
        return mismatch(f"result {res.x.dtype}, expected {dtype}")
    if res.trajectory is None or res.trajectory.shape != (len(a), N, D) or not torch.equal(res.trajectory[-1], res.x):
        return mismatch(
            "the trajectory does not record every step ending at the final state",
        )
    # The reference backend stores the score in x's dtype before each ULA step (scorefast/reference/chain.py).
    return compare_chain_steps(
        x,
        res.trajectory,
        res.accepted,
        mix,
        a,
        sigmas,
        mala=method == "mala",
        **counter,
        score_storage=dtype if backend == "reference" else None,
        explicit_precision=backend == "cpp",
    )
