"""Targets: exact sampling, densities and scores of mixtures (against autograd and numerical
integration), presets, and energy targets."""

from __future__ import annotations

import math

import pytest
import torch

from scorefast import targets
from scorefast.reference.gmm import gmm_score_ref
from scorefast.targets import EnergyTarget, GaussianMixture


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_samples_match_exact_moments(kind):
    mix = targets.random_mixture(4, 3, seed=2, kind=kind, spread=2.0)
    n = 200_000
    x = mix.sample(n, seed=5)
    # Monte Carlo: sd of a mean is sqrt(var / n); of a covariance entry about sqrt(2) var / sqrt(n).
    var = torch.diagonal(mix.covariance())
    assert torch.all((x.mean(0) - mix.mean()).abs() < 5 * torch.sqrt(var / n))
    cov_tol = 5 * math.sqrt(2.0 / n) * var.max() * 2
    assert torch.all((torch.cov(x.T) - mix.covariance()).abs() < cov_tol)


def test_component_frequencies_follow_weights():
    mix = GaussianMixture(torch.zeros(3, 1), weights=torch.tensor([0.2, 0.0, 0.8]))
    _, k = mix.sample(100_000, seed=0, return_components=True)
    freq = torch.bincount(k, minlength=3).double() / k.numel()
    assert freq[1] == 0 and abs(freq[0] - 0.2) < 5 * math.sqrt(0.16 / 1e5)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("sigma", [None, 0.7])
def test_score_is_the_gradient_of_log_prob(kind, sigma):
    mix = targets.random_mixture(3, 4, seed=3, kind=kind)
    x = mix.sample(10, seed=1).requires_grad_(True)
    _, log_p = gmm_score_ref(x, mix.means, mix.log_weights, mix.kind, mix.cov, sigma)
    (grad,) = torch.autograd.grad(log_p.sum(), x)
    score = mix.score(x.detach(), sigma=sigma)
    torch.testing.assert_close(score, grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("sigma", [None, 0.5])
def test_density_integrates_to_one(sigma):
    mix = targets.anisotropic_2d()
    g = torch.linspace(-9, 9, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack((xx.reshape(-1), yy.reshape(-1)), 1)
    total = torch.exp(mix.log_prob(pts, sigma=sigma)).sum() * (g[1] - g[0]) ** 2
    assert abs(float(total) - 1.0) < 1e-3


def test_noised_mixture_is_the_convolution():
    # Sampling the sigma-noised mixture = adding N(0, sigma^2) noise: moments agree.
    mix = targets.two_mode_2d()
    cov = mix.covariance() + 0.49 * torch.eye(2, dtype=torch.float64)
    x = mix.sample(200_000, seed=3, sigma=0.7)
    assert torch.all((torch.cov(x.T) - cov).abs() < 0.05)
    # and the noised log-density of a 1-component mixture is the wider Gaussian's
    one = GaussianMixture(torch.tensor([[1.0, -2.0]]), variance=0.25)
    y = torch.randn(7, 2, dtype=torch.float64)
    wide = GaussianMixture(torch.tensor([[1.0, -2.0]]), variance=0.25 + 0.49)
    torch.testing.assert_close(one.log_prob(y, sigma=0.7), wide.log_prob(y))


def test_presets():
    assert targets.two_mode_2d().num_components == 2
    ring = targets.ring()
    assert ring.num_components == 8
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 4.0, dtype=torch.float64))
    grid = targets.grid()
    assert grid.num_components == 25 and grid.dim == 2
    rm = targets.random_mixture(6, 10, seed=1, kind="full")
    assert rm.kind == "full" and rm.dim == 10
    assert torch.equal(targets.random_mixture(6, 10, seed=1).means, targets.random_mixture(6, 10, seed=1).means)
    an = targets.anisotropic_2d()
    assert an.kind == "full"
    assert set(targets.PRESETS) >= {"two_mode", "ring8", "grid25", "anisotropic"}


def test_energy_target_score_by_autograd():
    well = targets.double_well(barrier=2.0, dim=3)
    x = torch.randn(9, 3, dtype=torch.float64)
    expected = torch.cat((-2.0 * 4 * x[:, :1] * (x[:, :1] ** 2 - 1), -x[:, 1:]), dim=1)
    torch.testing.assert_close(well.score(x), expected)
    torch.testing.assert_close(well.log_prob(x), -(2.0 * (x[:, 0] ** 2 - 1) ** 2 + 0.5 * (x[:, 1:] ** 2).sum(1)))
    # Energy of a Gaussian: the score is the Gaussian's
    gauss = EnergyTarget(lambda y: 0.5 * (y**2).sum(1))
    torch.testing.assert_close(gauss.score(x), -x)
    with pytest.raises(ValueError, match="coordinates"):
        well.score(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="callable"):
        EnergyTarget(3)
