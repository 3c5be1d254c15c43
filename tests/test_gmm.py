"""gmm_score: every backend against the float64 reference within an error budget, for every
covariance kind and noise-level mode; stability (far points, tiny variances, zero weights,
NaN rows); errors; opcheck; torch.compile; property tests over K, D, kind and scale."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import on_each_cpu_isa, require_or_skip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scorefast
from scorefast.reference.gmm import gmm_log_joint_ref, gmm_score_ref
from scorefast.targets import GaussianMixture, random_mixture
from scorefast.testing.gmm_budgets import gmm_budget

KINDS = ["isotropic", "diagonal", "full"]
SIGMAS = ["none", "scalar", "per_point"]


def _sigma(mode, n, device, dtype):
    if mode == "none":
        return None
    if mode == "scalar":
        return 0.37
    g = torch.Generator().manual_seed(5)
    s = torch.rand(n, generator=g, dtype=torch.float64) * 2
    s[0] = 0.0  # sigma = 0 is the mixture itself
    return s.to(dtype if dtype == torch.float64 else torch.float32).to(device)


def assert_budget(actual, expected, tol, what):
    a, e = actual.double().cpu(), expected.double()
    assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{what}: NaN pattern differs"
    ok = ~torch.isnan(e)
    err = (a - e).abs()[ok]
    bad = err > tol.expand_as(a)[ok]
    assert not bool(bad.any()), (
        f"{what}: {int(bad.sum())} of {err.numel()} exceed the budget; worst excess "
        f"{(err / tol.expand_as(a)[ok].clamp(min=1e-300)).max().item():.3g}x"
    )


def _require_gmm(kb):
    # Every backend that loads must carry the op: a missing kernel is a failure, not a skip.
    assert scorefast.backend_registry.has_op(kb.name, "gmm_score"), f"{kb.name} has no gmm_score kernel"


def _shape(kb, n, k, d):
    return (min(n, 7), min(k, 3), min(d, 4)) if kb.interpreted else (n, k, d)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma_mode", SIGMAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matches_reference(kernel_backend, kind, sigma_mode, dtype):
    _require_gmm(kernel_backend)
    for N, K, D in [(37, 3, 5), (5, 1, 1), (9, 4, 2), (21, 5, 8), (19, 6, 12)]:
        N, K, D = _shape(kernel_backend, N, K, D)
        mix = random_mixture(K, D, seed=K * 10 + D, kind=kind, device=kernel_backend.device)
        x = mix.sample(N, seed=1).to(dtype).to(kernel_backend.device)
        x[0] += 3.0  # a point between modes
        sigma = _sigma(sigma_mode, N, kernel_backend.device, dtype)
        score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend=kernel_backend.name)
        assert score.dtype == dtype and log_p.dtype == dtype
        assert score.shape == (N, D) and log_p.shape == (N,)
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, dtype, precision_gemm=kernel_backend.name == "cpp")
        assert_budget(score, ref_s, tol_s, f"score {kind} {sigma_mode} {(N, K, D)}")
        assert_budget(log_p, ref_l, tol_l, f"log_prob {kind} {sigma_mode} {(N, K, D)}")


@pytest.mark.parametrize("kind", KINDS)
def test_larger_shapes(kernel_backend, kind):
    _require_gmm(kernel_backend)
    shapes = [(6, 3, 3)] if kernel_backend.interpreted else [(1000, 25, 2), (300, 16, 33), (64, 5, 70)]
    if kernel_backend.name == "cpp":
        # the register tiles: 40 components fill one tile of two 16-lane vectors and one of one,
        # 40 coordinates a tile of 32 and a remainder (the CUDA emulator would take ~10 s here)
        shapes.append((50, 40, 40))
    for N, K, D in shapes:
        mix = random_mixture(K, D, seed=3, kind=kind, device=kernel_backend.device)
        x = mix.sample(N, seed=2).float().to(kernel_backend.device)
        score, log_p = scorefast.gmm_score(x, mix, backend=kernel_backend.name)
        ref_s, ref_l, tol_s, tol_l = gmm_budget(
            x, mix, None, torch.float32, precision_gemm=kernel_backend.name == "cpp"
        )
        assert_budget(score, ref_s, tol_s, f"score {(N, K, D)}")
        assert_budget(log_p, ref_l, tol_l, f"log_prob {(N, K, D)}")


def _stability_mixtures():
    means = torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 5.0]], dtype=torch.float64)
    return [
        GaussianMixture(means, variance=1e-6),
        GaussianMixture(means, weights=torch.tensor([0.0, 1.0, 0.0]), variance=torch.tensor([1.0, 0.5, 2.0])),
        GaussianMixture(means[:1], variance=1e-6),  # K = 1
        GaussianMixture(means, diagonal=torch.tensor([[1e-6, 1.0], [1.0, 1e-6], [1e-3, 1e-3]])),
        GaussianMixture(means, covariance=torch.tensor([[1e-6, 0.0], [0.0, 1e-6]]).expand(3, 2, 2).clone()),
    ]


# Far points (rows 0 and 3), modes, a tie between two modes (row 4).
STABILITY_X = torch.tensor([[1e4, -1e4], [0.0, 0.0], [3.0, 1.0], [-1e4, 3.0], [1.5, 0.5]], dtype=torch.float64)


def test_far_points_tiny_variances_zero_weights(kernel_backend):
    _require_gmm(kernel_backend)
    dev = kernel_backend.device
    x = STABILITY_X
    for mix in _stability_mixtures():
        for dtype in (torch.float32, torch.float64):
            xd = x.to(dtype).to(dev)
            score, log_p = scorefast.gmm_score(xd, mix, backend=kernel_backend.name)
            assert bool(torch.isfinite(score).all()) and bool(torch.isfinite(log_p).all()), mix
            ref_s, ref_l, tol_s, tol_l = gmm_budget(xd, mix, None, dtype)
            assert_budget(score, ref_s, tol_s, f"score {mix}")
            assert_budget(log_p, ref_l, tol_l, f"log_prob {mix}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_far_point_budget_rejects_another_components_score(dtype):
    # At |x| = 1e4 one component holds all the weight and the budget is its score's rounding: a
    # kernel that returned any other component's score, -P_j (x - mu_j), must fail it.
    for mix in _stability_mixtures():
        ref_s, _, tol_s, _ = gmm_budget(STABILITY_X.to(dtype), mix, None, dtype)
        lj, sk = gmm_log_joint_ref(STABILITY_X, mix.means, mix.log_weights, mix.kind, mix.cov)
        for n in (0, 3):
            nearest = int(lj[n].argmax())
            for j in range(mix.num_components):
                if j != nearest:
                    over = ((sk[n, j] - ref_s[n]).abs() / tol_s[n]).max()
                    assert over > 10, (mix, n, j, float(over))


@pytest.mark.parametrize("preset", ["ring8", "grid25", "two_mode"])
def test_reference_right_far_from_the_modes(preset):
    # Far away every component's log-joint is ~-1e34 and log-sum-exp rounds away log(number of
    # near ties): the responsibilities must still sum to one, so the score is that of the
    # nearest components, -(x - mu) / var, not K times it.
    from scorefast.targets import PRESETS

    mix = PRESETS[preset]()
    x = torch.tensor([[1e17, 1e17], [-3e16, 5e15]], dtype=torch.float64)
    score, log_p = gmm_score_ref(x, mix.means, mix.log_weights, mix.kind, mix.cov)
    assert torch.isfinite(score).all() and torch.isfinite(log_p).all()
    # |x - mu| / var within a relative 1e-6 of |x| / var (the means are O(1), |x| >= 5e15)
    lo, hi = x.abs() / mix.cov.max().item() * (1 - 1e-6), x.abs() / mix.cov.min().item() * (1 + 1e-6)
    assert ((score.abs() >= lo) & (score.abs() <= hi)).all(), (score, x)
    assert (torch.sign(score) == -torch.sign(x)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_nan_stays_in_its_row(kernel_backend, kind):
    _require_gmm(kernel_backend)
    mix = random_mixture(3, 3, seed=4, kind=kind, device=kernel_backend.device)
    x = mix.sample(5, seed=0).float().to(kernel_backend.device)
    x[2, 1] = float("nan")
    score, log_p = scorefast.gmm_score(x, mix, backend=kernel_backend.name)
    assert bool(torch.isnan(score[2]).all()) and bool(torch.isnan(log_p[2]))
    keep = torch.tensor([0, 1, 3, 4])
    assert bool(torch.isfinite(score[keep]).all()) and bool(torch.isfinite(log_p[keep]).all())


def test_noncontiguous_and_empty(kernel_backend):
    _require_gmm(kernel_backend)
    mix = random_mixture(3, 4, seed=6, kind="diagonal", device=kernel_backend.device)
    x = mix.sample(12, seed=0).float().to(kernel_backend.device)
    strided = torch.empty(12, 8, device=kernel_backend.device)[:, ::2]
    strided.copy_(x)
    a = scorefast.gmm_score(strided, mix, backend=kernel_backend.name)
    b = scorefast.gmm_score(x, mix, backend=kernel_backend.name)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    s, lp = scorefast.gmm_score(x[:0], mix, backend=kernel_backend.name)
    assert s.shape == (0, 4) and lp.shape == (0,)


def test_per_point_sigma_equals_scalar_sigma(kernel_backend):
    _require_gmm(kernel_backend)
    for kind in KINDS:
        mix = random_mixture(3, 3, seed=7, kind=kind, device=kernel_backend.device)
        x = mix.sample(6, seed=0).double().to(kernel_backend.device)
        a = scorefast.gmm_score(x, mix, sigma=0.5, backend=kernel_backend.name)
        b = scorefast.gmm_score(
            x, mix, sigma=torch.full((6,), 0.5, dtype=torch.float64, device=x.device), backend=kernel_backend.name
        )
        torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a[1], b[1], rtol=1e-12, atol=1e-12)


def test_opcheck_and_no_gradient(kernel_backend):
    _require_gmm(kernel_backend)
    mix = random_mixture(2, 3, seed=8, kind="full", device=kernel_backend.device)
    x = mix.sample(4, seed=0).float().to(kernel_backend.device)
    p = mix.kernel_params(torch.float32, x.device, None, per_point=False)
    op = scorefast.backend_registry.op_namespace(kernel_backend.name).gmm_score
    args = (x, p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"], None)
    if not kernel_backend.interpreted:
        torch.library.opcheck(op.default, args)
    xg = x.clone().requires_grad_(True)
    score, _ = scorefast.gmm_score(xg, mix, backend=kernel_backend.name)
    with pytest.raises(RuntimeError, match="no gradient"):
        score.sum().backward()


def test_compile_fullgraph():
    mix = random_mixture(4, 2, seed=9)
    x = mix.sample(50, seed=0).float()

    @torch.compile(fullgraph=True)
    def step(x):
        s, lp = scorefast.gmm_score(x, mix, backend="cpp")
        return x + 0.1 * s, lp

    y, lp = step(x)
    s_e, lp_e = scorefast.gmm_score(x, mix, backend="cpp")
    torch.testing.assert_close(y, x + 0.1 * s_e)
    torch.testing.assert_close(lp, lp_e)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    K=st.integers(1, 12),
    D=st.integers(1, 9),
    kind=st.sampled_from(KINDS),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
    sigma=st.sampled_from([None, 0.0, 0.8]),
)
def test_property_cpp_matches_reference(K, D, kind, scale, seed, sigma):
    mix = random_mixture(K, D, seed=seed, kind=kind, spread=4.0 * scale)
    if kind != "full":
        mix = GaussianMixture(
            mix.means,
            mix.weights,
            **({"variance": mix.cov * scale**2} if kind == "isotropic" else {"diagonal": mix.cov * scale**2}),
        )
    else:
        mix = GaussianMixture(mix.means, mix.weights, covariance=mix.cov * scale**2)
    g = torch.Generator().manual_seed(seed)
    x = (mix.sample(16, seed=seed + 1) + scale * torch.randn(16, D, generator=g, dtype=torch.float64)).float()
    score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp")
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")


@pytest.mark.parametrize("D", [*range(9, 25), 27, 31, 32, 33, 47, 64])
def test_cpp_full_covariance_precision_tiles_at_each_dimension(D):
    # cpp, full covariances, one noise level: a block's points lie in the lanes of one vector
    # per coordinate (16 in the AVX-512 build, 8 in the others). 9 <= D <= 17 take the
    # register tiles, each D its own instantiation; larger D the chunks of 16 (AVX-512) or 8
    # coordinates, the last one partial but at 24, 32 and 64; in the 8-lane builds a rest of 1
    # to 3 coordinates joins the last whole chunk (18, 19, 27, 33). 29 points: a partial block;
    # a far point and a NaN row. Every CPU kernel build.
    mix = random_mixture(6, D, seed=D, kind="full", spread=3.0)
    x = mix.sample(29, seed=3).float()
    x[1] += 40.0
    x[2, D // 2] = float("nan")
    for sigma in (None, 0.37):
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32, precision_gemm=True)
        results = on_each_cpu_isa(lambda isa, sigma=sigma: scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp"))
        for isa, (score, log_p) in results.items():
            assert_budget(score, ref_s, tol_s, f"score {isa} D={D} sigma={sigma}")
            assert_budget(log_p, ref_l, tol_l, f"log_prob {isa} D={D} sigma={sigma}")


@pytest.mark.parametrize("kind", ["isotropic", "diagonal"])
@pytest.mark.parametrize(("K", "D"), [(3, 21), (16, 64), (40, 37)])
def test_cpp_score_pass_of_points_that_weigh_one_component(kind, K, D):
    # cpp's score pass: a tile of 8 points that each weigh exactly one component (a sample of
    # separated components) takes a multiply per coordinate instead of the tile's multiply-add
    # per component of the tile. Its sums are the tile's less terms that add +0: the same bits.
    # Point 0 of the second copy lies where components 0 and K - 1 weigh alike, which sends its
    # tile (points 0 to 7) through the tile of sums; the rows of points 1 to 7 must not change.
    mix = random_mixture(K, D, seed=K + D, kind=kind, spread=6.0)
    x = mix.sample(24, seed=4).float()
    x[17, D - 1] = float("nan")  # a NaN row weighs every component as NaN: the tile form
    for sigma in (None, 0.3):
        where = f"K={K} D={D} sigma={sigma}"
        # float32 exps of log-joints 87 or more below the point's largest are +0: the kernel's
        # test for a component of nonzero weight. The margins keep each case far from it.
        gaps = _log_joint_gaps(x[:8], mix, sigma)
        assert bool((gaps[:, 1] < -150).all()), f"points 0 to 7 weigh one component each, {where}"
        mixed = x.clone()
        mixed[0] = _point_of_equal_weight(mix, 0, K - 1, sigma).float()
        assert float(_log_joint_gaps(mixed[:1], mix, sigma)[0, 1]) > -20, f"point 0 weighs two, {where}"
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32)
        results = on_each_cpu_isa(
            lambda isa, sigma=sigma, mixed=mixed: (
                scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp"),
                scorefast.gmm_score(mixed, mix, sigma=sigma, backend="cpp"),
            )
        )
        for isa, ((score, log_p), (score_mixed, log_p_mixed)) in results.items():
            where_isa = f"{isa} {where}"
            assert bool(torch.isnan(score[17]).all()), where_isa
            assert_budget(score, ref_s, tol_s, f"score {where_isa}")
            assert_budget(log_p, ref_l, tol_l, f"log_prob {where_isa}")
            exact = dict(rtol=0, atol=0, equal_nan=True, msg=where_isa)
            torch.testing.assert_close(score_mixed[1:], score[1:], **exact)
            torch.testing.assert_close(log_p_mixed[1:], log_p[1:], **exact)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal"])
@pytest.mark.parametrize("K", [1, 8, 9])
def test_cpp_two_pass_with_vectors_of_eight_components(kind, K):
    # cpp's AVX-512 build holds the components in vectors of 8 where K <= 8 (16 from K = 9):
    # K = 8 fills one, and its overlapping components weigh at every point, so every lane goes
    # into the tile's list at once; K = 1 is one lane and padding. D = 37: a partial vector of
    # coordinates; 21 points: a partial block. Every CPU build; no sigma, one, one per point.
    mix = random_mixture(K, 37, seed=K, kind=kind, spread=0.3)
    x = mix.sample(21, seed=5).float()
    x[6, 3] = float("nan")
    finite = torch.arange(21) != 6
    for sigma in (None, 0.4, torch.linspace(0.1, 1.0, 21)):
        where = f"{kind} K={K} sigma={'per point' if torch.is_tensor(sigma) else sigma}"
        gaps = _log_joint_gaps(x[finite], mix, sigma[finite] if torch.is_tensor(sigma) else sigma)
        assert bool((gaps > -50).all()), f"every component weighs at every point, {where}"
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32)
        results = on_each_cpu_isa(lambda isa, sigma=sigma: scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp"))
        for isa, (score, log_p) in results.items():
            assert bool(torch.isnan(score[6]).all()) and bool(torch.isnan(log_p[6])), f"{isa} {where}"
            assert_budget(score, ref_s, tol_s, f"score {isa} {where}")
            assert_budget(log_p, ref_l, tol_l, f"log_prob {isa} {where}")


def _log_joint_gaps(x, mix, sigma):
    """Each point's float64 log-joints less its largest, sorted in descending order (N, K)."""
    lj, _ = gmm_log_joint_ref(x.double(), mix.means, mix.log_weights, mix.kind, mix.cov, sigma)
    return (lj - lj.max(dim=1, keepdim=True).values).sort(dim=1, descending=True).values


