"""The step as a device tensor (the ``*_counter_`` ops): on the CPU they equal the int-step
ops bitwise and pass opcheck, and the public functions take a tensor step."""
from __future__ import annotations

import pytest
import torch

import scorefast
from scorefast import backend_registry

pytestmark = pytest.mark.skipif(not backend_registry.status("cpp").available, reason="cpp backend unavailable")


def _rand(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_counter_ops_equal_int_step_ops(dtype):
    x, s, sc = _rand((33, 7), 0, dtype), _rand((33, 7), 1, dtype), _rand((33, 7), 2, dtype)
    step = torch.tensor([2**32 - 1])
    a = torch.rand(33, generator=torch.Generator().manual_seed(3))
    for kw in (dict(step_size=0.1), dict(step_size=a, score_cond=sc, guidance=2.0, clamp=(-1.0, 1.0), max_score_norm=0.5)):
        for backend in ("cpp", "reference"):
            want = scorefast.langevin_step(x, s, seed=5, step=2**32 - 1, particle_offset=9, backend=backend, **kw)
            got = scorefast.langevin_step(x, s, seed=5, step=step, particle_offset=9, backend=backend, **kw)
            assert torch.equal(got, want), (kw, backend)
            y = x.t().contiguous().t()  # non-contiguous, updated in place
            scorefast.langevin_step_(y, s, seed=5, step=step, particle_offset=9, backend=backend, **kw)
            assert torch.equal(y, want)
    for backend in ("cpp", "reference"):
        assert torch.equal(scorefast.normal((6, 5), seed=3, step=torch.tensor(8), backend=backend),
                           scorefast.normal((6, 5), seed=3, step=8, backend=backend))
        assert torch.equal(scorefast.philox_words(6, 3, seed=3, step=torch.tensor([8]), particle_offset=2**40, backend=backend),
                           scorefast.philox_words(6, 3, seed=3, step=8, particle_offset=2**40, backend=backend))


def test_counter_ops_opcheck():
    x, s = _rand((8, 5), 0), _rand((8, 5), 1)
    step = torch.tensor([4])
    torch.library.opcheck(torch.ops.scorefast.langevin_step_counter_.default,
                          (x.clone(), s, None, 1.0, 0.1, None, 0.3, None, 7, step, 2, None, None, None))
    torch.library.opcheck(torch.ops.scorefast.normal_fill_counter_.default, (torch.empty(4, 6), 7, step, 2))
    torch.library.opcheck(torch.ops.scorefast.philox_fill_counter_.default,
                          (torch.empty(4, 2, 4, dtype=torch.int64), 7, step, 2))


def test_step_tensor_errors():
    x, s = torch.zeros(4, 3), torch.zeros(4, 3)
    with pytest.raises(TypeError, match="step tensor must be int64 with one element"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([1.0]))
    with pytest.raises(TypeError, match="step tensor must be int64 with one element"):
        scorefast.normal((4, 3), seed=1, step=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="step must be in"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([2**32]))
    with pytest.raises(NotImplementedError, match="langevin_step_counter_"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([1]), backend="numba")
    with pytest.raises(RuntimeError, match="tensor step does not track gradients"):
        scorefast.langevin_step(x.requires_grad_(), s, step_size=0.1, seed=1, step=torch.tensor([1]))
    with pytest.raises(RuntimeError, match="step must be an int64 tensor with one element"):
        torch.ops.scorefast.normal_fill_counter_(torch.empty(2, 3), 1, torch.tensor([1, 2]), 0)
