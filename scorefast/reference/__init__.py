"""Pure-PyTorch references: the specification of every scorefast op.

Tests compare each kernel with these; benchmarks time them as the eager baseline.
"""

from .dsm import dsm_loss_ref, dsm_noise_ref, dsm_perturb_ref
from .gmm import gmm_log_joint_ref, gmm_score_ref
from .langevin import langevin_step_ref
from .noise import (
    box_muller_ref,
    normal_like_ref,
    normal_ref,
    philox4x32_10,
    philox_words_ref,
    uniform_ref,
)

__all__ = [
    "box_muller_ref",
    "dsm_loss_ref",
    "dsm_noise_ref",
    "dsm_perturb_ref",
    "gmm_log_joint_ref",
    "gmm_score_ref",
    "langevin_step_ref",
    "normal_like_ref",
    "normal_ref",
    "philox4x32_10",
    "philox_words_ref",
    "uniform_ref",
]
