"""Samplers for any score function: statistical correctness against exact samples.

MALA matches exact samples (energy distance below a threshold derived from exact-vs-exact
runs), ULA's bias shrinks with the step as its closed form says, annealed Langevin and
predictor-corrector recover every mode where plain ULA from the same start does not.
"""

from __future__ import annotations

import math

import pytest
import torch

import scorefast
from scorefast import samplers, targets
from scorefast.nn import geometric_sigmas
from scorefast.targets import GaussianMixture


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E|a - b| - E|a - a'| - E|b - b'| (V-statistic), float64."""
    a, b = a.double(), b.double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _threshold(mix, n, seeds=range(100, 106)):
    """Largest exact-vs-exact energy distance over a few seeds, doubled."""
    eds = [energy_distance(mix.sample(n, seed=s), mix.sample(n, seed=s + 50)) for s in seeds]
    return 2 * max(eds)


def _mala_fns(mix, path):
    """The mixture's methods (the fused chain runs) or lambdas (the stepwise sampler)."""
    if path == "fused":
        return mix.score, mix.log_prob
    return (lambda y: mix.score(y)), (lambda y: mix.log_prob(y))


@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_mala_two_mode_matches_exact_samples(path):
    mix = targets.two_mode_2d()
    n = 2000
    x = 3.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, diag = samplers.mala(*_mala_fns(mix, path), x, steps=400, step_size=0.4, seed=1)
    assert 0.5 < float(diag["acceptance_rate"].mean()) < 1.0
    assert diag["nan_particles"] == 0
    assert (diag["score_norm"] is None) if path == "fused" else len(diag["score_norm"]) == 400
    assert energy_distance(x, mix.sample(n, seed=7)) < _threshold(mix, n)


@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_mala_10d_mixture_keeps_exact_samples_exact(path):
    # From exact samples MALA must stay exact (it is reversible w.r.t. the target); a wrong
    # acceptance ratio or proposal density would drift.
    mix = targets.random_mixture(4, 10, seed=3, kind="diagonal", spread=1.5)
    n = 1500
    x = mix.sample(n, seed=11)
    x, diag = samplers.mala(*_mala_fns(mix, path), x, steps=150, step_size=0.05, seed=2)
    assert float(diag["acceptance_rate"].mean()) > 0.5
    assert energy_distance(x, mix.sample(n, seed=12)) < _threshold(mix, n)


def test_mala_without_correction_would_be_detected():
    # The same test with the acceptance step removed (ULA at a large step) fails: the
    # threshold has power.
    mix = targets.random_mixture(4, 10, seed=3, kind="diagonal", spread=1.5)
    n = 1500
    x = mix.sample(n, seed=11)
    samplers.langevin(mix.score, x, steps=150, step_size=0.3, seed=2)
    assert energy_distance(x, mix.sample(n, seed=12)) > _threshold(mix, n)


def test_mala_rejects_nan_ratios():
    mix = targets.two_mode_2d()
    x = torch.randn(64, 2, dtype=torch.float64)
    start = x.clone()
    frozen = torch.arange(64) % 2 == 0

    def log_prob(y):
        lp = mix.log_prob(y)
        return torch.where(frozen, torch.full_like(lp, float("nan")), lp)

    x, diag = samplers.mala(mix.score, log_prob, x, steps=20, step_size=0.3, seed=5)
    assert torch.equal(x[frozen], start[frozen])
    assert torch.all(diag["acceptance_rate"][frozen] == 0)
    assert float(diag["acceptance_rate"][~frozen].mean()) > 0.5


def test_ula_bias_shrinks_with_the_step_as_the_closed_form_says():
    # Target N(0, 1): ULA x <- (1 - a) x + sqrt(2a) z is stationary at variance 1 / (1 - a/2).
    mix = GaussianMixture(torch.zeros(1, 1, dtype=torch.float64), variance=1.0)
    n = 100_000
    biases = []
    for a in (0.4, 0.1):
        x = mix.sample(n, seed=1)
        samplers.langevin(mix.score, x, steps=200, step_size=a, seed=3)
        var = float(x.var())
        expected = 1.0 / (1.0 - a / 2)
        assert abs(var - expected) < 5 * expected * math.sqrt(2.0 / n)
        biases.append(var - 1.0)
    assert biases[1] < biases[0] / 3


def _mode_fractions(mix, x):
    k = mix.responsibilities(x).argmax(1)
    return torch.bincount(k, minlength=mix.num_components).double() / x.shape[0]


