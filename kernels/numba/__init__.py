"""numba backend: CPU kernels JIT-compiled by numba (no C++ compiler needed).

Loading the backend (its first status check) registers the ops under ``torch.ops.scorefast_numba`` with the
same schemas as the C++ ops:

    philox_fill_, normal_fill_     the noise contract       (noise.py)
    langevin_step, langevin_step_  fused Langevin update    (langevin.py)
    gmm_score                      Gaussian-mixture score   (gmm.py)
    dsm_perturb, dsm_loss,         denoising score matching (dsm.py)
    dsm_loss_backward
    gmm_chain_                     mixture Langevin chains  (chain.py)

Kernels compile on first use and are cached on disk (next to the package, or in
numba's per-user cache when that is read-only; SCOREFAST_NUMBA_CACHE=0 turns the cache
off). A change to any module of this backend or of the op contracts makes every cached
kernel stale (noise.stamp_cache_with_sources): numba itself checks only a kernel's own file.
Work is split into fixed chunks of elements, so results do not depend on the thread count;
numba uses torch's thread count (torch.set_num_threads).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from ..._backend import Backend
from ...ops import register_namespace

NAMESPACE = "scorefast_numba"


def _load() -> None:
    """Import every kernel module (declaring its ops), then the fakes and autograd of the contracts."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    register_namespace(NAMESPACE, define=False, step_tensor_ops=False)


def _status() -> tuple[bool, tuple[str, ...], str]:
    if importlib.util.find_spec("numba") is None:
        return False, (), "numba is not installed (pip install numba)"
    try:
        _load()
    except Exception as exc:  # a numba too old or broken
        return False, (), f"numba kernels failed to load ({type(exc).__name__}: {exc})"
    return True, ("cpu",), ""


BACKEND = Backend("numba", NAMESPACE, None, _status)
