"""CUDA backend specifics that the generic backend tests do not reach: bitwise agreement
with the portable C++ kernels on explicit noise; the DSM ops, gmm_score and gmm_chain against
the CPU ops on every kernel path; the current stream, device indices, mixed-device errors
and CUDA graphs.

Without a GPU the kernels run in the CUDA emulator (scorefast/testing/cuda_emulator.py) on CPU
tensors: every comparison runs, and only what needs a real device (streams, graphs, a
second device, tensors on two devices) is skipped."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import (
    MAX_RADIUS,
    NOISE_REL_TOL,
    U32,
    U64,
    assert_within,
    backend_device,
    noise_tolerance,
    require_or_skip,
    storage_ulp,
)

import scorefast
from scorefast import backend_registry, samplers
from scorefast.reference import dsm_noise_ref

if not backend_registry.status("cuda").available:
    require_or_skip("cuda", f"cuda backend: {backend_registry.status('cuda').reason}", module=True)

# The CUDA kernels' device: the GPU, or the CPU under the emulator.
DEV = backend_device("cuda")
OPS = backend_registry.op_namespace("cuda") if backend_registry.status("cuda").available else None
needs_gpu = pytest.mark.skipif(DEV.type != "cuda", reason="needs a GPU (streams, graphs or two devices)")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _rand(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.fixture
def generic_cpp():
    """The portable C++ kernels, which round every add and multiply as the CUDA kernels do."""
    if not backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
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
    a = torch.rand(P, generator=torch.Generator().manual_seed(4)).to(
        torch.float64 if dtype == torch.float64 else torch.float32
    )
    for kw in (
        dict(step_size=0.1, noise_scale=0.4),
        dict(step_size=a, noise_scale=a * 2, score_cond=sc, guidance=-0.6, clamp=(-1.0, 0.5)),
    ):
        cpu = scorefast.langevin_step(x, s, noise=z, backend="cpp", **kw)
        kw_gpu = {k: v.to(DEV) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        gpu = scorefast.langevin_step(x.to(DEV), s.to(DEV), noise=z.to(DEV), backend="cuda", **kw_gpu)
        assert torch.equal(gpu.cpu(), cpu), kw


def test_clip_factors_match_cpp(generic_cpp):
    # Double accumulation in a different order: the factors agree to float rounding.
    x, s = _rand((300, 5000), torch.float32, 0), _rand((300, 5000), torch.float32, 1)  # block-per-particle path
    s[7] *= 1e-3  # a particle below the norm bound: factor 1
    z = _rand((300, 5000), torch.float32, 2)
    for cols in (5000, 33):  # warp-per-particle path for small D
        kw = dict(step_size=0.1, noise_scale=0.2, max_score_norm=0.5 * cols**0.5)  # clips most particles
        cpu = scorefast.langevin_step(x[:, :cols], s[:, :cols], noise=z[:, :cols], backend="cpp", **kw)
        gpu = scorefast.langevin_step(
            x[:, :cols].to(DEV), s[:, :cols].to(DEV), noise=z[:, :cols].to(DEV), backend="cuda", **kw
        )
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-6, atol=1e-6)


@needs_gpu
def test_runs_on_the_current_stream():
    x, s = _rand((512, 1024), torch.float32, 0).to(DEV), _rand((512, 1024), torch.float32, 1).to(DEV)
    kw = dict(step_size=0.1, seed=5, step=2, backend="cuda")
    expected = scorefast.langevin_step(x, s, **kw)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernel must be ordered after it
        out = scorefast.langevin_step(y, s, **kw)
        z = scorefast.normal((512, 1024), seed=5, step=2, device=DEV, backend="cuda")
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out, expected)
    assert torch.equal(z, scorefast.normal((512, 1024), seed=5, step=2, device=DEV, backend="cuda"))


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


@needs_gpu
def test_direct_op_calls_check_devices():
    op = OPS.langevin_step
    x = torch.zeros(4, 3, device=DEV)
    base = [x, x, None, 1.0, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None]
    bad = list(base)
    bad[1] = torch.zeros(4, 3)
    with pytest.raises(RuntimeError, match="score must be on the device of x"):
        op(*bad)
    bad = list(base)
    bad[5] = torch.ones(4)
    with pytest.raises(RuntimeError, match="step_size_per_particle must be on the device of x"):
        op(*bad)


def test_direct_noise_op_calls_check_out():
    with pytest.raises(RuntimeError, match="out must be int64"):
        OPS.philox_fill_(torch.zeros(2, 3, 4, device=DEV), 0, 0, 0)
    with pytest.raises(RuntimeError, match="out must be contiguous"):
        OPS.normal_fill_(torch.zeros(4, 6, device=DEV)[:, ::2], 0, 0, 0)


# ---------------------------------------------------------------------------------------
# Denoising score matching: the CUDA ops against the CPU ops on CPU copies of the inputs.
# The two backends' normals differ by at most noise_tolerance (libm vs CUDA math rounding);
# everything else is the same sequence of roundings, up to the order of the double sums in
# the loss and the last bit of the double pow.

DSM_SEED, DSM_STEP, DSM_OFFSET = 2**63 + 77, 5, 2**32 - 2
DSM_SEED64 = DSM_SEED - 2**64  # the ops take the seed's bits as an int64
# (5, 13), (2, 4099), (4, 3, 7): scalar path; (3, 4096), (6, 516): one block per sample; the
# rest: a team of lanes per sample, from 1 lane (D <= 4) to a full warp (D = 512).
DSM_SHAPES = [(7, 8), (5, 13), (3, 2), (64, 1), (300, 33), (4, 3, 7), (200, 512), (6, 516), (3, 4096), (2, 4099)]
DSM_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dsm_data(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    sigma = (0.05 + 2 * torch.rand(shape[0], generator=g, dtype=torch.float64)).to(_acc(dtype))
    grad = torch.randn(shape[0], generator=g, dtype=torch.float64).to(_acc(dtype))
    return x, sigma, grad


def _dsm_cpu_and_cuda(name, *args):
    """Op ``name`` by the C++ CPU kernels, and by the CUDA kernels on copies of the inputs
    (the result brought back)."""
    cpu = getattr(torch.ops.scorefast, name)(*args)
    gpu = getattr(OPS, name)(*(a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args))
    assert gpu.device.type == DEV.type
    return cpu, gpu.cpu()


def _residual_bound(pred, sigma, eps_form):
    """|r| and the bound on |r_cuda - r_cpu| per element ([B, D] float64), r = pred + z / sigma
    or pred - z, with the acc type's rounding of forming r."""
    B = pred.shape[0]
    u = U64 if pred.dtype == torch.float64 else U32
    p = pred.reshape(B, -1).double()
    z = dsm_noise_ref(pred, DSM_SEED, DSM_STEP, DSM_OFFSET).double()
    dz = noise_tolerance(B, p.shape[1], DSM_SEED, DSM_STEP, DSM_OFFSET)
    s = sigma.double()[:, None]
    if eps_form:
        return (p - z).abs(), dz + 4 * u * (p.abs() + z.abs())
    return (p + z / s).abs(), dz / s + 4 * u * (p.abs() + z.abs() / s)