def _stuck_start(mix, n, seed=0):
    # every particle starts at mode 0: plain ULA cannot leave it
    return mix.means[0] + 0.1 * torch.randn(
        n, mix.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def test_annealed_recovers_every_mode_where_ula_does_not():
    for mix, tol in ((targets.ring(), 0.05), (targets.grid(), 0.025)):
        n = 4000
        sigmas = geometric_sigmas(12.0, 0.05, 15)
        x = _stuck_start(mix, n)
        samplers.annealed_langevin(
            lambda y, s: mix.score(y, sigma=s), x, sigmas, steps_per_level=100, epsilon=1e-4, seed=4
        )
        f = _mode_fractions(mix, x)
        # binomial sd of a fraction is <= sqrt(w (1 - w) / n) ~ 0.005; the tolerances also
        # allow the sampler's own (finite-step, finite-level) bias
        assert torch.all((f - mix.weights).abs() < tol), f
        y = _stuck_start(mix, n)
        samplers.langevin(mix.score, y, steps=600, step_size=0.01, seed=4)
        assert float(_mode_fractions(mix, y)[0]) > 0.95


def test_predictor_corrector_recovers_every_mode_with_both_snr_rules():
    mix = targets.ring()
    sigmas = geometric_sigmas(12.0, 0.05, 30)
    for batch_mean in (False, True):
        x = _stuck_start(mix, 3000)
        x, diag = samplers.predictor_corrector(
            lambda y, s: mix.score(y, sigma=s), x, sigmas, corrector_steps=2, batch_mean_rule=batch_mean, seed=6
        )
        assert diag["nan_particles"] == 0
        assert torch.all((_mode_fractions(mix, x) - mix.weights).abs() < 0.05)


def test_annealed_on_a_mixture_runs_the_fused_chain_with_the_same_result():
    mix = targets.ring()
    x = mix.sample(64, seed=1).double() * 2.0
    kw = dict(sigmas=[2.0, 0.7, 0.2], steps_per_level=7, epsilon=2e-3, seed=3)
    fused = samplers.annealed_langevin(mix.score, x.clone(), **kw)
    chain = scorefast.gmm_chain(x, mix, method="annealed", final_denoise=True, **kw).x
    stepwise = samplers.annealed_langevin(lambda y, s: mix.score(y, sigma=s), x.clone(), **kw)
    assert torch.equal(fused, chain)
    torch.testing.assert_close(fused, stepwise, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form", ["mixture", "methods"])
def test_mala_on_a_mixture_runs_the_fused_chain_with_the_same_result(form):
    mix = targets.random_mixture(3, 3, seed=2, kind="full", spread=2.0)
    x = mix.sample(200, seed=1).double()
    kw = dict(steps=15, step_size=0.2, seed=4, particle_offset=5)
    args = (mix, None) if form == "mixture" else (mix.score, mix.log_prob)
    fused, diag = samplers.mala(*args, x.clone(), **kw)
    chain = scorefast.gmm_chain(x, mix, method="mala", **kw)
    stepwise, diag_stepwise = samplers.mala(lambda y: mix.score(y), lambda y: mix.log_prob(y), x.clone(), **kw)
    assert torch.equal(fused, chain.x)
    assert torch.equal(diag["acceptance_rate"], chain.accepted.double() / 15)
    # float64: the same accept/reject decisions, states equal to rounding
    assert torch.equal(diag["acceptance_rate"], diag_stepwise["acceptance_rate"])
    assert 0.2 < float(diag["acceptance_rate"].mean()) < 1.0
    torch.testing.assert_close(fused, stepwise, rtol=1e-10, atol=1e-10)
    assert diag["score_norm"] is None and len(diag_stepwise["score_norm"]) == 15
    assert diag["nan_particles"] == 0


def test_mala_needs_a_log_density():
    with pytest.raises(TypeError, match="log_prob_fn is required"):
        samplers.mala(lambda y: -y, None, torch.zeros(4, 2), steps=2, step_size=0.1)


def test_langevin_on_a_mixture_runs_the_fused_chain_with_the_same_result():
    mix = targets.ring()
    x = mix.sample(64, seed=1).float()
    fused = samplers.langevin(mix, x.clone(), steps=20, step_size=0.01, seed=3)
    also_fused = samplers.langevin(mix.score, x.clone(), steps=20, step_size=0.01, seed=3)
    stepwise = samplers.langevin(lambda y: mix.score(y), x.clone(), steps=20, step_size=0.01, seed=3)
    assert torch.equal(fused, also_fused)
    torch.testing.assert_close(fused, stepwise, rtol=1e-5, atol=1e-5)
