"""A compiled training or sampling step whose noise counter is the loop's Python int compiles at
most twice (once specialised, once with the counter symbolic), for every op that takes a
counter: the integer checks and the op schemas (SymInt) do not pin the graph to one value."""

from __future__ import annotations

import pytest
import torch
from conftest import require_or_skip

import scorefast
from scorefast import backend_registry
from scorefast.targets import two_mode_2d

ITERATIONS = 50
BACKENDS = ["reference", "cpp", "numba", "cuda", "triton"]


def _compile_count(step_fn, *args):
    """How many graphs torch.compile(fullgraph=True) builds over ITERATIONS calls of
    ``step_fn(*args, it)`` with it = 0, 1, ...; also checks each result against eager."""
    count = [0]

    def counting_backend(gm, example_inputs):
        count[0] += 1
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(step_fn, fullgraph=True, backend=counting_backend)
    for it in range(ITERATIONS):
        got = compiled(*args, it)
        if isinstance(got, torch.Tensor) and got.requires_grad:
            got.backward()  # the backward graph compiles with the forward's symbols
        if it in (0, 1, ITERATIONS - 1):
            want = step_fn(*args, it)
            for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
                torch.testing.assert_close(g, w, rtol=0, atol=0)
    torch._dynamo.reset()
    return count[0]


@pytest.fixture(params=BACKENDS)
def backend(request):
    name = request.param
    status = backend_registry.status(name)
    if not status.available:
        require_or_skip(name, f"{name}: {status.reason}")
    if name in ("cuda", "triton") and "cuda" not in status.devices:
        pytest.skip(f"{name} is emulated here: torch.compile cannot trace it")
    return name


def _device(backend: str) -> torch.device:
    return torch.device("cuda" if backend in ("cuda", "triton") else "cpu")


def test_dsm_training_step(backend):
    net = torch.nn.Linear(3, 3).double().to(_device(backend))
    x = torch.randn(8, 3, dtype=torch.float64, device=_device(backend))

    def train_step(x, it):
        x_tilde = scorefast.dsm_perturb(x, 0.5, seed=1, step=it, backend=backend)
        return scorefast.dsm_loss(net(x_tilde), x, 0.5, seed=1, step=it, backend=backend)

    assert _compile_count(train_step, x) <= 2


def test_dsm_vp_training_step(backend):
    net = torch.nn.Linear(3, 3).double().to(_device(backend))
    x = torch.randn(8, 3, dtype=torch.float64, device=_device(backend))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    t = torch.arange(0, 1000, 125)  # 8 timesteps: one per sample
    alpha, sigma = (c.to(x.device) for c in scorefast.vp_coefficients(t, torch.cumprod(1 - betas, 0)))

    def train_step(x, it):
        x_t = scorefast.dsm_vp_perturb(x, alpha, sigma, seed=1, step=it, backend=backend)
        return scorefast.dsm_vp_loss(
            net(x_t), x, alpha, sigma, seed=1, step=it, parametrization="v", weighting="min_snr", backend=backend
        )

    assert _compile_count(train_step, x) <= 2


def test_langevin_step(backend):
    x = torch.randn(6, 4, device=_device(backend))

    def sample_step(x, it):
        return scorefast.langevin_step(x, -x, step_size=0.1, seed=3, step=it, particle_offset=it, backend=backend)

    assert _compile_count(sample_step, x) <= 2


def test_noise(backend):
    def draw(it):
        dev = _device(backend)
        return (
            scorefast.normal((5, 3), seed=7, step=it, device=dev, backend=backend),
            scorefast.philox_words(5, 2, seed=7, step=it, device=dev, backend=backend),
        )

    assert _compile_count(draw) <= 2


def test_gmm_chain(backend):
    mix = two_mode_2d()
    x = torch.zeros(4, 2, device=_device(backend))

    def chain(x, it):
        return scorefast.gmm_chain(x, mix, steps=2, step_size=0.1, seed=5, step_offset=2 * it, backend=backend).x

    assert _compile_count(chain, x) <= 2