@pytest.mark.parametrize("dtype", DSM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", DSM_SHAPES, ids=str)
def test_dsm_perturb_matches_cpu(dtype, shape):
    x, sigma, _ = _dsm_data(shape, dtype)
    cpu, gpu = _dsm_cpu_and_cuda("dsm_perturb", x, sigma, DSM_SEED64, DSM_STEP, DSM_OFFSET)
    assert gpu.shape == x.shape and gpu.dtype == dtype
    B = shape[0]
    u = U64 if dtype == torch.float64 else U32
    s = sigma.double().reshape(B, *([1] * (len(shape) - 1)))
    dz = noise_tolerance(B, x[0].numel(), DSM_SEED, DSM_STEP, DSM_OFFSET).reshape(shape)
    tol = s * dz + 4 * u * (x.double().abs() + s * MAX_RADIUS)
    if dtype != torch.float64:
        tol = tol + storage_ulp(cpu.double(), dtype)  # the rounding to storage may flip
    assert_within(gpu, cpu, tol, f"dsm_perturb {shape} {dtype}")


@pytest.mark.parametrize("power", [2.0, 1.5])
@pytest.mark.parametrize("form", ["score", "eps"])
@pytest.mark.parametrize("dtype", DSM_DTYPES, ids=str)
@pytest.mark.parametrize("shape", DSM_SHAPES, ids=str)
def test_dsm_loss_and_backward_match_cpu(dtype, shape, form, power):
    eps_form = form == "eps"
    pred, sigma, grad = _dsm_data(shape, dtype, seed=1)
    args = (sigma, power, eps_form, DSM_SEED64, DSM_STEP, DSM_OFFSET)
    B = shape[0]
    r, dr = _residual_bound(pred, sigma, eps_form)
    s = sigma.double()
    w = torch.ones_like(s) if eps_form else 0.5 * s**power

    cpu, gpu = _dsm_cpu_and_cuda("dsm_loss", pred, *args)
    assert gpu.shape == (B,) and gpu.dtype == _acc(dtype)
    tol = w * (2 * r * dr + dr * dr).sum(1) + 1e-6 * cpu.double().abs()
    assert_within(gpu, cpu, tol, f"dsm_loss {shape} {dtype} {form}")

    cpu, gpu = _dsm_cpu_and_cuda("dsm_loss_backward", grad, pred, *args)
    assert gpu.shape == pred.shape and gpu.dtype == dtype
    scale = (2 * grad.double() if eps_form else grad.double() * s**power).abs()[:, None]
    tol = (scale * dr).reshape(shape) + 1e-6 * cpu.double().abs()
    if dtype != torch.float64:
        tol = tol + storage_ulp(cpu.double(), dtype)
    assert_within(gpu, cpu, tol, f"dsm_loss_backward {shape} {dtype} {form}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_dsm_unaligned_input_takes_the_scalar_path(dtype):
    # D % 4 == 0 but the data starts one element into its buffer: no vector accesses.
    B, D = 9, 64
    x, sigma, grad = _dsm_data((B, D), dtype)
    buf = torch.empty(B * D + 1, dtype=dtype, device=DEV)
    xg = buf[1:].view(B, D)
    xg.copy_(x.to(DEV))
    aligned = OPS.dsm_perturb(x.to(DEV), sigma.to(DEV), DSM_SEED64, DSM_STEP, DSM_OFFSET)
    assert torch.equal(OPS.dsm_perturb(xg, sigma.to(DEV), DSM_SEED64, DSM_STEP, DSM_OFFSET), aligned)
    for eps_form in (False, True):
        args = (sigma.to(DEV), 1.5, eps_form, DSM_SEED64, DSM_STEP, DSM_OFFSET)
        # The same thread layout and sums, only scalar instead of vector loads: bitwise equal.
        assert torch.equal(OPS.dsm_loss(xg, *args), OPS.dsm_loss(x.to(DEV), *args))
        assert torch.equal(
            OPS.dsm_loss_backward(grad.to(DEV), xg, *args), OPS.dsm_loss_backward(grad.to(DEV), x.to(DEV), *args)
        )


@pytest.mark.parametrize("shape", [(6, 7), (40, 4099)], ids=str)  # team and block paths
def test_dsm_loss_nan_stays_in_its_sample(shape):
    pred, sigma, _ = _dsm_data(shape, torch.float32, seed=2)
    pred[3, 5] = float("nan")
    for eps_form in (False, True):
        cpu, gpu = _dsm_cpu_and_cuda("dsm_loss", pred, sigma, 2.0, eps_form, DSM_SEED64, DSM_STEP, DSM_OFFSET)
        assert torch.isnan(gpu[3]) and int(torch.isnan(gpu).sum()) == 1
        torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=0.0, equal_nan=True)


def test_dsm_empty_shapes():
    for shape in [(0, 5), (3, 0), (0,)]:
        x = torch.zeros(shape, device=DEV)
        sigma = torch.ones(shape[0], device=DEV)
        assert OPS.dsm_perturb(x, sigma, 1, 0, 0).shape == shape
        loss = OPS.dsm_loss(x, sigma, 2.0, False, 1, 0, 0)
        assert loss.shape == (shape[0],) and torch.equal(loss.cpu(), torch.zeros(shape[0]))
        assert OPS.dsm_loss_backward(sigma, x, sigma, 2.0, False, 1, 0, 0).shape == shape


@needs_gpu
def test_dsm_runs_on_the_current_stream():
    x, sigma, _ = _dsm_data((512, 1024), torch.float32)
    x, sigma = x.to(DEV), sigma.to(DEV)
    args = (sigma, 2.0, False, DSM_SEED64, DSM_STEP, DSM_OFFSET)
    expected_x = OPS.dsm_perturb(x, sigma, DSM_SEED64, DSM_STEP, DSM_OFFSET)
    expected_l = OPS.dsm_loss(x, *args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernels must be ordered after it
        got_x = OPS.dsm_perturb(y, sigma, DSM_SEED64, DSM_STEP, DSM_OFFSET)
        got_l = OPS.dsm_loss(y, *args)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got_x, expected_x) and torch.equal(got_l, expected_l)


def test_dsm_direct_op_calls_check_devices():
    x = torch.zeros(4, 3, device=DEV)
    sigma = torch.ones(4, device=DEV)
    if DEV.type == "cuda":  # tensors on two devices
        with pytest.raises(RuntimeError, match="sigma must be on the device of x"):
            OPS.dsm_perturb(x, sigma.cpu(), 0, 0, 0)
        with pytest.raises(RuntimeError, match="sigma must be on the device of pred"):
            OPS.dsm_loss(x, sigma.cpu(), 2.0, False, 0, 0, 0)
        with pytest.raises(RuntimeError, match="grad_per_sample must be on the device of pred"):
            OPS.dsm_loss_backward(sigma.cpu(), x, sigma, 2.0, False, 0, 0, 0)
    with pytest.raises(RuntimeError, match="sigma must be Float"):
        OPS.dsm_loss(x, sigma.double(), 2.0, False, 0, 0, 0)


# -- gmm_score -----------------------------------------------------------------------------

from scorefast.targets.presets import random_mixture  # noqa: E402

GMM_TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-9),
    torch.float32: dict(rtol=2e-4, atol=2e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


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
    dev = [a.to(DEV) if isinstance(a, torch.Tensor) else a for a in args]
    gpu = OPS.gmm_score(*dev)
    assert gpu[0].device.type == DEV.type and gpu[0].dtype == args[0].dtype and gpu[0].shape == args[0].shape
    assert gpu[1].device.type == DEV.type and gpu[1].shape == args[0].shape[:1]
    return cpu, tuple(t.cpu() for t in gpu)


# (K, D): thread-per-point D <= 4 (K over one shared-memory tile of 64), warp-per-point with
# 1, 2, 4, 16 and 32 registers per lane, and the shared-memory path (D > 1024; full: D > 512).
GMM_SHAPES = {
    "isotropic": [
        (1, 1),
        (5, 2),
        (64, 2),
        (130, 2),
        (7, 3),
        (9, 4),
        (6, 5),
        (16, 33),
        (8, 64),
        (4, 784),
        (3, 1030),
        (2, 2500),
    ],
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
@pytest.mark.parametrize(
    "kind,K,D", [("isotropic", 8, 2), ("full", 5, 3), ("diagonal", 6, 40), ("full", 4, 70)], ids=str
)
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
    gpu = scorefast.gmm_score(x.to(DEV), mixture, sigma=sigma.to(DEV), backend="cuda")
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, **GMM_TOL[torch.float32])
    score, log_prob = scorefast.gmm_score(x[:0].to(DEV), mixture, backend="cuda")
    assert score.shape == (0, 3) and log_prob.shape == (0,) and score.device.type == DEV.type


@needs_gpu
def test_gmm_score_runs_on_the_current_stream():
    mixture = random_mixture(32, 64, kind="diagonal", seed=0)
    x = _gmm_points(mixture, 4096, torch.float32, seed=0).to(DEV)
    args = _gmm_args(mixture, x, None, seed=0)
    expected = OPS.gmm_score(*args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = x * 1.0  # produced on the side stream: the kernel must be ordered after it
        out = OPS.gmm_score(y, *args[1:])
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])


