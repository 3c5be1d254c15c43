"""The Triton backend of gmm_score against the float64 reference, within an error budget.

Inputs are float32-representable (x, means, covariances, weights), so the kernel and the
reference see the same mixture; the kernel's own parameters (factor, 1/var, log_const) are
rounded to its math type, which the budget covers. Shapes are tiny: without a GPU the
kernels run through the Triton interpreter.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import U32, _required, assert_within, backend_device

import scorefast
from scorefast import backend_registry
from scorefast.reference.gmm import gmm_log_joint_ref, gmm_score_ref
from scorefast.targets import GaussianMixture
from scorefast.testing.gmm_budgets import gmm_budget as library_gmm_budget

U64 = 2.0**-52  # as the budget is stated: 2^-52 for float64


@pytest.fixture
def device():
    status = backend_registry.status("triton")
    dev = backend_device("triton")
    reason = (
        status.reason
        if not status.available
        else (None if dev.type in status.devices else f"triton does not run on {dev}")
    )
    if reason is not None:
        if "triton" in _required():
            pytest.fail(f"required backend triton is unavailable: {reason}")
        pytest.skip(f"triton: {reason}")
    return dev


@pytest.fixture
def gmm_module(device):
    from scorefast.kernels.triton import gmm

    return gmm


# --------------------------------------------------------------------------------------
# mixtures and the error budget


def _f32(t: torch.Tensor) -> torch.Tensor:
    """float64 tensor of float32-representable values."""
    return t.float().double()


def make_mixture(kind: str, K: int, D: int, seed: int, weights=None, tiny_var: bool = False) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = _f32(2.0 * torch.randn(K, D, dtype=torch.float64, generator=g))
    if weights is not None:
        weights = _f32(torch.as_tensor(weights, dtype=torch.float64))
    if kind == "isotropic":
        var = _f32(0.5 + torch.rand(K, dtype=torch.float64, generator=g))
        if tiny_var:
            var[0] = _f32(torch.tensor(1e-6, dtype=torch.float64))
        return GaussianMixture(means, weights, variance=var)
    if kind == "diagonal":
        var = _f32(0.5 + torch.rand(K, D, dtype=torch.float64, generator=g))
        if tiny_var:
            var[0, 0] = _f32(torch.tensor(1e-6, dtype=torch.float64))
        return GaussianMixture(means, weights, diagonal=var)
    A = 0.5 * torch.randn(K, D, D, dtype=torch.float64, generator=g)
    cov = (A @ A.transpose(1, 2) + 0.5 * torch.eye(D, dtype=torch.float64)).float()
    cov = ((cov + cov.transpose(1, 2)) / 2).double()  # exactly symmetric
    if tiny_var:
        cov[0] = _f32(torch.full((D,), 1e-6, dtype=torch.float64)).diag()
    return GaussianMixture(means, weights, covariance=cov)


def _sigma2_per_point(sigma, N: int) -> torch.Tensor:
    if sigma is None:
        return torch.zeros(N, 1, dtype=torch.float64)
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return (s * s).reshape(-1, 1).expand(N, 1)


def gmm_budget(x: torch.Tensor, mix: GaussianMixture, sigma, dtype: torch.dtype):
    """Per-point bounds (tol_score [N, 1], tol_logp [N]) on |kernel - reference(float64)|.

    With responsibilities r_k, log-joints l_k and component scores s_k of the reference:
      dl_k = 4u (|log_const_k| + (D + 2)(quad_k + lam_max_k ||(|x| + |mu_k|)||^2)),
    the error of l_k from rounding its inputs (x - mu, the factor, 1/var, log_const) and
    the O(D) sums of the quadratic form (lam_max_k: the largest precision eigenvalue);
      tol_logp  = sum_k r_k dl_k + 4u |log p|,
      tol_score = sum_k r_k dl_k |s_k| + (sum_k r_k dl_k)(sum_k r_k |s_k|)
                  + (D + 8) u sum_k r_k (|s_k| + lam_max_k ||(|x| + |mu_k|)||),
    the first two terms from perturbed responsibilities, the last from forming s_k (the
    lam_max term bounds cancellation in F_k (h . t) and the rounding of x - mu_k). |s_k| is
    the Euclidean norm, so the bound is per point. u = 2^-24 (float32 math) or 2^-52.
    """
    u = U64 if dtype == torch.float64 else U32
    N, D = x.shape
    xd = x.double().cpu()
    lj, s = gmm_log_joint_ref(xd, mix.means, mix.log_weights, mix.kind, mix.cov, sigma)
    log_p = torch.logsumexp(lj, dim=1)
    r = torch.exp(lj - log_p[:, None])  # (N, K); 0 for weight-0 components
    eig = {"isotropic": lambda c: c[:, None].expand(-1, D), "diagonal": lambda c: c, "full": torch.linalg.eigvalsh}[
        mix.kind
    ](mix.cov)  # (K, D) covariance eigenvalues
    lam = eig[None, :, :] + _sigma2_per_point(sigma, N)[:, :, None]  # (N, K, D) of C_k + sigma^2 I
    lam_max = 1.0 / lam.min(dim=2).values  # (N, K) largest precision eigenvalue
    log_const = mix.log_weights.abs()[None, :] + 0.5 * D * math.log(2 * math.pi) + 0.5 * lam.log().abs().sum(2)
    quad = -(s * (xd[:, None, :] - mix.means[None])).sum(2)  # diff^T P diff
    spread2 = ((xd.abs()[:, None, :] + mix.means.abs()[None]) ** 2).sum(2)  # ||(|x| + |mu_k|)||^2
    dl = 4 * u * (log_const + (D + 2) * (quad + lam_max * spread2))
    s_norm = s.norm(dim=2)
    live = r > 0  # weight-0 components (log w = -inf) contribute nothing
    rdl = torch.where(live, r * dl, 0.0).sum(1)
    rs = torch.where(live, r * s_norm, 0.0).sum(1)
    rdls = torch.where(live, r * dl * s_norm, 0.0).sum(1)
    form = torch.where(live, r * (s_norm + lam_max * spread2.sqrt()), 0.0).sum(1)
    tol_logp = rdl + 4 * u * log_p.abs()
    tol_score = rdls + rdl * rs + (D + 8) * u * form
    return tol_score[:, None], tol_logp


def check_against_reference(x, mix, sigma, device, what=""):
    """backend='triton' on ``device`` vs the float64 reference on the same inputs."""
    xs = x.to(device)
    sig = sigma.to(device) if isinstance(sigma, torch.Tensor) else sigma
    score, log_p = scorefast.gmm_score(xs, mix, sigma=sig, backend="triton")
    assert score.dtype == x.dtype and log_p.dtype == x.dtype
    assert score.shape == x.shape and log_p.shape == x.shape[:1]
    ref_sigma = sigma.double() if isinstance(sigma, torch.Tensor) else sigma
    ref_score, ref_logp = gmm_score_ref(x.double(), mix.means, mix.log_weights, mix.kind, mix.cov, ref_sigma)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    tol_score, tol_logp = gmm_budget(x, mix, ref_sigma, compute)
    if x.dtype in (torch.float16, torch.bfloat16):  # plus rounding the result to storage
        eps = torch.finfo(x.dtype).eps
        tol_score = tol_score + eps * ref_score.abs()
        tol_logp = tol_logp + eps * ref_logp.abs()
    # Far from the modes the first-order responsibilities term above runs to ~1000 times the
    # score; the library's budget caps it by what the responsibilities can move (nothing beyond
    # rounding where one component holds the weight). Both bound the error: take the smaller.
    tol_score = torch.minimum(tol_score.expand_as(ref_score), library_gmm_budget(x, mix, ref_sigma, x.dtype)[2])
    assert_within(log_p.cpu(), ref_logp, tol_logp, f"{what} log_prob")
    assert_within(score.cpu(), ref_score, tol_score.expand_as(ref_score), f"{what} score")
    return score.cpu(), log_p.cpu()


def _points(N, D, dtype, seed, scale=2.5):
    g = torch.Generator().manual_seed(1000 + seed)
    return (scale * torch.randn(N, D, dtype=torch.float64, generator=g)).to(dtype)


def _sigma(mode, N, dtype, seed):
    if mode == "none":
        return None
    if mode == "float":
        return 0.7
    g = torch.Generator().manual_seed(2000 + seed)
    return (0.1 + torch.rand(N, dtype=torch.float64, generator=g)).to(dtype)


# --------------------------------------------------------------------------------------
# against the reference

KINDS = ("isotropic", "diagonal", "full")
SIGMAS = ("none", "float", "per_point")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_mode", SIGMAS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(device, kind, sigma_mode, dtype):
    for i, (N, K, D) in enumerate([(5, 1, 1), (17, 3, 5), (9, 2, 3)]):
        seed = 10 * i + KINDS.index(kind)
        mix = make_mixture(kind, K, D, seed)
        x = _points(N, D, dtype, seed)
        check_against_reference(x, mix, _sigma(sigma_mode, N, dtype, seed), device, f"N={N} K={K} D={D}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_weights(device, kind, dtype):
    # Components of weight 0 (l = -inf) are skipped: they neither contribute nor make NaN.
    mix = make_mixture(kind, 3, 4, seed=3, weights=[0.0, 0.3, 0.0])
    x = _points(9, 4, dtype, seed=3)
    score, log_p = check_against_reference(x, mix, _sigma("per_point", 9, dtype, 3), device)
    assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all())
    # At a zero-weight component's mean the score is still that of the others.
    x0 = mix.means[[0, 2]].to(dtype)
    check_against_reference(x0, mix, None, device, "at a zero-weight mean")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_far_points(device, kind, dtype):
    # |x| = 1e4: every l_k is ~ -1e8 / var; the online log-sum-exp stays finite, and the
    # score is that of the nearest component, -P_k (x - mu_k), to a few ulp.
    mix = make_mixture(kind, 3, 3, seed=4)
    g = torch.Generator().manual_seed(4)
    direction = torch.randn(6, 3, dtype=torch.float64, generator=g)
    x = (1e4 * direction / direction.norm(dim=1, keepdim=True)).to(dtype)
    for sigma in (None, 0.5):
        score, log_p = check_against_reference(x, mix, sigma, device, f"far, sigma={sigma}")
        assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all())
        ref_score, _ = gmm_score_ref(x.double(), mix.means, mix.log_weights, mix.kind, mix.cov, sigma)
        u = U64 if dtype == torch.float64 else U32
        rel = ((score.double() - ref_score).norm(dim=1) / ref_score.norm(dim=1)).max().item()
        assert rel < 64 * u, f"far points: relative score error {rel:.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_variance(device, kind, dtype):
    # One component with variance 1e-6: points at and near its mean (where it dominates,
    # log-density ~ +D * 6.9) and elsewhere.
    mix = make_mixture(kind, 3, 3, seed=5, tiny_var=True)
    g = torch.Generator().manual_seed(5)
    near = mix.means[0] + 1e-3 * torch.randn(4, 3, dtype=torch.float64, generator=g)
    x = torch.cat([mix.means[:1], near, _points(4, 3, torch.float64, seed=5)]).to(dtype)
    score, log_p = check_against_reference(x, mix, None, device, "tiny variance")
    assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all())
    check_against_reference(x, mix, _sigma("per_point", x.shape[0], dtype, 5), device, "tiny variance, per-point sigma")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_mode", ["none", "per_point"])
@pytest.mark.parametrize("kind", KINDS)
def test_nan_row_only(device, kind, sigma_mode, dtype):
    N, D = 7, 3
    mix = make_mixture(kind, 2, D, seed=6)
    x = _points(N, D, dtype, seed=6)
    x[2, 1] = float("nan")
    score, log_p = check_against_reference(x, mix, _sigma(sigma_mode, N, dtype, 6), device, "NaN row")
    assert bool(torch.isnan(score[2]).all()) and bool(torch.isnan(log_p[2]))
    others = torch.arange(N) != 2
    assert bool(torch.isfinite(score[others]).all()) and bool(torch.isfinite(log_p[others]).all())


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_nan_sigma2_row_only(device, gmm_module, monkeypatch, kind, chunked):
    # The public function rejects a NaN sigma; the op itself gives NaN for that point only.
    if chunked:
        monkeypatch.setattr(gmm_module, "MAX_BLOCK_D", 2)
    mix = make_mixture(kind, 2, 3, seed=7)
    x = _points(5, 3, torch.float32, seed=7).to(device)
    sigma2 = _sigma("per_point", 5, torch.float32, 7).to(device) ** 2
    sigma2[3] = float("nan")
    score, log_p = torch.ops.scorefast_triton.gmm_score(*_kernel_args(mix, x, sigma2))
    assert torch.isnan(log_p.cpu()).tolist() == [False, False, False, True, False]
    assert torch.isnan(score.cpu()).any(1).tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_storage(device, dtype):
    # Computed in float32, rounded once to storage.
    mix = make_mixture("diagonal", 2, 3, seed=8)
    x = _points(6, 3, dtype, seed=8)
    check_against_reference(x, mix, 0.3, device, str(dtype))


def test_noncontiguous_x(device):
    mix = make_mixture("full", 2, 3, seed=9)
    x = _points(3, 8, torch.float32, seed=9)[:, ::3]  # (3, 3), strides (8, 3)
    assert not x.is_contiguous()
    check_against_reference(x, mix, None, device, "strided x")


# --------------------------------------------------------------------------------------
# launch configuration: blocks of points and the D-chunked path


@pytest.mark.parametrize("kind", KINDS)
def test_independent_of_block_of_points(device, gmm_module, monkeypatch, kind):
    # Several programs with a partial last block give the same results as one program.
    mix = make_mixture(kind, 3, 3, seed=11)
    x = _points(13, 3, torch.float32, seed=11).to(device)
    sigma = _sigma("per_point", 13, torch.float32, 11).to(device)
    one = scorefast.gmm_score(x, mix, sigma=sigma, backend="triton")
    monkeypatch.setattr(gmm_module, "TILE", 16)  # BLOCK_N = 16 // BLOCK_D = 4: four programs
    many = scorefast.gmm_score(x, mix, sigma=sigma, backend="triton")
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma_mode", SIGMAS)
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_over_d(device, gmm_module, monkeypatch, kind, sigma_mode, dtype):
    # D > MAX_BLOCK_D takes the paths that loop over D in chunks (as D = 784 does with the
    # default 256; full covariances: one component per pair of launches); a chunk width of 2
    # exercises them on tiny shapes, with a partial last chunk, a NaN row, and weight-0
    # components first, in the middle and last (the running state starts and ends on skips).
    monkeypatch.setattr(gmm_module, "MAX_BLOCK_D", 2)
    N, D = 9, 5
    mix = make_mixture(kind, 5, D, seed=12, weights=[0.0, 0.4, 0.0, 0.6, 0.0])
    x = _points(N, D, dtype, seed=12)
    x[4, 3] = float("nan")
    score, log_p = check_against_reference(x, mix, _sigma(sigma_mode, N, dtype, 12), device, "chunked")
    assert bool(torch.isnan(log_p[4])) and int(torch.isnan(log_p).sum()) == 1
    assert bool(torch.isnan(score[4]).all()) and int(torch.isnan(score).any(1).sum()) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_far_and_tiny(device, gmm_module, monkeypatch, kind, dtype):
    # Far points (|x| ~ 1e4) and a component of variance 1e-6 (points at and near its mean)
    # through the chunked paths, fixed and per-point sigma.
    monkeypatch.setattr(gmm_module, "MAX_BLOCK_D", 2)
    mix = make_mixture(kind, 3, 3, seed=13, tiny_var=True)
    g = torch.Generator().manual_seed(13)
    near = mix.means[0] + 1e-3 * torch.randn(2, 3, dtype=torch.float64, generator=g)
    far = 1e4 * torch.tensor([[1.0, 1.0, 1.0], [-0.6, 0.0, 0.8]], dtype=torch.float64)
    x = torch.cat([far, mix.means[:1], near, _points(3, 3, torch.float64, seed=13)]).to(dtype)
    for mode in ("none", "per_point"):
        sigma = _sigma(mode, x.shape[0], dtype, 13)
        score, log_p = check_against_reference(x, mix, sigma, device, f"chunked far/tiny, sigma {mode}")
        assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all())


def test_chunked_full_independent_of_block_of_points(device, gmm_module, monkeypatch):
    # Several programs over the points (a partial last block) times several D chunks give the
    # same results as one program over the points: no state crosses rows or chunks wrongly.
    monkeypatch.setattr(gmm_module, "MAX_BLOCK_D", 2)
    mix = make_mixture("full", 3, 5, seed=14)
    x = _points(9, 5, torch.float32, seed=14).to(device)
    sigma = _sigma("per_point", 9, torch.float32, 14).to(device)
    one = scorefast.gmm_score(x, mix, sigma=sigma, backend="triton")
    monkeypatch.setattr(gmm_module, "TILE", 8)  # BLOCK_N = 8 // BLOCK_D = 4: three programs
    many = scorefast.gmm_score(x, mix, sigma=sigma, backend="triton")
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chunked_full_16bit_storage(device, gmm_module, monkeypatch, dtype):
    # Loaded to float32 in the t pass, rounded once to storage at the last component.
    monkeypatch.setattr(gmm_module, "MAX_BLOCK_D", 2)
    mix = make_mixture("full", 2, 3, seed=18)
    check_against_reference(_points(6, 3, dtype, seed=18), mix, 0.3, device, f"chunked {dtype}")


# --------------------------------------------------------------------------------------
# the op itself


def _kernel_args(mix, x, sigma2=None):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = mix.kernel_params(acc, x.device, None, per_point=sigma2 is not None)
    return [x, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], sigma2]


def test_op_empty_and_fake(device):
    mix = make_mixture("diagonal", 2, 3, seed=15)
    x = torch.empty(0, 3, device=device)
    score, log_p = torch.ops.scorefast_triton.gmm_score(*_kernel_args(mix, x))
    assert score.shape == (0, 3) and log_p.shape == (0,)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        args = [
            None if a is None else mode.from_tensor(a)
            for a in _kernel_args(mix, _points(5, 3, torch.float32, 15).to(device))
        ]
        score, log_p = torch.ops.scorefast_triton.gmm_score(*args)
    assert score.shape == (5, 3) and log_p.shape == (5,) and score.dtype == torch.float32


def test_op_no_gradient(device):
    mix = make_mixture("isotropic", 2, 2, seed=16)
    x = _points(3, 2, torch.float32, seed=16).to(device).requires_grad_()
    score, log_p = scorefast.gmm_score(x, mix, backend="triton")
    with pytest.raises(RuntimeError, match="no gradient"):
        log_p.sum().backward()


def _bad_calls(mix, x):
    good = _kernel_args(mix, x)

    def with_(i, value):
        args = list(good)
        args[i] = value
        return args

    return [
        (with_(0, x[0]), "x must have shape"),
        (with_(0, x.int()), "x must be float32, float64, float16 or bfloat16"),
        (with_(1, good[1].double()), "means must be"),
        (with_(1, good[1][:0]), "the mixture is empty"),
        (with_(2, good[2][:, :2]), "var must have shape"),
        (with_(3, good[3][:1]), "inv_var must have shape"),
        (with_(4, good[1].new_zeros(2, 3, 2)), "factor must have shape"),
        (with_(5, good[5][:1]), "log_const must have shape"),
        (with_(6, good[1].new_ones(4)), "sigma2 must have shape"),
    ]


def test_op_checks_match_cpp(device):
    # Direct calls of the op get the C++ op's checks, with its messages.
    mix = make_mixture("diagonal", 2, 3, seed=17)
    x = _points(5, 3, torch.float32, seed=17).to(device)
    cpp_ok = backend_registry.status("cpp").available
    for args, message in _bad_calls(mix, x):
        with pytest.raises(RuntimeError, match=message):
            torch.ops.scorefast_triton.gmm_score(*args)
        if cpp_ok:
            cpu_args = [None if a is None else a.cpu() for a in args]
            with pytest.raises(RuntimeError, match=message):
                torch.ops.scorefast.gmm_score(*cpu_args)
