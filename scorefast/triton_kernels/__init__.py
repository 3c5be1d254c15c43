"""Triton kernels: the ``triton`` backend, ops in the namespace ``torch.ops.scorefast_triton``.

Runs on CUDA GPUs, and on CPU tensors through the Triton interpreter (``TRITON_INTERPRET=1``,
slow: for tests). One module per op family; importing this package registers the ops.
"""
from . import noise  # noqa: F401  (registers philox_fill_, normal_fill_)
from . import langevin  # noqa: F401  (registers langevin_step, langevin_step_)
from . import gmm  # noqa: F401  (registers gmm_score)
from . import dsm  # noqa: F401  (registers dsm_perturb, dsm_loss, dsm_loss_backward)
from . import chain  # noqa: F401  (registers gmm_chain_)
from ..dsm import register_op_extras as register_dsm_extras
from ..gmm import register_op_extras as register_gmm_extras
from ..langevin import register_op_extras

# Autograd of langevin_step, gmm_score and dsm_loss; the ops are their own fake kernels
# (see noise.custom_op).
register_op_extras("scorefast_triton", fakes=False)
register_gmm_extras("scorefast_triton", fakes=False)
register_dsm_extras("scorefast_triton", fakes=False)
