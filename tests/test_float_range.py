"""Far from the modes float32 math overflows: gmm_score and gmm_chain give the float64 result
there (rounded to the storage dtype) on every backend, and every other point keeps the float32
kernel's result bit for bit (scorefast._float_range decides which points)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import require_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st

import scorefast
from scorefast import _float_range
from scorefast import backend_registry as backends
from scorefast.targets import GaussianMixture
from scorefast.targets.presets import two_mode_2d
from scorefast.testing.budgets import storage_ulp
from scorefast.testing.chain_budget import chain_error_bound
from scorefast.testing.gmm_budgets import gmm_budget

TWO_MEANS = torch.tensor([[-2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)


def _two_mode(kind: str) -> GaussianMixture:
    """two_mode_2d with its unit covariances written as isotropic, diagonal or full."""
    if kind == "isotropic":
        return two_mode_2d()
    if kind == "diagonal":
        return GaussianMixture(TWO_MEANS, diagonal=torch.ones(2, 2, dtype=torch.float64))
    return GaussianMixture(TWO_MEANS, covariance=torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone())


def _example(name: str, kind: str = "isotropic"):
    """(x (N, 2) float64, mixture, sigma, the rows whose float32 math overflows) of each overflow
    of the defect, beside ordinary rows (which keep the float32 kernel's result)."""
    if name == "far_point":  # (x - mu)^2 = 1e40
        x = torch.tensor([[1e20, 1e20], [1e20, -3.0], [-2.5e19, 4e19], [0.5, 0.5]], dtype=torch.float64)
        return x, _two_mode(kind), None, [True, True, True, False]
    if name == "huge_means":  # the means themselves square past float32's range
        mix = GaussianMixture(torch.tensor([[1e30, 0.0], [-1e30, 0.0]], dtype=torch.float64))
        x = torch.tensor([[1e29, 1.0], [-3e29, -2.0], [0.5, 0.0]], dtype=torch.float64)
        return x, mix, None, [True, True, True]
    if name == "tiny_variance":  # 1e10 / 1e-30 = 1e40
        mix = GaussianMixture(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64), variance=1e-30)
        x = torch.tensor([[1e5, 0.0], [0.0, -1e5], [1.0, 1.0]], dtype=torch.float64)
        return x, mix, None, [True, True, False]
    if name == "huge_sigma":  # sigma^2 = 1e40 in float32
        x = torch.tensor([[1.0, 0.0], [0.3, -0.2], [5.0, 5.0]], dtype=torch.float64)
        return x, _two_mode(kind), torch.tensor([1e20, 0.5, 3e19], dtype=torch.float64), [True, False, True]
    raise ValueError(name)


EXAMPLES = ["far_point", "huge_means", "tiny_variance", "huge_sigma"]


def _assert_float64_rounded(actual, ref, tol64, dtype, what):
    """actual (storage dtype) is the float64 result rounded to ``dtype``: within the float64
    kernel's budget tol64 of the float64 reference plus one storage ulp; where the reference
    rounds past the dtype's range, exactly that infinity."""
    a = actual.detach().cpu().double()
    rounded = ref.to(dtype).double()
    assert not bool(torch.isnan(a).any()), f"{what}: NaN where the float64 result is {ref}"
    out = torch.isinf(rounded)
    assert torch.equal(a[out], rounded[out]), f"{what}: {a[out]} where float64 rounds to {rounded[out]}"
    err = (a - ref).abs()[~out]
    tol = (tol64 + storage_ulp(ref, dtype))[~out]
    assert bool((err <= tol).all()), f"{what}: |{a[~out]} - {ref[~out]}| exceeds {tol}"


