"""pytest-benchmark entries for langevin_step: ``python -m pytest bench/ --benchmark-only``.

Each size is timed for eager PyTorch, torch.compile of it and the scorefast backends
available on the CPU; compare the rows of one run (``--benchmark-group-by=param:numel``).
"""
import pytest
import torch

import scorefast
from scorefast import backend_registry
from scorefast.benchmark import eager_langevin

SIZES = [2**14, 2**20, 2**24]
PROVIDERS = ["eager", "torch.compile"] + [
    n for n in ("cpp", "numba") if backend_registry.status(n).available
]
_compiled = torch.compile(eager_langevin, dynamic=False)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("numel", SIZES)
def test_langevin_step(benchmark, numel, provider):
    x = torch.randn(numel)
    s = torch.randn(numel)
    a, b = 0.01, 0.02**0.5
    if provider == "eager":
        fn = lambda: eager_langevin(x, s, a, b)  # noqa: E731
    elif provider == "torch.compile":
        fn = lambda: _compiled(x, s, a, b)  # noqa: E731
    else:
        fn = lambda: scorefast.langevin_step(x, s, step_size=a, noise_scale=b, seed=1, step=3, backend=provider)  # noqa: E731
    fn()
    benchmark.group = f"langevin_step numel={numel}"
    benchmark(fn)
