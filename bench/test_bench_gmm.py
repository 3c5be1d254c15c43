"""pytest-benchmark entries for gmm_score: ``python -m pytest bench/ --benchmark-only``."""
import pytest
import torch

import scorefast
from scorefast.benchmark_gmm import SIZES, gmm_matmul
from scorefast.targets import random_mixture


@pytest.mark.parametrize("provider", ["matmul", "cpp"])
@pytest.mark.parametrize("kind", ["isotropic", "full"])
@pytest.mark.parametrize("size", SIZES[:3])
def test_gmm_score(benchmark, size, kind, provider):
    N, K, D = size
    mix = random_mixture(K, D, seed=0, kind=kind)
    x = mix.sample(N, seed=1).float()
    p = mix.kernel_params(torch.float32, x.device, None, per_point=False)
    if provider == "matmul":
        fn = lambda: gmm_matmul(x, p["means"], p["inv_var"], p["factor"], p["log_const"])  # noqa: E731
    else:
        fn = lambda: scorefast.gmm_score(x, mix, backend=provider)  # noqa: E731
    benchmark.group = f"gmm_score {kind} {size}"
    benchmark(fn)
