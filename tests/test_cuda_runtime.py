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


# -- gmm_score -----------------------------------------------------------------------------

from scorefast.targets.presets import random_mixture  # noqa: E402

GMM_TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-4),
           torch.float16: dict(rtol=1e-2, atol=1e-2), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _gmm_points(mixture, n, dtype, seed):
    """Samples of the mixture plus a few far and exactly-at-a-mean points."""
    x = mixture.sample(n, seed=seed)
    x[0] = mixture.means[0]
    # Far out: the log-sum-exp must stay finite. Not too far in float32, where the rounding of
    # l_k (~ |x|^2) would decide between components.
    x[1] = (30.0 if dtype == torch.float64 else 3.0) * x[1]
    return x.to(dtype)


def _gmm_args(mixture, x, sigma, seed):
    """Arguments of the op for sigma None, a float, or 'per_point' (one sigma per point)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    per_point = sigma == "per_point"
    p = mixture.kernel_params(acc, x.device, None if per_point else sigma, per_point)
    sigma2 = None
    if per_point:
        g = torch.Generator().manual_seed(seed)
        sigma2 = (2.0 * torch.rand(x.shape[0], generator=g, dtype=torch.float64)).square().to(acc)
        sigma2[2] = 0.0
    return [x, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], sigma2]


def _gmm_cpu_and_cuda(args):
    cpu = torch.ops.scorefast.gmm_score(*args)
    dev = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    gpu = torch.ops.scorefast.gmm_score(*dev)
    assert gpu[0].is_cuda and gpu[0].dtype == args[0].dtype and gpu[0].shape == args[0].shape
    assert gpu[1].is_cuda and gpu[1].shape == args[0].shape[:1]
    return cpu, tuple(t.cpu() for t in gpu)


# (K, D): thread-per-point D <= 4 (K over one shared-memory tile of 64), warp-per-point with
# 1, 2, 4, 16 and 32 registers per lane, and the shared-memory path (D > 1024; full: D > 512).
GMM_SHAPES = {
    "isotropic": [(1, 1), (5, 2), (64, 2), (130, 2), (7, 3), (9, 4), (6, 5), (16, 33), (8, 64), (4, 784),
                  (3, 1030), (2, 2500)],
    "diagonal": [(64, 2), (130, 2), (9, 4), (6, 5), (16, 33), (8, 64), (4, 784), (3, 1030)],
    "full": [(64, 2), (70, 3), (9, 4), (6, 5), (8, 33), (4, 64), (3, 130), (2, 300), (2, 520)],
}
GMM_CASES = [(kind, K, D) for kind, shapes in GMM_SHAPES.items() for K, D in shapes]


@pytest.mark.parametrize("sigma", [None, 0.5, "per_point"], ids=str)
@pytest.mark.parametrize("kind,K,D", GMM_CASES, ids=lambda v: str(v))
def test_gmm_score_matches_cpu(kind, K, D, sigma):
    mixture = random_mixture(K, D, kind=kind, seed=K * 1000 + D)
    for dtype in (torch.float64, torch.float32):
        x = _gmm_points(mixture, 67, dtype, seed=D)
        (s_cpu, lp_cpu), (s_gpu, lp_gpu) = _gmm_cpu_and_cuda(_gmm_args(mixture, x, sigma, seed=K))
        assert torch.isfinite(lp_cpu).all() and torch.isfinite(s_cpu).all()
        tol = GMM_TOL[dtype]
        torch.testing.assert_close(lp_gpu, lp_cpu, **tol)
        # Scores scale with |x - mu| / var: compare relative to the row's size.
        scale = s_cpu.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        torch.testing.assert_close(s_gpu / scale, s_cpu / scale, **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kind,K,D", [("isotropic", 8, 2), ("full", 5, 3), ("diagonal", 6, 40), ("full", 4, 70)],
                         ids=str)
def test_gmm_score_16bit_matches_cpu(dtype, kind, K, D):
    mixture = random_mixture(K, D, kind=kind, seed=3)
    x = _gmm_points(mixture, 50, dtype, seed=4)
    for sigma in (None, "per_point"):
        (s_cpu, lp_cpu), (s_gpu, lp_gpu) = _gmm_cpu_and_cuda(_gmm_args(mixture, x, sigma, seed=5))
        tol = GMM_TOL[dtype]
        torch.testing.assert_close(lp_gpu.float(), lp_cpu.float(), **tol)
        scale = s_cpu.float().abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        torch.testing.assert_close(s_gpu.float() / scale, s_cpu.float() / scale, **tol)


@pytest.mark.parametrize("D", [2, 40], ids=str)
def test_gmm_score_nan_zero_weight_and_all_minus_inf(D):
    means = torch.randn(4, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixture = scorefast.targets.GaussianMixture(means, torch.tensor([0.5, 0.0, 0.3, 0.2]), variance=0.5)
    x = _gmm_points(mixture, 9, torch.float32, seed=1)
    x[3, 1] = float("nan")
    args = _gmm_args(mixture, x, None, seed=0)
    (s_cpu, lp_cpu), (s_gpu, lp_gpu) = _gmm_cpu_and_cuda(args)
    assert torch.isnan(lp_gpu[3]) and torch.isnan(s_gpu[3]).all()  # NaN stays in its row
    torch.testing.assert_close(lp_gpu, lp_cpu, equal_nan=True, **GMM_TOL[torch.float32])
    torch.testing.assert_close(s_gpu, s_cpu, equal_nan=True, **GMM_TOL[torch.float32])
    # Every component at -inf: log_prob -inf and NaN scores, as on the CPU.
    args[5] = torch.full_like(args[5], float("-inf"))
    (s_cpu, lp_cpu), (s_gpu, lp_gpu) = _gmm_cpu_and_cuda(args)
    assert torch.isnan(s_gpu).all() and torch.isnan(s_cpu).all()
    torch.testing.assert_close(lp_gpu, lp_cpu, equal_nan=True, rtol=0, atol=0)  # -inf, NaN in row 3


def test_gmm_score_public_api_and_empty():
    mixture = random_mixture(6, 3, kind="full", seed=2)
    x = _gmm_points(mixture, 40, torch.float32, seed=3)
    sigma = torch.rand(40, generator=torch.Generator().manual_seed(4))
    cpu = scorefast.gmm_score(x, mixture, sigma=sigma, backend="cpp")
    gpu = scorefast.gmm_score(x.cuda(), mixture, sigma=sigma.cuda(), backend="cuda")
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, **GMM_TOL[torch.float32])
    score, log_prob = scorefast.gmm_score(x[:0].cuda(), mixture, backend="cuda")
    assert score.shape == (0, 3) and log_prob.shape == (0,) and score.is_cuda


def test_gmm_score_runs_on_the_current_stream():
    mixture = random_mixture(32, 64, kind="diagonal", seed=0)
    x = _gmm_points(mixture, 4096, torch.float32, seed=0).cuda()
    args = _gmm_args(mixture, x, None, seed=0)
    expected = torch.ops.scorefast.gmm_score(*args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernel must be ordered after it
        out = torch.ops.scorefast.gmm_score(y, *args[1:])
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


def test_gmm_score_checks_devices():
    mixture = random_mixture(3, 4, kind="diagonal", seed=0)
    x = torch.zeros(5, 4, device="cuda")
    args = _gmm_args(mixture, x, None, seed=0)
    bad = list(args)
    bad[1] = bad[1].cpu()
    with pytest.raises(RuntimeError, match="means must be on the device of x"):
        torch.ops.scorefast.gmm_score(*bad)
    bad = list(args)
    bad[6] = torch.ones(5)
    with pytest.raises(RuntimeError, match="sigma2 must be on the device of x"):
        torch.ops.scorefast.gmm_score(*bad)
