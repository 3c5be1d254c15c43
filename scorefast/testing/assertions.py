"""``assert_matches_reference``: the checks of ``scorefast verify`` for a pytest suite."""

from __future__ import annotations

import torch

from .. import backend_registry
from .budgets import Comparison
from .checks import DEFAULT_SIZE, EMULATED_SIZE, Size, emulated_options, op_checks
from .checks._common import device_for


def assert_matches_reference(
    op: str,
    *,
    backend: str = "auto",
    dtype: torch.dtype = torch.float32,
    variant: str | None = None,
    device=None,
    particles: int | None = None,
    dim: int | None = None,
    **options,
) -> Comparison:
    """Run ``op`` on ``backend`` and compare it with the float64 reference within its error budget.

    Args:
        op: 'noise', 'langevin_step', 'gmm_score', 'gmm_chain', 'dsm_perturb' or 'dsm_loss'.
        backend: a backend name or 'auto' (the one the op would use on ``device``).
        dtype: storage dtype of the inputs (default float32; torch.int64 for the Philox words).
        variant: a named configuration, as ``scorefast verify`` prints them (e.g. 'clip',
            'full_sigma_per_point', 'mala', 'eps_backward'); see
            ``scorefast.testing.checks.OPS[op].variants``. Default: the op's plain call.
        device: default: a CUDA GPU where the backend runs there, else the CPU.
        particles, dim: problem size (default 257 x 67, or 9 x 13 where the backend runs emulated;
            mixtures use at most 5 dimensions and chains at most 64 particles).
        **options: the op's check options, on top of the variant's, e.g. for langevin_step
            ``guidance=2.5, clamp=(-1, 1), max_score_norm=0.5, per_particle=True,
            explicit_noise=True, inplace=True, step_tensor=True``; gmm_score ``kind=, sigma=``;
            gmm_chain ``method=, kind=, steps=``; dsm_loss ``parametrization=, backward=``.

    Returns:
        The Comparison (max error, its budget, the worst error / budget ratio).

    Raises:
        AssertionError naming the error and the budget when the result is over budget;
        RuntimeError (from the backend registry) when the backend cannot run here.
    """
    checks = op_checks(op)
    if variant is not None and variant not in checks.variants:
        raise ValueError(f"variant must be one of {', '.join(checks.variants)} for {op}, got {variant!r}")
    chosen = checks.variants[variant] if variant is not None else None
    device = device_for(backend) if device is None else torch.device(device)
    name = backend_registry.resolve(backend, device, (chosen and chosen.kernel) or checks.kernel)
    emulated = backend_registry.is_emulated(name, device.type)
    base = EMULATED_SIZE if emulated else DEFAULT_SIZE
    size = Size(particles or base.particles, dim or base.dim)
    opts = {**(emulated_options(op) if emulated else {}), **(chosen.options if chosen else {}), **options}
    result = checks.run(name, device, dtype, size, **opts)
    if not result.ok:
        what = variant or ", ".join(f"{k}={v}" for k, v in options.items()) or "plain"
        raise AssertionError(
            f"{op} [{what}] on {name} ({str(dtype).replace('torch.', '')}) exceeds its error budget: "
            f"{result.detail} (max error {result.max_error:.3e}, budget {result.budget:.3e}, "
            f"worst error/budget {result.ratio:.3g})"
        )
    return result
