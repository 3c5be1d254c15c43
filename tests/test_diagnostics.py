"""scorefast.diagnostics against ArviZ (rank-normalised split R-hat, bulk and tail ESS of Vehtari et al. 2021)
on fixed chains, ArviZ's edge-case conventions, shapes and errors, and the values on iid draws."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from scorefast.diagnostics import ess_bulk, ess_tail, split_rhat

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
    import arviz as az

RTOL = 1e-6


def _ar1(seed: int, chains: int, n: int, phi: float) -> np.ndarray:
    """Stationary AR(1) chains with unit marginal variance, (chains, n)."""
    rng = np.random.default_rng(seed)
    x = np.empty((chains, n))
    x[:, 0] = rng.standard_normal(chains)
    noise = rng.standard_normal((chains, n)) * math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


CASES = {
    "ar1_0.9_4x1000": lambda: _ar1(1, 4, 1000, 0.9),
    "ar1_0.5_2x1001": lambda: _ar1(2, 2, 1001, 0.5),
    "ar1_0_8x200": lambda: _ar1(3, 8, 200, 0.0),
    "ar1_-0.3_8x201": lambda: _ar1(4, 8, 201, -0.3),
    "ar1_-0.9_4x500": lambda: _ar1(5, 4, 500, -0.9),  # antithetic: the tau floor 1 / log10(ess) binds
    "ar1_0.99_2x300": lambda: _ar1(6, 2, 300, 0.99),
    "means_4x400": lambda: _ar1(7, 4, 400, 0.5) + np.array([[0.0], [0.5], [1.0], [1.5]]),
    "means_2x99": lambda: _ar1(8, 2, 99, 0.2) + np.array([[0.0], [3.0]]),
    "ties_4x400": lambda: np.round(_ar1(9, 4, 400, 0.7), 1),
    "ties_2x201": lambda: np.round(_ar1(10, 2, 201, 0.3)),
    "binary_8x50": lambda: np.random.default_rng(11).integers(0, 2, (8, 50)).astype(float),
    "cauchy_4x1000": lambda: np.random.default_rng(12).standard_cauchy((4, 1000)),
    "student_t1.5_ar_2x600": lambda: np.cumsum(np.random.default_rng(13).standard_t(1.5, (2, 600)), axis=1) * 0.05,
    "short_2x4": lambda: _ar1(14, 2, 4, 0.5),
    "short_2x5": lambda: _ar1(15, 2, 5, 0.5),
    "short_8x7": lambda: _ar1(16, 8, 7, -0.5),
}


def _assert_matches(got: torch.Tensor, want, what: str):
    got, want = float(got), float(want)
    if math.isnan(want) or math.isinf(want):
        assert got == want or (math.isnan(got) and math.isnan(want)), (what, got, want)
    else:
        assert abs(got - want) <= RTOL * abs(want), (what, got, want, abs(got - want) / abs(want))


@pytest.fixture
def arviz_numpy_variance():
    """ArviZ with numpy's two-pass variance instead of numba's one-pass sum of squares, whose rounding
    decides R-hat when every split chain is constant (within-chain variance 0)."""
    was = az.Numba.numba_flag
    az.Numba.disable_numba()
    yield
    if was:
        az.Numba.enable_numba()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # ArviZ's 0 / 0 tail R-hat of binary draws
@pytest.mark.parametrize("case", CASES)
def test_matches_arviz(case):
    x = CASES[case]()
    t = torch.from_numpy(x)
    _assert_matches(split_rhat(t), az.rhat(x, method="rank"), "rhat")
    _assert_matches(ess_bulk(t), az.ess(x, method="bulk"), "bulk")
    _assert_matches(ess_tail(t), az.ess(x, method="tail"), "tail")
    _assert_matches(ess_tail(t, prob=0.1), az.ess(x, method="tail", prob=0.1), "tail 0.1")
    _assert_matches(ess_tail(t, prob=(0.25, 0.9)), az.ess(x, method="tail", prob=(0.25, 0.9)), "tail (0.25, 0.9)")


def test_chains_with_different_means_have_a_large_rhat():
    # Well above the 1.01 that Vehtari et al. recommend as a bound (ranks cap R-hat: here 1.2 and 1.8).
    for case in ("means_4x400", "means_2x99"):
        assert float(split_rhat(torch.from_numpy(CASES[case]()))) > 1.1


@pytest.mark.parametrize("n", [200, 201])
def test_one_chain_ess_matches_arviz(n):
    x = _ar1(17, 1, n, 0.6)
    _assert_matches(ess_bulk(torch.from_numpy(x)), az.ess(x, method="bulk"), "bulk")
    _assert_matches(ess_tail(torch.from_numpy(x)), az.ess(x, method="tail"), "tail")


@pytest.mark.parametrize("chains,n,prob", [(1, 41, (0.05, 0.95)), (3, 27, (0.3, 0.7)), (1, 61, 0.05)])
def test_tail_quantile_at_a_draw_matches_arviz(chains, n, prob):
    # (chains * n - 1) * p is an integer, so the quantile is a draw up to rounding: whether that draw counts
    # as below it depends on computing R's type 7 quantile with scipy's mquantiles arithmetic.
    x = _ar1(18, chains, n, 0.3)
    _assert_matches(ess_tail(torch.from_numpy(x), prob=prob), az.ess(x, method="tail", prob=prob), "tail")


def test_event_shape_matches_arviz_per_coordinate():
    chains, n = 4, 301
    coords = [_ar1(20 + i, chains, n, phi) for i, phi in enumerate([0.9, 0.0, -0.5, 0.3, 0.95, 0.6])]
    coords[4] = np.round(coords[4], 1)
    coords[5] = np.full((chains, n), -1.25)  # constant
    x = np.stack(coords, axis=-1).reshape(chains, n, 2, 3)
    x[1, 7, 0, 1] = np.nan
    t = torch.from_numpy(x)
    got = {"rhat": split_rhat(t), "bulk": ess_bulk(t), "tail": ess_tail(t)}
    for name, value in got.items():
        assert value.shape == (2, 3) and value.dtype == torch.float64, name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ArviZ divides 0 by 0 for the constant coordinate
        for i in range(2):
            for j in range(3):
                xij = np.ascontiguousarray(x[:, :, i, j])
                _assert_matches(got["rhat"][i, j], az.rhat(xij, method="rank"), f"rhat {i},{j}")
                _assert_matches(got["bulk"][i, j], az.ess(xij, method="bulk"), f"bulk {i},{j}")
                _assert_matches(got["tail"][i, j], az.ess(xij, method="tail"), f"tail {i},{j}")
    assert math.isnan(got["rhat"][0, 1]) and math.isnan(got["bulk"][0, 1]) and math.isnan(got["tail"][0, 1])


@pytest.mark.parametrize("chains,n", [(2, 4), (4, 11), (8, 100)])
def test_constant_draws_follow_arviz(chains, n):
    x = np.full((chains, n), 2.5)
    t = torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want_rhat = az.rhat(x, method="rank")
    assert math.isnan(want_rhat) and math.isnan(float(split_rhat(t)))
    split_size = chains * 2 * (n // 2)  # the ESS of constant draws is the number of split draws
    assert az.ess(x, method="bulk") == split_size == float(ess_bulk(t))
    assert az.ess(x, method="tail") == split_size == float(ess_tail(t))


def test_nan_draws_follow_arviz():
    x = _ar1(30, 4, 50, 0.5)
    x[2, 13] = np.nan
    t = torch.from_numpy(x)
    assert math.isnan(az.rhat(x, method="rank")) and math.isnan(float(split_rhat(t)))
    assert math.isnan(az.ess(x, method="bulk")) and math.isnan(float(ess_bulk(t)))
    assert math.isnan(az.ess(x, method="tail")) and math.isnan(float(ess_tail(t)))


def test_infinite_draws_match_arviz():
    x = _ar1(31, 4, 60, 0.4)
    x[1, 5], x[3, 40] = np.inf, -np.inf
    t = torch.from_numpy(x)
    _assert_matches(split_rhat(t), az.rhat(x, method="rank"), "rhat")
    _assert_matches(ess_bulk(t), az.ess(x, method="bulk"), "bulk")
    _assert_matches(ess_tail(t), az.ess(x, method="tail"), "tail")


@pytest.mark.parametrize(
    "values",
    [[0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0.3, 0.7, 0.1]],  # with [0, 1] the folded draws are constant too
)
def test_constant_chains_with_different_values_match_arviz(values, arviz_numpy_variance):
    x = np.repeat(np.array(values)[:, None], 13, axis=1)
    t = torch.from_numpy(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = az.rhat(x, method="rank")
    assert want == float(split_rhat(t)) == math.inf
    _assert_matches(ess_bulk(t), az.ess(x, method="bulk"), "bulk")
    _assert_matches(ess_tail(t), az.ess(x, method="tail"), "tail")


def test_iid_normal_draws():
    chains, n = 8, 4000
    x = torch.from_numpy(np.random.default_rng(40).standard_normal((chains, n)))
    size, split_n, split_chains = chains * n, n // 2, 2 * chains
    # Both R-hats are sqrt(1 + (F - 1) / split_n) with F = split_n * var(chain means) / mean(chain variances),
    # F-distributed with (split_chains - 1, split_chains * (split_n - 1)) degrees of freedom for iid draws.
    dof = (split_chains - 1, split_chains * (split_n - 1))
    low, high = (math.sqrt(1 + (stats.f.ppf(q, *dof) - 1) / split_n) for q in (1e-6, 1 - 1e-6))
    assert low <= float(split_rhat(x)) <= high
    # ESS = size / tau, tau = 1 + 2 (sum of the kept autocorrelations). For iid draws each has standard deviation
    # 1 / sqrt(size); Geyer's sequence stops at the first non-positive pair sum (probability ~1/2 each), so it
    # keeps more than 20 pairs (40 lags) with probability ~2^-20, and 40 such terms sum to within 5 standard
    # deviations, 5 sqrt(40 / size): |tau - 1| <= 2 * 5 * sqrt(40 / size).
    bound = 10 * math.sqrt(40 / size)
    for ess in (ess_bulk(x), ess_tail(x)):
        assert abs(size / float(ess) - 1) <= bound


def test_shapes_dtypes_and_devices_of_results():
    x = torch.from_numpy(_ar1(50, 4, 64, 0.5)).float()
    for fn in (split_rhat, ess_bulk, ess_tail):
        out = fn(x)
        assert out.shape == () and out.dtype == torch.float64 and out.device == x.device
        # float32 draws are computed in float64
        assert float(out) == float(fn(x.double()))
    ints = torch.from_numpy(np.round(_ar1(51, 2, 30, 0.2) * 3)).long()
    assert float(ess_bulk(ints)) == float(ess_bulk(ints.double()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.from_numpy(np.stack([_ar1(60, 4, 501, phi) for phi in (0.9, -0.4, 0.0)], axis=-1))
    x[:, :, 2] = torch.round(x[:, :, 2] * 4)
    for fn in (split_rhat, ess_bulk, ess_tail):
        cpu, cuda = fn(x), fn(x.cuda())
        assert cuda.device.type == "cuda"
        torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-9, atol=0)


def test_errors_name_the_argument():
    good = torch.zeros(4, 10)
    for fn in (split_rhat, ess_bulk, ess_tail):
        with pytest.raises(TypeError, match="draws must be a torch.Tensor"):
            fn(np.zeros((4, 10)))
        with pytest.raises(ValueError, match=r"draws must have shape \(chains, draws, \*event\)"):
            fn(torch.zeros(10))
        with pytest.raises(ValueError, match="draws must have at least 4 draws"):
            fn(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="draws must have at least 2 chains"):
        split_rhat(torch.zeros(1, 10))
    assert float(ess_bulk(torch.zeros(1, 10))) == 10.0  # ESS needs one chain only
    for prob in (1.5, (0.1, 0.5, 0.9), (-0.1, 0.9)):
        with pytest.raises(ValueError, match="prob must be"):
            ess_tail(good, prob=prob)