def _check_score_example(backend, device, name, kind, dtype):
    x64, mix, sigma, overflows = _example(name, kind)
    x = x64.to(dtype).t().contiguous().t().to(device)  # column-major: any strides
    sig = None if sigma is None else sigma.float().to(device)  # per-point sigma: float32 with float32 math
    score, log_p = scorefast.gmm_score(x, mix, sigma=sig, backend=backend)
    assert score.dtype == dtype and log_p.dtype == dtype
    # Against the float64 reference on the same inputs (x and sigma as stored). Rows that overflow
    # float32: the float64 kernels' budget and the rounding to the storage dtype. The others: the
    # float32 kernels' budget (the reference backend computes in float64 throughout: the float64 one).
    xc, sc = x.cpu(), None if sig is None else sig.cpu()
    ref_s, ref_l, tol_s, tol_l = gmm_budget(xc, mix, sc, torch.float64)
    far = torch.tensor(overflows)
    _assert_float64_rounded(score[far], ref_s[far], tol_s[far], dtype, f"score {name} {kind}")
    _assert_float64_rounded(log_p[far], ref_l[far], tol_l[far], dtype, f"log_prob {name} {kind}")
    if backend != "reference":
        ref_s, ref_l, tol_s, tol_l = gmm_budget(xc[~far], mix, None if sc is None else sc[~far], dtype)
    else:
        ref_s, ref_l = ref_s[~far], ref_l[~far]
        tol_s, tol_l = tol_s[~far] + storage_ulp(ref_s, dtype), tol_l[~far] + storage_ulp(ref_l, dtype)
    assert bool(((score[~far].cpu().double() - ref_s).abs() <= tol_s).all()), f"score {name} {kind}, near rows"
    assert bool(((log_p[~far].cpu().double() - ref_l).abs() <= tol_l).all()), f"log_prob {name} {kind}, near rows"


def _kinds(name):
    return ["isotropic", "diagonal", "full"] if name in ("far_point", "huge_sigma") else ["isotropic"]


CASES = [(name, kind) for name in EXAMPLES for kind in _kinds(name)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,kind", CASES)
def test_score_far_from_float32_range_is_the_float64_result(kernel_backend, name, kind, dtype):
    _check_score_example(kernel_backend.name, kernel_backend.device, name, kind, dtype)


@pytest.mark.parametrize("name,kind", CASES)
def test_reference_score_far_from_float32_range(name, kind):
    _check_score_example("reference", torch.device("cpu"), name, kind, torch.float32)


def test_mixture_methods_far_from_the_modes():
    mix = two_mode_2d()
    x = torch.full((1, 2), 1e20)
    s = mix.score(x)
    assert bool(torch.isfinite(s).all())
    torch.testing.assert_close(s.double(), -x.double(), rtol=1e-6, atol=0)  # -(x - mu) / 1, mu = O(1)
    # log p = -1e40 - log(2 pi) - ...: below float32's range, so -inf (not NaN)
    assert mix.log_prob(x).item() == -math.inf
    assert mix.log_prob(x.double()).item() == pytest.approx(-(float(x[0, 0]) ** 2), rel=1e-12)


# ---------------------------------------------------------------------------------------
# The normal path


def _direct(backend, x, mix, sigma=None):
    """The float32 kernel alone, without the range check."""
    per_point = isinstance(sigma, torch.Tensor)
    s2 = None if sigma is None or per_point else float(sigma) ** 2
    p = mix.kernel_params(torch.float32, x.device, s2, per_point=per_point)
    sigma2 = (sigma.float() ** 2).contiguous() if per_point else None
    ns = backends.op_namespace(backend)
    return ns.gmm_score(x, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], sigma2)