@needs_gpu
def test_gmm_score_checks_devices():
    mixture = random_mixture(3, 4, kind="diagonal", seed=0)
    x = torch.zeros(5, 4, device=DEV)
    args = _gmm_args(mixture, x, None, seed=0)
    bad = list(args)
    bad[1] = bad[1].cpu()
    with pytest.raises(RuntimeError, match="means must be on the device of x"):
        OPS.gmm_score(*bad)
    bad = list(args)
    bad[6] = torch.ones(5)
    with pytest.raises(RuntimeError, match="sigma2 must be on the device of x"):
        OPS.gmm_score(*bad)


# -- gmm_chain -----------------------------------------------------------------------------

from scorefast.targets import ring  # noqa: E402

CHAIN_CASES = {
    "ula": dict(method="ula", steps=25, step_size=0.05),
    "annealed": dict(method="annealed", sigmas=[3.0, 1.0, 0.3], steps_per_level=8, epsilon=0.004),
    "mala": dict(method="mala", steps=25, step_size=0.1),
}


def _chain_budget(mix, case, steps, magnitude, dtype):
    """Bound on |cuda - cpp| after ``steps`` steps from the same start (tests/test_chain.py's
    budget, for two kernels instead of one against the float64 reference). Step t adds: the
    two noise implementations' difference, <= r NOISE_REL_TOL times sqrt(2 a_t); each
    kernel's float32 math, <= 8u of the state's magnitude times the drift's 1 + a_t lam_t;
    with 16-bit storage, one ulp (the two results can round to neighbouring values). The
    drift grows the difference so far by <= 1 + a_t lam_t, lam_t the largest precision of
    the mixture noised by sigma_t."""
    kw = CHAIN_CASES[case]
    if case == "annealed":
        last = kw["sigmas"][-1]
        schedule = [
            (kw["epsilon"] / 2 * s**2 / last**2, s**2) for s in kw["sigmas"] for _ in range(kw["steps_per_level"])
        ]
    else:
        schedule = [(kw["step_size"], 0.0)] * kw["steps"]
    min_var = float(torch.linalg.eigvalsh(mix.covariances()).min())
    err = 0.0
    for a, s2 in schedule[:steps]:
        growth = 1 + a / (min_var + s2)
        err = err * growth + math.sqrt(2 * a) * MAX_RADIUS * NOISE_REL_TOL
        if dtype != torch.float64:
            err += 2 * 8 * U32 * magnitude * growth
        if dtype in (torch.float16, torch.bfloat16):
            err += float(storage_ulp(torch.tensor(magnitude), dtype))
    return err


