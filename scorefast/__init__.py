"""scorefast: fused, verifiable kernels for score-based generative models.

Every op has a pure-PyTorch reference (``scorefast.reference``) that defines it, and
kernels on several backends (``scorefast.backends()``) that match it up to float
rounding, because the noise is counter-based (``scorefast.noise``).
"""

from . import (
    _extension,  # noqa: F401  (loads the compiled ops, warns once if missing)
    reference,
    targets,
)
from .backend_registry import backends
from .chain import gmm_chain
from .diffusion import reverse_step, reverse_step_, snr_corrector_step, snr_corrector_step_
from .dsm import dsm_loss, dsm_perturb
from .dsm_vp import dsm_vp_loss, dsm_vp_perturb, vp_coefficients
from .gmm import gmm_score
from .langevin import langevin_step, langevin_step_
from .noise import normal, normal_like, philox_words, random_seed

__version__ = "0.1.0"

__all__ = [
    "backends",
    "dsm_loss",
    "gmm_chain",
    "dsm_perturb",
    "dsm_vp_loss",
    "dsm_vp_perturb",
    "gmm_score",
    "langevin_step",
    "langevin_step_",
    "normal",
    "normal_like",
    "philox_words",
    "random_seed",
    "reference",
    "reverse_step",
    "reverse_step_",
    "snr_corrector_step",
    "snr_corrector_step_",
    "targets",
    "vp_coefficients",
]
