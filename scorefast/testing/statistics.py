"""Does a sampler reach its target? Sample statistics against a Gaussian mixture's exact values,
with thresholds from the sample size, and an energy distance to exact samples with a threshold
calibrated on exact-versus-exact draws.

The particles must be independent draws (independent chains, e.g. started from independent
exact samples, with the noise contract's independent noise per particle). Each statistic is
compared at a two-sided false-alarm level ``alpha`` (default 1e-6, z = 4.89) through its
central-limit standard error:

* mode weights: the mean responsibility r_k(x) is unbiased for w_k (the integral of r_k p is
  w_k) and, r_k being in [0, 1], its variance is at most w_k (1 - w_k) / n;
* mean: sqrt(Sigma_ii / n);
* covariance entries: sqrt((E[y_i^2 y_j^2] - Sigma_ij^2) / n), y = x - m, with the mixture's
  exact fourth moments (``fourth_moments``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

DEFAULT_ALPHA = 1e-6
# Energy-distance threshold: the mean plus this many standard deviations of exact-vs-exact draws.
# The statistic's null distribution is a weighted sum of chi-square(1) terms; its heaviest-tailed
# case, one term, exceeds its mean by 10 standard deviations with probability ~1e-4.
ENERGY_SDS = 10.0
ENERGY_DRAWS = 40


def z_value(alpha: float = DEFAULT_ALPHA) -> float:
    """The two-sided standard normal quantile for false-alarm level ``alpha``."""
    return NormalDist().inv_cdf(1 - alpha / 2)


@dataclass(frozen=True)
class Statistic:
    """A sample statistic against its exact value: passes when |value - exact| <= threshold."""

    name: str
    value: float
    exact: float
    threshold: float

    @property
    def deviation(self) -> float:
        return abs(self.value - self.exact)

    @property
    def ok(self) -> bool:
        return self.deviation <= self.threshold  # NaN fails

    def __str__(self) -> str:
        return f"{self.name} {self.value:.4f} (exact {self.exact:.4f}, allowed +-{self.threshold:.4f})"


def fourth_moments(mixture) -> torch.Tensor:
    """E[(x_i - m_i)^2 (x_j - m_j)^2] (D, D), float64, for x ~ the mixture (m its mean).

    Per component with mean offset v = mu_k - m and covariance C (Isserlis):
    (C_ii + v_i^2)(C_jj + v_j^2) + 2 C_ij^2 + 4 v_i v_j C_ij.
    """
    v = mixture.means - mixture.mean()  # (K, D)
    C = mixture.covariances()  # (K, D, D)
    d = torch.diagonal(C, dim1=1, dim2=2) + v * v  # (K, D)
    per = d[:, :, None] * d[:, None, :] + 2 * C * C + 4 * v[:, :, None] * v[:, None, :] * C
    return (mixture.weights[:, None, None] * per).sum(0)


def moment_statistics(x: torch.Tensor, mixture, alpha: float = DEFAULT_ALPHA) -> list[Statistic]:
    """Mode weights (K > 1), mean and covariance entries of samples x (n, D) against ``mixture``."""
    xd = x.detach().double().cpu()
    n, D = xd.shape
    z = z_value(alpha)
    out = []
    mix = mixture
    if mix.num_components > 1:
        r = mix.responsibilities(xd.to(mix.means.device)).cpu().mean(0)
        for k, (got, w) in enumerate(zip(r.tolist(), mix.weights.tolist())):
            out.append(Statistic(f"weight[{k}]", got, w, z * math.sqrt(w * (1 - w) / n)))
    mean, cov = mix.mean().cpu(), mix.covariance().cpu()
    for i, (got, m) in enumerate(zip(xd.mean(0).tolist(), mean.tolist())):
        out.append(Statistic(f"mean[{i}]", got, m, z * math.sqrt(float(cov[i, i]) / n)))
    sample_cov = torch.cov(xd.T).reshape(D, D)
    m4 = fourth_moments(mix).cpu()
    for i in range(D):
        for j in range(i, D):
            se = math.sqrt(max(float(m4[i, j] - cov[i, j] ** 2), 0.0) / n)
            out.append(Statistic(f"cov[{i},{j}]", float(sample_cov[i, j]), float(cov[i, j]), z * se))
    return out


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| between samples x (n, D) and
    y (m, D), unbiased (the within-sample means leave out the diagonal)."""
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    n, m = x.shape[0], y.shape[0]
    within = lambda a, k: torch.cdist(a, a).sum() / (k * (k - 1))  # noqa: E731
    return float(2 * torch.cdist(x, y).mean() - within(x, n) - within(y, m))


_calibrations: dict = {}


def _calibration(key, sample, n: int, draws: int) -> tuple[float, float]:
    """(mean, standard deviation) of the energy distance between pairs of exact draws."""
    if key is None or (key, n, draws) not in _calibrations:
        values = torch.tensor([energy_distance(sample(n, 2 * i + 1), sample(n, 2 * i + 2)) for i in range(draws)])
        if key is None:
            return float(values.mean()), float(values.std())
        _calibrations[key, n, draws] = float(values.mean()), float(values.std())
    return _calibrations[key, n, draws]


def energy_threshold(sample, n: int, *, key=None, draws: int = ENERGY_DRAWS, sds: float = ENERGY_SDS) -> float:
    """The energy distance between two exact samples of size n stays below this: the mean plus
    ``sds`` standard deviations over ``draws`` exact-vs-exact pairs. ``sample(n, seed)`` draws
    exact samples (n, D); ``key`` (hashable) caches the calibration per target."""
    mean, sd = _calibration(key, sample, n, draws)
    return mean + sds * sd


def energy_statistic(x: torch.Tensor, sample, n: int, *, key=None, seed: int = 0) -> Statistic:
    """The energy distance of the first n samples of x to n fresh exact samples (seed ``seed``,
    apart from the calibration's), against ``energy_threshold``."""
    value = energy_distance(x[:n], sample(n, 10_000 + seed))
    return Statistic("energy distance", value, 0.0, energy_threshold(sample, n, key=key))