def _point_of_equal_weight(mix, i, j, sigma):
    """The point of the segment from mean i to mean j where components i and j weigh alike
    (float64 bisection of their log-joints' difference)."""
    a, b = mix.means[i].double(), mix.means[j].double()

    def excess(t):  # log-joint of i less that of j at a + t (b - a)
        lj, _ = gmm_log_joint_ref((a + t * (b - a))[None], mix.means, mix.log_weights, mix.kind, mix.cov, sigma)
        return float(lj[0, i] - lj[0, j])

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return a + 0.5 * (lo + hi) * (b - a)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("sigma_mode", SIGMAS)
def test_blocks_of_points_and_components(kernel_backend, kind, sigma_mode):
    """Larger D: point and component counts that leave partial blocks, D that leaves a partial
    vector, a zero weight, a far point and NaN rows (full covariances at a D below the
    explicit-precision path of cpp). cpp's AVX-512 build takes blocks of 8 points for 19
    components and of 16 (two tiles of 8, the second partial here) for 13."""
    _require_gmm(kernel_backend)
    shapes = [(5, 3, 6)] if kernel_backend.interpreted else [(11, K, 21 if kind == "full" else 37) for K in (19, 13)]
    for N, K, D in shapes:
        mix = random_mixture(K, D, seed=21, kind=kind, spread=3.0)
        w = mix.weights.clone()
        w[4 % K] = 0.0
        cov = {"isotropic": "variance", "diagonal": "diagonal", "full": "covariance"}[kind]
        mix = GaussianMixture(mix.means, w, **{cov: mix.cov})
        x = mix.sample(N, seed=2).float()
        x[1] = 300.0
        nan_rows = [3, 9][: 1 + (N > 9)]
        x[nan_rows, 5] = float("nan")
        sigma = _sigma(sigma_mode, N, torch.device("cpu"), torch.float32)
        score, log_p = scorefast.gmm_score(
            x.to(kernel_backend.device),
            mix,
            backend=kernel_backend.name,
            sigma=sigma.to(kernel_backend.device) if isinstance(sigma, torch.Tensor) else sigma,
        )
        for r in nan_rows:
            assert bool(torch.isnan(score[r]).all()) and bool(torch.isnan(log_p[r])), (K, r)
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32)
        assert_budget(score, ref_s, tol_s, f"score {(N, K, D)}")
        assert_budget(log_p, ref_l, tol_l, f"log_prob {(N, K, D)}")


