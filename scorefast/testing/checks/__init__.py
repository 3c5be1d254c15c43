"""Reference checks: each op on a backend against its float64 reference, within its error budget.

``OPS`` maps each op to its named variants (``Variant``: options, dtypes, the kernel a backend
needs) and its check function ``(backend, device, dtype, size, **options) -> Comparison``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import chain, diffusion, dsm, dsm_vp, gmm, langevin, noise
from ._common import DEFAULT_SIZE, EMULATED_SIZE, Size, Variant


@dataclass(frozen=True)
class OpChecks:
    """The checks of one op: its variants and the function that runs one."""

    name: str
    variants: dict[str, Variant]
    run: Callable
    kernel: str  # the kernel every variant needs unless it names another


OPS = {
    "noise": OpChecks("noise", noise.VARIANTS, noise.check, "normal_fill_"),
    "langevin_step": OpChecks("langevin_step", langevin.VARIANTS, langevin.check, "langevin_step"),
    "gmm_score": OpChecks("gmm_score", gmm.VARIANTS, gmm.check, "gmm_score"),
    "gmm_chain": OpChecks("gmm_chain", chain.VARIANTS, chain.check, "gmm_chain_"),
    "dsm_perturb": OpChecks("dsm_perturb", dsm.PERTURB_VARIANTS, dsm.check_perturb, "dsm_perturb"),
    "dsm_loss": OpChecks("dsm_loss", dsm.LOSS_VARIANTS, dsm.check_loss, "dsm_loss"),
    "dsm_vp_perturb": OpChecks("dsm_vp_perturb", dsm_vp.PERTURB_VARIANTS, dsm_vp.check_perturb, "dsm_vp_perturb"),
    "dsm_vp_loss": OpChecks("dsm_vp_loss", dsm_vp.LOSS_VARIANTS, dsm_vp.check_loss, "dsm_vp_loss"),
    "reverse_step": OpChecks("reverse_step", diffusion.REVERSE_VARIANTS, diffusion.check_reverse, "reverse_step"),
    "snr_corrector_step": OpChecks(
        "snr_corrector_step", diffusion.CORRECTOR_VARIANTS, diffusion.check_corrector, "snr_corrector_step"
    ),
}


def op_checks(op: str) -> OpChecks:
    """The checks of ``op`` (one of OPS), with an error naming the choices otherwise."""
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    return OPS[op]


def emulated_options(op: str) -> dict:
    """Options that keep an op's check short where kernels run emulated (fewer chain steps)."""
    return {"steps": chain.EMULATED_STEPS} if op == "gmm_chain" else {}


__all__ = ["DEFAULT_SIZE", "EMULATED_SIZE", "OPS", "OpChecks", "Size", "Variant", "emulated_options", "op_checks"]
