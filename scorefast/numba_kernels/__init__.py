"""numba backend: CPU kernels JIT-compiled by numba (no C++ compiler needed).

Importing this package registers the ops under ``torch.ops.scorefast_numba`` with the
same schemas as the C++ ops:

    philox_fill_, normal_fill_     the noise contract       (noise.py)
    langevin_step, langevin_step_  fused Langevin update    (langevin.py)
    gmm_score                      Gaussian-mixture score   (gmm.py)
    dsm_perturb, dsm_loss,         denoising score matching (dsm.py)
    dsm_loss_backward
    gmm_chain_                     mixture Langevin chains  (chain.py)

Kernels compile on first use and are cached on disk (next to the package, or in
numba's per-user cache when that is read-only; SCOREFAST_NUMBA_CACHE=0 turns the cache
off). Work is split into fixed chunks of elements, so results do not depend on the
thread count; numba uses torch's thread count (torch.set_num_threads).
"""
from . import chain, dsm, gmm, langevin, noise  # noqa: F401  (registers the ops)
