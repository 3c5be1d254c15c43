"""CUDA backend specifics that the generic backend tests do not reach: bitwise agreement
with the portable C++ kernels on explicit noise, the current stream, device indices and
mixed-device errors. Skipped without a GPU and a CUDA build of the extension."""
from __future__ import annotations

import pytest
import torch

import scorefast
from scorefast import backend_registry

pytestmark = pytest.mark.skipif(not backend_registry.status("cuda").available,
                                reason=f"cuda backend: {backend_registry.status('cuda').reason}")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _rand(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.fixture
def generic_cpp():
    """The portable C++ kernels, which round every add and multiply as the CUDA kernels do."""
    if not backend_registry.status("cpp").available:
        pytest.skip("cpp backend unavailable")
    ext = scorefast._extension.extension()
    previous = ext.cpu_isa()
    assert ext.select_cpu_isa("generic")
    yield
    ext.select_cpu_isa(previous)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 8), (5, 13), (3, 2), (2, 4101)], ids=str)  # vector and scalar paths
def test_explicit_noise_bitwise_equal_to_generic_cpp(generic_cpp, dtype, shape):
    x, s, sc = (_rand(shape, dtype, i) for i in range(3))
    z = _rand(shape, torch.float32, 3)
    P = shape[0]
    a = torch.rand(P, generator=torch.Generator().manual_seed(4)).to(torch.float64 if dtype == torch.float64 else torch.float32)
    for kw in (dict(step_size=0.1, noise_scale=0.4), dict(step_size=a, noise_scale=a * 2, score_cond=sc, guidance=-0.6,
                                                         clamp=(-1.0, 0.5))):
        cpu = scorefast.langevin_step(x, s, noise=z, backend="cpp", **kw)
        kw_gpu = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        gpu = scorefast.langevin_step(x.cuda(), s.cuda(), noise=z.cuda(), backend="cuda", **kw_gpu)
        assert torch.equal(gpu.cpu(), cpu), kw


def test_clip_factors_match_cpp(generic_cpp):
    # Double accumulation in a different order: the factors agree to float rounding.
    x, s = _rand((300, 5000), torch.float32, 0), _rand((300, 5000), torch.float32, 1)  # block-per-particle path
    s[7] *= 1e-3  # a particle below the norm bound: factor 1
    z = _rand((300, 5000), torch.float32, 2)
    for cols in (5000, 33):  # warp-per-particle path for small D
        kw = dict(step_size=0.1, noise_scale=0.2, max_score_norm=0.5 * cols**0.5)  # clips most particles
        cpu = scorefast.langevin_step(x[:, :cols], s[:, :cols], noise=z[:, :cols], backend="cpp", **kw)
        gpu = scorefast.langevin_step(x[:, :cols].cuda(), s[:, :cols].cuda(), noise=z[:, :cols].cuda(), backend="cuda", **kw)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)


def test_runs_on_the_current_stream():
    x, s = _rand((512, 1024), torch.float32, 0).cuda(), _rand((512, 1024), torch.float32, 1).cuda()
    kw = dict(step_size=0.1, seed=5, step=2, backend="cuda")
    expected = scorefast.langevin_step(x, s, **kw)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernel must be ordered after it
        out = scorefast.langevin_step(y, s, **kw)
        z = scorefast.normal((512, 1024), seed=5, step=2, device="cuda", backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, expected)
    assert torch.equal(z, scorefast.normal((512, 1024), seed=5, step=2, device="cuda", backend="cuda"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    x, s = _rand((33, 17), torch.float32, 0), _rand((33, 17), torch.float32, 1)
    kw = dict(step_size=0.1, seed=5, step=2, max_score_norm=1.0, backend="cuda")
    on0 = scorefast.langevin_step(x.to("cuda:0"), s.to("cuda:0"), **kw)
    with torch.cuda.device(0):  # the op must switch to the tensors' device itself
        on1 = scorefast.langevin_step(x.to("cuda:1"), s.to("cuda:1"), **kw)
        z1 = scorefast.normal((33, 17), seed=5, device="cuda:1", backend="cuda")
    assert on1.device == torch.device("cuda:1") and z1.device == torch.device("cuda:1")
    assert torch.equal(on1.cpu(), on0.cpu())
    assert torch.equal(z1.cpu(), scorefast.normal((33, 17), seed=5, device="cuda:0", backend="cuda").cpu())


def test_direct_op_calls_check_devices():
    op = torch.ops.scorefast.langevin_step
    x = torch.zeros(4, 3, device="cuda")
    base = [x, x, None, 1.0, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None]
    bad = list(base)
    bad[1] = torch.zeros(4, 3)
    with pytest.raises(RuntimeError, match="score must be on the device of x"):
        op(*bad)
    bad = list(base)
    bad[5] = torch.ones(4)
    with pytest.raises(RuntimeError, match="step_size_per_particle must be on the device of x"):
        op(*bad)
    with pytest.raises(RuntimeError, match="out must be int64"):
        torch.ops.scorefast.philox_fill_(torch.zeros(2, 3, 4, device="cuda"), 0, 0, 0)
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        torch.ops.scorefast.normal_fill_(torch.zeros(4, 6, device="cuda")[:, ::2], 0, 0, 0)