def _chain_cpu_and_cuda(x, mix, **kw):
    cpu = scorefast.gmm_chain(x, mix, backend="cpp", **kw)
    gpu = scorefast.gmm_chain(x.to(DEV), mix, backend="cuda", **kw)
    assert gpu.x.device.type == DEV.type and gpu.x.dtype == x.dtype and gpu.x.shape == x.shape
    return cpu, type(gpu)(*(None if t is None else t.cpu() for t in gpu))


def _assert_chains_close(cpu, gpu, mix, case, dtype, steps):
    mag = float(cpu.x.double().abs().max()) + 1.0
    tol = _chain_budget(mix, case, steps, mag, dtype)
    keep = torch.ones(cpu.x.shape[0], dtype=torch.bool)
    if case == "mala":
        same = gpu.accepted == cpu.accepted
        if dtype == torch.float64:
            assert torch.equal(gpu.accepted, cpu.accepted)
        else:  # a decision within float32 rounding of the threshold may flip (then the paths part)
            assert int((~same).sum()) <= 1
        keep = same
    assert (gpu.x.double() - cpu.x.double())[keep].abs().max() <= tol
    if cpu.trajectory is not None:
        assert gpu.trajectory.shape == cpu.trajectory.shape
        assert (gpu.trajectory.double() - cpu.trajectory.double())[:, keep].abs().max() <= tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("case", list(CHAIN_CASES))
