"""gmm_score against its float64 reference: every covariance kind, with and without noise levels."""

from __future__ import annotations

import torch

from ... import gmm as api
from ...targets import random_mixture
from ..budgets import Comparison, combine, compare, mismatch
from ..gmm_budgets import gmm_budget
from ._common import Size, Variant

NAME = "gmm_score"
KINDS = ("isotropic", "diagonal", "full")
SIGMAS = {"": None, "_sigma": "scalar", "_sigma_per_point": "per_point"}
VARIANTS = {
    kind + suffix: Variant({"kind": kind, "sigma": sigma}) for kind in KINDS for suffix, sigma in SIGMAS.items()
}
NUM_COMPONENTS = 4


def _sigma(mode, n: int, dtype: torch.dtype, device):
    if mode is None or isinstance(mode, float):
        return mode
    if mode == "scalar":
        return 0.37
    if mode != "per_point":
        raise ValueError(f"sigma must be None, a float, 'scalar' or 'per_point', got {mode!r}")
    s = torch.rand(n, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 2
    s[0] = 0.0  # sigma = 0 is the mixture itself
    return s.to(torch.float64 if dtype == torch.float64 else torch.float32).to(device)


def check(
    backend: str, device: torch.device, dtype: torch.dtype, size: Size, *, kind: str = "isotropic", sigma=None
) -> Comparison:
    """Score (N, D) and log-density (N,) of a random K = 4 mixture of ``kind`` at N = particles
    points (D = size.mixture_dim; one between modes) in ``dtype``. sigma: None, a float,
    'scalar' (0.37) or 'per_point' (an (N,) tensor in [0, 2) with a zero)."""
    N, D = size.particles, size.mixture_dim
    mix = random_mixture(NUM_COMPONENTS, D, seed=NUM_COMPONENTS * 10 + D, kind=kind)
    x = mix.sample(N, seed=1)
    x[0] += 3.0  # a point between modes
    x = x.to(dtype).to(device)
    sig = _sigma(sigma, N, dtype, device)
    score, log_p = api.gmm_score(x, mix, sigma=sig, backend=backend)
    if score.dtype != dtype or log_p.dtype != dtype:
        return mismatch(f"results {score.dtype}, {log_p.dtype}, expected {dtype}")
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sig, dtype, precision_gemm=backend == "cpp")
    return combine(compare(score, ref_s, tol_s, "score"), compare(log_p, ref_l, tol_l, "log p"))