@pytest.mark.parametrize("D", [12, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("sigma", [None, 0.6])
def test_precision_gemm_path(dtype, sigma, D):
    """Full covariance at D >= 9 on cpp (float64: D >= 32): more than one block of points, an
    ill-conditioned component, far points, a NaN row, against the budget of the
    explicit-precision products."""
    mix = random_mixture(3, D, seed=12, kind="full", spread=3.0)
    cov = mix.cov.clone()
    cov[1] = cov[1] + 1e3 * torch.outer(torch.ones(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64)) / D
    mix = GaussianMixture(mix.means, mix.weights, covariance=cov)
    x = mix.sample(300, seed=3).to(dtype)
    x[5] = 1e3
    x[7, 3] = float("nan")
    score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp")
    assert bool(torch.isnan(score[7]).all()) and bool(torch.isnan(log_p[7]))
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, dtype, precision_gemm=True)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")
    assert bool(torch.isfinite(score[5]).all())


def test_precision_path_with_many_components():
    """Full covariance at D >= 32 with more precision entries than the float register tiles
    take (K D^2 > 2^19): float32 through the blocked GEMMs, against the same budget; a NaN row
    and a far point included."""
    K, D = 1030, 32
    mix = random_mixture(K, D, seed=5, kind="full", spread=2.0)
    x = mix.sample(19, seed=2).float()  # 19: two blocks of 8 and a partial one
    x[4] = 60.0
    x[6, 0] = float("nan")
    score, log_p = scorefast.gmm_score(x, mix, backend="cpp")
    assert bool(torch.isnan(score[6]).all()) and bool(torch.isnan(log_p[6]))
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, None, torch.float32, precision_gemm=True)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind, K, D", [("diagonal", 5, 6), ("diagonal", 40, 40), ("full", 5, 6), ("full", 7, 70)])
def test_noise_level_per_point(kind, K, D, dtype):
    """cpp's diagonal and full mixtures with a sigma per point. Diagonal: pass 1 vectorised over
    components with each point's precisions and log-determinant, pass 2 per point over its
    weighing components; 40 components fill a tile of two 16-lane vectors and one of one, 40
    coordinates two vectors and a partial one. Full: the factor form's blocks with each point's
    precisions 1 / (eigenvalue + s2); at D = 70 more vectors per row than it keeps in registers.
    A zero sigma, a far point and a NaN row included."""
    mix = random_mixture(K, D, seed=K + D, kind=kind, spread=3.0)
    x = mix.sample(37, seed=4).to(dtype)
    sigma = (torch.rand(37, generator=torch.Generator().manual_seed(1)) + 0.05).to(dtype)
    sigma[2] = 0.0
    x[7] = 50.0
    x[5, 0] = float("nan")
    score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp")
    assert bool(torch.isnan(score[5]).all()) and bool(torch.isnan(log_p[5]))
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, dtype)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")
    assert bool(torch.isfinite(score[7]).all())