@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 9])  # registers (D <= 4) and workspace (D > 4) kernels
def test_gmm_chain_matches_cpp(D, case, kind, dtype, generic_cpp):
    mix = random_mixture(3, D, seed=D, kind=kind, spread=2.0)
    x = mix.sample(37, seed=1).to(dtype)
    cpu, gpu = _chain_cpu_and_cuda(
        x, mix, seed=13, step_offset=7, particle_offset=3, trajectory_every=5, **CHAIN_CASES[case]
    )
    assert gpu.trajectory.shape == (cpu.trajectory.shape[0], 37, D)
    _assert_chains_close(cpu, gpu, mix, case, dtype, cpu.trajectory.shape[0] * 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("D", [2, 6])
def test_gmm_chain_16bit_matches_cpp(D, dtype, generic_cpp):
    mix = random_mixture(3, D, seed=D, kind="full", spread=2.0)
    x = mix.sample(40, seed=1).to(dtype)
    for case in ("ula", "mala"):
        kw = dict(CHAIN_CASES[case], steps=10)
        cpu, gpu = _chain_cpu_and_cuda(x, mix, seed=3, trajectory_every=2, **kw)
        _assert_chains_close(cpu, gpu, mix, case, dtype, 10)


@pytest.mark.parametrize("D", [2, 3, 6])
def test_gmm_chain_many_components_and_blocks(D, generic_cpp):
    # K > 64: the D <= 4 kernel stages the mixture a tile at a time in every evaluation;
    # N = 700: several blocks, the last one partly idle (its idle threads still stage tiles).
    mix = random_mixture(130, D, seed=5, kind="diagonal", spread=3.0)
    x = mix.sample(700, seed=2).double()
    for case in ("ula", "mala"):
        kw = dict(CHAIN_CASES[case], steps=6)
        cpu, gpu = _chain_cpu_and_cuda(x, mix, seed=4, **kw)
        _assert_chains_close(cpu, gpu, mix, case, torch.float64, 6)


@pytest.mark.parametrize("D", [3, 6])
def test_gmm_chain_cuda_independent_of_chunking(D):
    # Every particle's computation is the same whatever the launch: bitwise equal.
    mix = random_mixture(4, D, seed=1, kind="full", spread=2.0)
    x = mix.sample(300, seed=3).float().to(DEV)
    for method in ("ula", "mala"):
        kw = dict(method=method, steps=10, step_size=0.05, seed=8, step_offset=2**32 - 10, backend="cuda")
        whole = scorefast.gmm_chain(x, mix, **kw)
        parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw) for s, e in ((0, 13), (13, 257), (257, 300))]
        assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
        if method == "mala":
            assert torch.equal(torch.cat([p.accepted for p in parts]), whole.accepted)