def _same(a, b) -> bool:
    """Bit for bit, NaN where NaN."""
    nan = torch.isnan(a)
    return torch.equal(nan, torch.isnan(b)) and torch.equal(a[~nan], b[~nan])


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("per_point", [False, True])
def test_points_not_at_risk_keep_the_kernel_result_bit_for_bit(kernel_backend, kind, per_point):
    kb = kernel_backend
    mix = _two_mode(kind)
    n = 5 if kb.interpreted else 40
    x = mix.sample(n, seed=3).float()
    x[1] = 1e20  # at risk
    x[2, 0] = math.nan  # NaN stays NaN, in its row
    x[3] = torch.tensor([3e15, -1e15])  # far, but nothing overflows: the float32 kernel's result
    x = x.to(kb.device)
    sigma = torch.rand(n, generator=torch.Generator().manual_seed(4)).to(kb.device) if per_point else None
    score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend=kb.name)
    plain_s, plain_l = _direct(kb.name, x, mix, sigma)
    keep = torch.ones(n, dtype=torch.bool)
    keep[1] = False
    assert _same(score[keep], plain_s[keep]) and _same(log_p[keep], plain_l[keep])
    assert bool(torch.isnan(score[2]).all()) and bool(torch.isnan(log_p[2]))
    assert bool(torch.isnan(plain_s[1]).any())  # the kernel alone fails there ...
    assert bool(torch.isfinite(score[1]).all())  # ... the op does not
    # A batch with nothing at risk is the kernel's result, whole.
    y = mix.sample(n, seed=5).float().to(kb.device)
    s, lp = scorefast.gmm_score(y, mix, sigma=sigma, backend=kb.name)
    ps, pl = _direct(kb.name, y, mix, sigma)
    assert torch.equal(s, ps) and torch.equal(lp, pl)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["isotropic", "diagonal", "full"]),
    log_x=st.integers(0, 30),
    log_var=st.integers(-35, 35),
    log_mean=st.integers(-2, 34),
    seed=st.integers(0, 2**16),
)
def test_cheap_test_and_bound_are_sound(backend, kind, log_x, log_var, log_mean, seed):
    # Across scales, on the CPU kernels: (1) where rows_at_risk clears a point, the float32 kernel
    # is finite there (the bound covers every overflow); (2) log_probs_in_range never clears a
    # batch in which rows_at_risk finds a point at risk.
    status = backends.status(backend)
    if not status.available:
        require_or_skip(backend, f"{backend}: {status.reason}")
    g = torch.Generator().manual_seed(seed)
    K, D = 3, 3
    means = (torch.randn(K, D, generator=g, dtype=torch.float64) * 10.0**log_mean).clamp(-1e35, 1e35)
    var = 10.0**log_var * (0.5 + torch.rand(K, D, generator=g, dtype=torch.float64))
    if kind == "isotropic":
        mix = GaussianMixture(means, variance=var[:, 0])
    elif kind == "diagonal":
        mix = GaussianMixture(means, diagonal=var)
    else:
        q = torch.linalg.qr(torch.randn(K, D, D, generator=g, dtype=torch.float64))[0]
        mix = GaussianMixture(means, covariance=q @ torch.diag_embed(var) @ q.transpose(1, 2))
    x = (torch.randn(8, D, generator=g, dtype=torch.float64) * 10.0 ** torch.linspace(0, log_x, 8)[:, None]).float()
    p = mix.kernel_params(torch.float32, x.device, None, per_point=False)
    score, log_p = _direct(backend, x, mix)
    largest = float(mix.cov.amax()) if kind != "full" else float(mix.cov.diagonal(dim1=1, dim2=2).sum(1).amax())
    mr = _float_range.mixture_range(p, False, lambda: largest)
    risk = _float_range.rows_at_risk(x, mr)
    safe = ~risk
    assert bool(torch.isfinite(score[safe]).all()) and bool(torch.isfinite(log_p[safe]).all())
    if bool(risk.any()):
        assert not _float_range.log_probs_in_range(log_p, mr)


def test_rows_with_inf_or_nan_are_not_at_risk():
    mix = two_mode_2d()
    p = mix.kernel_params(torch.float32, torch.device("cpu"), None, per_point=False)
    mr = _float_range.mixture_range(p, False, lambda: 1.0)
    x = torch.tensor([[math.inf, 0.0], [math.nan, 1e30], [1e30, 0.0], [1.0, 2.0]])
    assert _float_range.rows_at_risk(x, mr).tolist() == [False, False, True, False]
    sigma2 = torch.tensor([0.0, 0.0, 0.0, 1e40], dtype=torch.float64)
    assert _float_range.rows_at_risk(x, mr, sigma2).tolist() == [False, False, True, True]


# ---------------------------------------------------------------------------------------
# Chains started far away

CHAIN_CASES = {
    "ula": dict(method="ula", steps=3, step_size=0.01),
    "annealed": dict(method="annealed", sigmas=[2.0, 1.0], steps_per_level=2, epsilon=0.02),
    "mala": dict(method="mala", steps=3, step_size=0.01),
}
CHAIN_START = torch.tensor([[1e20, 1e20], [1e20, -3.0], [0.5, 0.5]], dtype=torch.float64)