@pytest.mark.parametrize("spread_of_variances", [False, True])
def test_noise_level_per_point_log_determinant(spread_of_variances):
    """cpp's diagonal log det(var + s2 I) per point: one log of the product of the D = 70
    factors (mantissas multiplied, renormalised every 32, exponents summed). Factors of 1
    (var + s2 = 1: the budget's sum of |log eig| is 0 and the product's own rounding is the
    whole term) and factors from 1e-6 to 1e6."""
    K, D, N = 4, 70, 21
    base = random_mixture(K, D, seed=3, kind="diagonal", spread=2.0)
    if spread_of_variances:
        var = 10.0 ** (12 * torch.rand(K, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 6)
        sigma = torch.full((N,), 1e-4)
    else:
        var = torch.full((K, D), 0.75, dtype=torch.float64)
        sigma = torch.full((N,), 0.5)
    mix = GaussianMixture(base.means, log_weights=base.log_weights, diagonal=var)
    x = mix.sample(N, seed=1).float()
    score, log_p = scorefast.gmm_score(x, mix, sigma=sigma, backend="cpp")
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sigma, torch.float32)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")


@pytest.mark.parametrize("kind, D", [("diagonal", 40), ("full", 6)])
def test_noise_level_per_point_nan_and_inf_in_the_op(kind, D):
    """The op itself takes any sigma^2 (the public function checks them): a NaN gives NaN, an
    infinite one log p = -inf (diagonal: the log-determinant's product; full: the factor form's
    logs), and the other points of the block keep their bits."""
    mix = random_mixture(5, D, seed=6, kind=kind, spread=2.0)
    x = mix.sample(20, seed=3).float()
    s2 = torch.full((20,), 0.25)
    p = mix.kernel_params(torch.float32, x.device, None, per_point=True)
    op = scorefast.backend_registry.op_namespace("cpp").gmm_score
    args = (p["means"], p["var"], p["inv_var"], p["factor"], p["log_const"])
    want_s, want_l = op(x, *args, s2)
    s2[1], s2[2] = float("nan"), float("inf")
    score, log_p = op(x, *args, s2)
    assert bool(score[1].isnan().all()) and bool(log_p[1].isnan())
    assert float(log_p[2]) == -math.inf
    keep = [i for i in range(20) if i not in (1, 2)]
    assert torch.equal(score[keep], want_s[keep]) and torch.equal(log_p[keep], want_l[keep])