def test_gmm_chain_cuda_equals_single_cuda_steps():
    # The chain is T calls of langevin_step with gmm_score in between (float64: the same
    # normals, the score's rounding differs by the mixture's kernel form only).
    mix = random_mixture(3, 3, seed=1, kind="full", spread=2.0)
    x = mix.sample(40, seed=2).to(DEV)
    kw = CHAIN_CASES["annealed"]
    out = scorefast.gmm_chain(x, mix, seed=5, step_offset=7, backend="cuda", **kw).x
    y = x.clone()
    last = kw["sigmas"][-1]
    levels = [(s, kw["epsilon"] / 2 * s**2 / last**2) for s in kw["sigmas"] for _ in range(kw["steps_per_level"])]
    for t, (sigma, a) in enumerate(levels):
        s = scorefast.gmm_score(y, mix, sigma=sigma, backend="cuda")[0]
        scorefast.langevin_step_(y, s, step_size=a, seed=5, step=7 + t, backend="cuda")
    torch.testing.assert_close(out, y, rtol=1e-10, atol=1e-10)


def test_gmm_chain_cuda_trajectory_nan_and_empty():
    mix = ring()
    x = mix.sample(20, seed=1).to(DEV)
    start = x.clone()
    res = scorefast.gmm_chain(
        x, mix, method="ula", steps=12, step_size=0.01, trajectory_every=4, seed=2, backend="cuda"
    )
    assert res.trajectory.shape == (3, 20, 2) and torch.equal(res.trajectory[-1], res.x)
    assert torch.equal(x, start)  # the start is not modified
    x[4, 1] = float("nan")  # MALA rejects every proposal of a NaN particle; the others run on
    res = scorefast.gmm_chain(x, mix, method="mala", steps=10, step_size=0.1, seed=2, backend="cuda")
    assert int(res.accepted[4]) == 0 and torch.isnan(res.x[4, 1])
    assert torch.isfinite(res.x[torch.arange(20, device=DEV) != 4]).all()
    assert int(res.accepted.sum()) > 0
    empty = scorefast.gmm_chain(x[:0], mix, method="mala", steps=3, step_size=0.1, seed=2, backend="cuda")
    assert empty.x.shape == (0, 2) and empty.accepted.shape == (0,)