def _chain_schedule(kw):
    """(step sizes, noise levels or None) of every step, as gmm_chain forms them."""
    schedule = scorefast.chain._schedule(
        kw["method"],
        kw.get("steps"),
        kw.get("step_size"),
        kw.get("sigmas"),
        kw.get("steps_per_level", 1),
        kw.get("epsilon", 1.0),
    )
    return schedule.chunk(0, schedule.steps)


def _check_chain(backend, device, case):
    kw = CHAIN_CASES[case]
    x = CHAIN_START.float().to(device)
    res = scorefast.gmm_chain(x, two_mode_2d(), seed=3, trajectory_every=1, backend=backend, **kw)
    assert res.x.dtype == torch.float32 and res.trajectory.dtype == torch.float32
    assert bool(torch.isfinite(res.x).all()) and bool(torch.isfinite(res.trajectory).all())
    # The whole call ran in float64: the float64 chain of the same backend, rounded.
    f64 = scorefast.gmm_chain(x.double(), two_mode_2d(), seed=3, trajectory_every=1, backend=backend, **kw)
    assert torch.equal(res.x, f64.x.float()) and torch.equal(res.trajectory, f64.trajectory.float())
    # Against the float64 reference chain on the same start: the float64 chain's budget, step by
    # step, plus the final rounding to float32.
    start = x.cpu().double()
    ref = scorefast.gmm_chain(start, two_mode_2d(), seed=3, trajectory_every=1, backend="reference", **kw)
    _, bound = chain_error_bound(start, two_mode_2d(), *_chain_schedule(kw), mala=case == "mala", seed=3)
    err = (res.trajectory.cpu().double() - ref.trajectory).abs().amax(-1)
    allowed = bound + storage_ulp(ref.trajectory, torch.float32).amax(-1)
    assert bool((err <= allowed).all()), f"{case}: error {err} over {allowed}"
    if case == "mala":
        assert torch.equal(res.accepted.cpu(), ref.accepted) and torch.equal(res.accepted, f64.accepted)
        assert res.accepted.tolist() == [3, 3, 3]  # the float64 chain accepts every proposal here


@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_chain_started_far_away_runs_in_float64(kernel_backend, case):
    assert backends.has_op(kernel_backend.name, "gmm_chain_")
    _check_chain(kernel_backend.name, kernel_backend.device, case)


@pytest.mark.parametrize("case", list(CHAIN_CASES))
def test_reference_chain_started_far_away(case):
    _check_chain("reference", torch.device("cpu"), case)


def test_chain_noise_level_past_float32_range_runs_in_float64(kernel_backend):
    # sigma_1 = 1e20: its sigma^2 is inf in float32; the chain runs in float64 (x stays ordinary).
    kb = kernel_backend
    x = torch.tensor([[0.5, 0.5], [-1.0, 2.0]], device=kb.device)
    kw = dict(method="annealed", sigmas=[1e20, 1.0], steps_per_level=1, epsilon=1e-42)
    res = scorefast.gmm_chain(x, two_mode_2d(), seed=1, backend=kb.name, **kw)
    f64 = scorefast.gmm_chain(x.double(), two_mode_2d(), seed=1, backend=kb.name, **kw)
    assert bool(torch.isfinite(res.x).all())
    assert torch.equal(res.x, f64.x.float())


def test_ordinary_chain_stays_in_float32(kernel_backend):
    # Nothing at risk: the float32 kernel chain, bit for bit the op called directly.
    kb = kernel_backend
    mix = two_mode_2d()
    x = mix.sample(4 if kb.interpreted else 16, seed=2).float().to(kb.device)
    res = scorefast.gmm_chain(x, mix, method="mala", steps=4, step_size=0.05, seed=9, backend=kb.name)
    p = mix.kernel_params(torch.float32, x.device, None, per_point=True)
    out, accepted = x.clone(), torch.zeros(x.shape[0], dtype=torch.int64, device=kb.device)
    a, s2 = torch.full((4,), 0.05, device=kb.device), torch.zeros(4, device=kb.device)
    backends.op_namespace(kb.name).gmm_chain_(
        out, p["means"], p["var"], p["log_const"], p["factor"], a, s2, True, 9, 0, 0, 0, None, accepted
    )
    assert torch.equal(res.x, out) and torch.equal(res.accepted, accepted)