@pytest.mark.parametrize("K, D", [(130, 6), (3700, 12)])
def test_factor_form_blocks(K, D):
    """Full covariances of float math past the register tiles (D <= 8: K > 128; D >= 9:
    K D^2 > 2^19) take the factor form's blocks of points with their online log-sum-exp. Points
    between far modes weigh components down to the flushed band (exp below -87 is 0); a NaN
    row and a far point included."""
    mix = random_mixture(K, D, seed=K, kind="full", spread=4.0)
    x = mix.sample(11, seed=2).float()  # two blocks of 4 and a partial one
    x[1] = 0.5 * (x[0] + x[2])
    x[4] = 40.0
    x[6, 0] = float("nan")
    score, log_p = scorefast.gmm_score(x, mix, backend="cpp")
    assert bool(torch.isnan(score[6]).all()) and bool(torch.isnan(log_p[6]))
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, None, torch.float32)
    assert_budget(score, ref_s, tol_s, "score")
    assert_budget(log_p, ref_l, tol_l, "log_prob")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_triangular_factors_give_the_dense_bits(dtype, monkeypatch):
    """numba leaves out the exact-zero terms of upper triangular factors (the Cholesky form
    of a folded sigma): the results equal those of the dense products bit for bit."""
    if not scorefast.backend_registry.status("numba").available:
        require_or_skip("numba", f"numba: {scorefast.backend_registry.status('numba').reason}")
    from scorefast.kernels.numba import gmm as numba_gmm

    for D in (3, 37):
        mix = random_mixture(4, D, seed=D, kind="full", spread=3.0)
        x = mix.sample(150, seed=1).to(dtype)
        x[2] = 40.0
        p = mix.kernel_params(dtype, x.device, 0.3**2, per_point=False)
        assert numba_gmm.upper_triangular(p["factor"].numpy())
        tri = scorefast.gmm_score(x, mix, sigma=0.3, backend="numba")
        monkeypatch.setattr(numba_gmm, "upper_triangular", lambda factor: False)
        dense = scorefast.gmm_score(x, mix, sigma=0.3, backend="numba")
        monkeypatch.undo()
        assert torch.equal(tri[0], dense[0]) and torch.equal(tri[1], dense[1])