@needs_gpu
def test_gmm_chain_cuda_checks_devices():
    mix = random_mixture(2, 3, seed=0, kind="diagonal")
    x = torch.zeros(5, 3, device=DEV)
    p = mix.kernel_params(torch.float32, x.device, None, per_point=True)
    a, s2 = torch.full((4,), 0.1, device=DEV), torch.zeros(4, device=DEV)
    args = [
        x,
        p["means"],
        p["var"],
        p["log_const"],
        p["factor"],
        a,
        s2,
        True,
        3,
        0,
        0,
        0,
        None,
        torch.zeros(5, dtype=torch.int64, device=DEV),
    ]
    for i, name in ((5, "step_size"), (6, "sigma2"), (13, "accepted"), (1, "means")):
        bad = list(args)
        bad[i] = bad[i].cpu()
        with pytest.raises(RuntimeError, match=f"{name} must be on the device of x"):
            OPS.gmm_chain_(*bad)


def test_langevin_sampler_runs_the_cuda_chain_for_a_mixture():
    mix = ring()
    x = mix.sample(64, seed=1).float().to(DEV)
    fused = samplers.langevin(mix, x.clone(), steps=20, step_size=0.01, seed=3, backend="cuda")
    chain = scorefast.gmm_chain(x, mix, method="ula", steps=20, step_size=0.01, seed=3, backend="cuda").x
    assert torch.equal(fused, chain)
    stepwise = samplers.langevin(lambda y: mix.score(y), x.clone(), steps=20, step_size=0.01, seed=3, backend="cuda")
    torch.testing.assert_close(fused, stepwise, rtol=1e-5, atol=1e-5)


# -- the step as a device tensor; samplers replayed from CUDA graphs ------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_counter_ops_equal_int_step_ops_on_cuda(dtype):
    x, s = _rand((300, 33), dtype, 0).to(DEV), _rand((300, 33), dtype, 1).to(DEV)
    step = torch.tensor([2**32 - 1], device=DEV)
    a = torch.rand(300, device=DEV)
    for kw in (dict(step_size=0.1), dict(step_size=a, clamp=(-1.0, 1.0), max_score_norm=0.5)):
        want = scorefast.langevin_step(x, s, seed=5, step=2**32 - 1, particle_offset=9, backend="cuda", **kw)
        y = x.clone()
        scorefast.langevin_step_(y, s, seed=5, step=step, particle_offset=9, backend="cuda", **kw)
        assert torch.equal(y, want)
    cuda = dict(device=DEV, backend="cuda")
    assert torch.equal(
        scorefast.normal((6, 13), seed=3, step=torch.tensor(8, device=DEV), **cuda),
        scorefast.normal((6, 13), seed=3, step=8, **cuda),
    )
    assert torch.equal(
        scorefast.philox_words(6, 3, seed=3, step=torch.tensor([8], device=DEV), **cuda),
        scorefast.philox_words(6, 3, seed=3, step=8, **cuda),
    )


