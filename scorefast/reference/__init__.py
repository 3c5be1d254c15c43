"""Pure-PyTorch references: the specification of every scorefast op.

Each op family's reference lives with its contract, in ``scorefast.ops.<family>``; this
package gathers them: ``scorefast.reference.gmm_score_ref``, and the whole family as
``scorefast.reference.<family>`` (``from scorefast.reference.noise import philox4x32_10``).
Tests compare each kernel with these; benchmarks time them as the eager baseline.
"""

import sys

from ..ops import FAMILIES
from ..ops.chain import gmm_chain_ref
from ..ops.diffusion import reverse_step_ref, snr_corrector_step_ref
from ..ops.dsm import dsm_loss_ref, dsm_noise_ref, dsm_perturb_ref
from ..ops.dsm_vp import dsm_vp_fused_loss_ref, dsm_vp_loss_ref, dsm_vp_noise_ref, dsm_vp_perturb_ref
from ..ops.gmm import gmm_log_joint_ref, gmm_score_ref
from ..ops.langevin import langevin_step_ref
from ..ops.noise import (
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
    "dsm_vp_fused_loss_ref",
    "dsm_vp_loss_ref",
    "dsm_vp_noise_ref",
    "dsm_vp_perturb_ref",
    "gmm_chain_ref",
    "gmm_log_joint_ref",
    "gmm_score_ref",
    "langevin_step_ref",
    "normal_like_ref",
    "normal_ref",
    "philox4x32_10",
    "philox_words_ref",
    "reverse_step_ref",
    "snr_corrector_step_ref",
    "uniform_ref",
]

# Each family under its short name, importable as a submodule; a new family needs no edit here.
for _family in FAMILIES:
    _name = _family.__name__.rpartition(".")[2]
    globals()[_name] = _family
    sys.modules[f"{__name__}.{_name}"] = _family