@pytest.mark.parametrize("kind", KINDS)
def test_numba_results_independent_of_chunks_and_threads(kind, monkeypatch):
    """Each point is one lane of numba's blocks, computed alone: the bits do not depend on the
    work split or the thread count (both layouts of the points, a partial last block)."""
    if not scorefast.backend_registry.status("numba").available:
        require_or_skip("numba", f"numba: {scorefast.backend_registry.status('numba').reason}")
    from scorefast.kernels.numba import gmm as numba_gmm

    previous = torch.get_num_threads()
    for K, D in [(5, 3), (3, 70)]:
        mix = random_mixture(K, D, seed=D, kind=kind, spread=3.0)
        x = mix.sample(333, seed=1)
        x[7, 1] = float("nan")
        sigma = torch.rand(333, generator=torch.Generator().manual_seed(2))
        for xs, sig in ((x.float(), None), (x.float(), sigma), (x, 0.5)):
            try:
                torch.set_num_threads(1)
                whole = scorefast.gmm_score(xs, mix, sigma=sig, backend="numba")
                torch.set_num_threads(max(2, previous))
                monkeypatch.setattr(numba_gmm, "_CHUNK_WORK", 1)  # one block per work item
                split = scorefast.gmm_score(xs, mix, sigma=sig, backend="numba")
                monkeypatch.undo()
            finally:
                torch.set_num_threads(previous)
            assert torch.equal(whole[0].isnan(), split[0].isnan())
            assert torch.equal(whole[0].nan_to_num(), split[0].nan_to_num())
            assert torch.equal(whole[1].nan_to_num(), split[1].nan_to_num())