@needs_gpu
def test_captured_step_reads_the_counter_at_each_replay():
    x, s = _rand((64, 10), torch.float32, 0).to(DEV), _rand((64, 10), torch.float32, 1).to(DEV)
    eager = x.clone()
    for t in range(5, 8):
        scorefast.langevin_step_(eager, s, step_size=0.1, seed=2, step=t, backend="cuda")
    counter = torch.tensor([5], device=DEV)
    y = x.clone()
    z = torch.empty(64, 10, device=DEV)

    def step():
        scorefast.langevin_step_(y, s, step_size=0.1, seed=2, step=counter, backend="cuda")
        OPS.normal_fill_counter_(z, 2, counter, 0)
        counter.add_(1)

    side = torch.cuda.Stream()  # warm-up (lazy loading) on scratch state, as torch.cuda.graphs recommends
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    y.copy_(x)
    counter.fill_(5)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    assert torch.equal(y, x)  # capture records, runs nothing
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert int(counter) == 8
    assert torch.equal(y, eager)
    assert torch.equal(z, scorefast.normal((64, 10), seed=2, step=7, device=DEV))


GRAPH_SAMPLERS = {
    "langevin": lambda mix, x, **kw: samplers.langevin(
        lambda y: mix.score(y), x, steps=9, step_size=0.05, seed=3, **kw
    ),
    "annealed": lambda mix, x, **kw: samplers.annealed_langevin(
        lambda y, s: mix.score(y, sigma=s), x, [2.0, 0.8, 0.2], steps_per_level=6, epsilon=2e-3, seed=4, **kw
    ),
    "mala": lambda mix, x, **kw: samplers.mala(
        lambda y: mix.score(y), lambda y: mix.log_prob(y), x, steps=8, step_size=0.1, seed=5, particle_offset=7, **kw
    ),
    "pc": lambda mix, x, **kw: samplers.predictor_corrector(
        lambda y, s: mix.score(y, sigma=s), x, [2.0, 0.8, 0.2], corrector_steps=4, seed=6, **kw
    ),
    "pc_batch_mean": lambda mix, x, **kw: samplers.predictor_corrector(
        lambda y, s: mix.score(y, sigma=s),
        x,
        [2.0, 0.8, 0.2],
        corrector_steps=4,
        batch_mean_rule=True,
        seed=6,
        final_denoise=False,
        **kw,
    ),
}


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(GRAPH_SAMPLERS))
def test_samplers_replayed_from_cuda_graphs_equal_the_eager_ones(name, dtype):
    mix = random_mixture(3, 5, seed=1, kind="full", spread=2.0)
    x = mix.sample(500, seed=2).to(dtype).to(DEV)
    eager = GRAPH_SAMPLERS[name](mix, x.clone())
    graphed = GRAPH_SAMPLERS[name](mix, x.clone(), cuda_graph=True)
    if isinstance(eager, tuple):
        (eager, d_eager), (graphed, d_graphed) = eager, graphed
        for k in d_eager:
            v, w = d_graphed[k], d_eager[k]
            assert torch.equal(v, w) if isinstance(w, torch.Tensor) else v == w, k
    assert torch.equal(graphed, eager)


@needs_gpu
def test_cuda_graph_with_a_fused_mixture_chain_and_a_named_backend():
    mix = ring()
    x = mix.sample(64, seed=1).float().to(DEV)
    eager = samplers.langevin(mix, x.clone(), steps=10, step_size=0.01, seed=3)
    assert torch.equal(samplers.langevin(mix, x.clone(), steps=10, step_size=0.01, seed=3, cuda_graph=True), eager)
    with pytest.raises(ValueError, match="cuda_graph=True runs the cuda backend"):
        samplers.langevin(
            lambda y: mix.score(y), x.clone(), steps=3, step_size=0.01, cuda_graph=True, backend="reference"
        )


@needs_gpu
def test_cuda_graph_capture_failure_names_the_cause():  # last: a failed capture is left behind
    mix = ring()
    x = mix.sample(64, seed=1).float().to(DEV)

    def syncing_score(y):
        return mix.score(y) * float(y.abs().max())  # a host sync: not capturable

    with pytest.raises(RuntimeError, match="could not be captured in a CUDA graph"):
        samplers.langevin(syncing_score, x.clone(), steps=5, step_size=0.01, cuda_graph=True)