# -- errors ------------------------------------------------------------------------------


def test_errors_name_the_argument():
    mix = random_mixture(2, 3, seed=0)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="D = 3"):
        scorefast.gmm_score(torch.randn(4, 2), mix)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        scorefast.gmm_score(torch.randn(4, 3, 1), mix)
    with pytest.raises(TypeError, match="x must be float"):
        scorefast.gmm_score(torch.ones(4, 3, dtype=torch.int64), mix)
    with pytest.raises(TypeError, match="GaussianMixture"):
        scorefast.gmm_score(x, "mixture")
    with pytest.raises(ValueError, match="sigma"):
        scorefast.gmm_score(x, mix, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        scorefast.gmm_score(x, mix, sigma=float("nan"))
    with pytest.raises(ValueError, match="sigma"):
        scorefast.gmm_score(x, mix, sigma=torch.ones(5))
    with pytest.raises(ValueError, match="sigma"):
        scorefast.gmm_score(x, mix, sigma=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="backend"):
        scorefast.gmm_score(x, mix, backend="nope")


def test_op_checks_guard_direct_calls():
    mix = random_mixture(2, 3, seed=0)
    p = mix.kernel_params(torch.float32, torch.device("cpu"), None, per_point=False)
    x = torch.randn(4, 3)
    op = torch.ops.scorefast.gmm_score
    with pytest.raises(RuntimeError, match="empty"):
        op(x, p["means"][:0], p["var"][:0], p["inv_var"][:0], None, p["log_const"][:0], None)
    with pytest.raises(RuntimeError, match="means must be Float"):
        op(x, p["means"].double(), p["var"], p["inv_var"], None, p["log_const"], None)
    with pytest.raises(RuntimeError, match="sigma2 must have shape"):
        op(x, p["means"], p["var"], p["inv_var"], None, p["log_const"], torch.ones(3))
    with pytest.raises(RuntimeError, match="factor must have shape"):
        op(x, p["means"], p["var"], p["inv_var"], torch.ones(2, 3, 2), p["log_const"], None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(means=torch.zeros(0, 2)), "empty"),
        (dict(means=torch.zeros(2, 2), weights=torch.tensor([0.0, 0.0])), "not all zero"),
        (dict(means=torch.zeros(2, 2), weights=torch.tensor([1.0, -1.0])), "non-negative"),
        (dict(means=torch.zeros(2, 2), variance=0.0), "positive"),
        (dict(means=torch.zeros(2, 2), variance=torch.ones(3)), r"\(2,\)"),
        (dict(means=torch.zeros(2, 2), diagonal=torch.ones(2, 3)), r"\(2, 2\)"),
        (
            dict(means=torch.zeros(2, 2), covariance=torch.tensor([[1.0, 2.0], [2.0, 1.0]]).expand(2, 2, 2)),
            "positive definite",
        ),
        (dict(means=torch.zeros(2, 2), covariance=torch.tensor([[1.0, 0.5], [0.0, 1.0]]).expand(2, 2, 2)), "symmetric"),
        (dict(means=torch.zeros(2, 2), variance=1.0, diagonal=torch.ones(2, 2)), "at most one"),
        (dict(means=torch.tensor([[float("nan"), 0.0]])), "finite"),
        (dict(means=torch.zeros(2, 2), log_weights=torch.tensor([-math.inf, -math.inf])), "not all -inf"),
    ],
)
def test_mixture_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs)
