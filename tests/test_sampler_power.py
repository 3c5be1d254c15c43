"""Sampler statistics with power: each sampler, on a Gaussian target where its law is known exactly,
against thresholds derived from the sample size.

On N(mu, diag(v)) every update of ULA, annealed Langevin, the predictor-corrector and SGLD is
linear-Gaussian per coordinate: x' = mu + c (x - mu) + b z with c = 1 - a / tau^2 (tau^2 = v, or
v + sigma^2 at a noise level), so the mean and variance after any schedule follow
m' = mu + c (m - mu), s' = c^2 s + b^2 exactly, and the particles are independent normals. MALA
keeps its target exactly. Each test compares the sample mean and variance of N particles with
that law: a mean is off by more than Z standard errors sqrt(s / N), or a variance by more than Z
standard errors s sqrt(2 / (N - 1)) (chi-square), with probability below 1e-6 each. Each test
also shows its power: the same sample must reject the law of a 2x step and of a wrong noise
scale (and MALA's, ULA's law: acceptance dropped), computed the same way.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import scorefast
from scorefast import backend_registry, cli, samplers
from scorefast.targets import GaussianMixture

N = 20_000
Z = 5.0  # standard errors: two-sided normal tail 5.7e-7
MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR = torch.tensor([1.0, 0.25], dtype=torch.float64)
FUSED = ["reference", "cpp", "numba"]  # the fused chain at N = 20000: backends that run at native speed


def _score(x, sigma=0.0):
    return -(x - MU) / (VAR + sigma**2)


def _log_prob(x):
    return -0.5 * (((x - MU) ** 2) / VAR).sum(1)


def _mixture() -> GaussianMixture:
    return GaussianMixture(MU[None], torch.ones(1, dtype=torch.float64), diagonal=VAR[None])


def _fused_backend(name: str) -> str:
    if name != "reference" and not backend_registry.status(name).available:
        pytest.fail(f"{name} does not run here: {backend_registry.status(name).reason}")
    return name


class Law:
    """Per-coordinate mean and variance of independent normal particles, advanced exactly."""

    def __init__(self, mean, var):
        self.m = torch.as_tensor(mean, dtype=torch.float64).expand(2).clone()
        self.s = torch.as_tensor(var, dtype=torch.float64).expand(2).clone()

    def step(self, a, noise_var, sigma=0.0, times=1):
        """``times`` updates x + a s(x; sigma) + b z with b^2 = noise_var."""
        c = 1 - a / (VAR + sigma**2)
        for _ in range(times):
            self.m = MU + c * (self.m - MU)
            self.s = c * c * self.s + noise_var
        return self

    def z_scores(self, x: torch.Tensor) -> torch.Tensor:
        """|sample mean - m| and |sample variance - s| in standard errors, per coordinate."""
        x = x.double()
        n = x.shape[0]
        z_mean = (x.mean(0) - self.m).abs() / (self.s / n).sqrt()
        z_var = (x.var(0) / self.s - 1).abs() / math.sqrt(2 / (n - 1))
        return torch.cat((z_mean, z_var))


def _assert_law(x: torch.Tensor, law: Law, alternatives: dict[str, Law]):
    assert bool(torch.isfinite(x).all())
    z = law.z_scores(x)
    assert float(z.max()) < Z, f"the sample is {float(z.max()):.1f} standard errors from its exact law: {z.tolist()}"
    for name, alt in alternatives.items():  # the power of this very sample
        z_alt = alt.z_scores(x)
        assert float(z_alt.max()) > 2 * Z, f"the test cannot tell the law of {name} ({float(z_alt.max()):.1f})"


def _start(scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(N, 2, generator=g, dtype=torch.float64)


def _exact_start(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MU + VAR.sqrt() * torch.randn(N, 2, generator=g, dtype=torch.float64)


# --- ULA -----------------------------------------------------------------------------------------

A, T = 0.1, 30


def _ula_laws(a=A, steps=T, start_var=4.0):
    return (
        Law(0.0, start_var).step(a, 2 * a, times=steps),
        {
            "a 2x step": Law(0.0, start_var).step(2 * a, 4 * a, times=steps),
            "noise sqrt(a)": Law(0.0, start_var).step(a, a, times=steps),
        },
    )


def test_ula_stepwise_matches_its_exact_law():
    x = samplers.langevin(_score, _start(2.0, 1), steps=T, step_size=A, seed=11)
    _assert_law(x, *_ula_laws())


@pytest.mark.parametrize("backend", FUSED)
def test_ula_fused_chain_matches_its_exact_law(backend):
    res = scorefast.gmm_chain(
        _start(2.0, 1), _mixture(), steps=T, step_size=A, seed=11, backend=_fused_backend(backend)
    )
    _assert_law(res.x, *_ula_laws())


def test_ula_sampler_on_a_mixture_runs_the_fused_chain_with_the_same_law():
    x = samplers.langevin(_mixture().score, _start(2.0, 1), steps=T, step_size=A, seed=11)
    _assert_law(x, *_ula_laws())


# --- MALA ----------------------------------------------------------------------------------------

A_MALA, T_MALA = 0.1, 20


def _mala_alternatives():
    return {
        "ULA (every proposal accepted)": Law(MU, VAR).step(A_MALA, 2 * A_MALA, times=T_MALA),
        "a 2x step without correction": Law(MU, VAR).step(2 * A_MALA, 4 * A_MALA, times=T_MALA),
    }


def test_mala_stepwise_keeps_its_target():
    x, diag = samplers.mala(lambda y: _score(y), _log_prob, _exact_start(2), steps=T_MALA, step_size=A_MALA, seed=12)
    _assert_law(x, Law(MU, VAR), _mala_alternatives())
    assert 0.8 < float(diag["acceptance_rate"].mean()) < 1.0  # some proposals are rejected


@pytest.mark.parametrize("backend", FUSED)
def test_mala_fused_chain_keeps_its_target(backend):
    res = scorefast.gmm_chain(
        _exact_start(2),
        _mixture(),
        method="mala",
        steps=T_MALA,
        step_size=A_MALA,
        seed=12,
        backend=_fused_backend(backend),
    )
    _assert_law(res.x, Law(MU, VAR), _mala_alternatives())
    assert 0.8 * T_MALA < float(res.accepted.double().mean()) < T_MALA


# --- annealed Langevin -----------------------------------------------------------------------------

SIGMAS = [3.0, 1.5, 0.7, 0.3]
PER_LEVEL, EPSILON = 6, 0.04


def _annealed_law(step_factor=1.0, sigma2_factor=1.0, noise_factor=1.0) -> Law:
    law = Law(0.0, SIGMAS[0] ** 2)
    for s in SIGMAS:
        a = step_factor * EPSILON / 2 * s**2 / SIGMAS[-1] ** 2
        law.step(a, noise_factor * 2 * a, sigma=math.sqrt(sigma2_factor) * s, times=PER_LEVEL)
    # final denoising: x + sigma_L^2 s(x; sigma_L), noise-free
    return law.step(SIGMAS[-1] ** 2, 0.0, sigma=SIGMAS[-1])


def _annealed_alternatives():
    return {
        "a 2x step": _annealed_law(step_factor=2.0),
        "sigma^2 / 2 in the score": _annealed_law(sigma2_factor=0.5),
        "noise sqrt(a)": _annealed_law(noise_factor=0.5),
    }


def test_annealed_stepwise_matches_its_exact_law():
    x = samplers.annealed_langevin(
        _score, _start(SIGMAS[0], 3), SIGMAS, steps_per_level=PER_LEVEL, epsilon=EPSILON, seed=13
    )
    _assert_law(x, _annealed_law(), _annealed_alternatives())


@pytest.mark.parametrize("backend", FUSED)
def test_annealed_fused_chain_matches_its_exact_law(backend):
    res = scorefast.gmm_chain(
        _start(SIGMAS[0], 3),
        _mixture(),
        method="annealed",
        sigmas=SIGMAS,
        steps_per_level=PER_LEVEL,
        epsilon=EPSILON,
        final_denoise=True,
        seed=13,
        backend=_fused_backend(backend),
    )
    _assert_law(res.x, _annealed_law(), _annealed_alternatives())


# --- predictor-corrector -----------------------------------------------------------------------------

PC_SIGMAS = [3.0, 1.2, 0.5, 0.2]
SNR, CORRECTOR_STEPS = 0.4, 2


def _pc_law(norms, predictor_factor=1.0, corrector_factor=1.0) -> Law:
    """The law given the batch-mean score norms the corrector used (its steps depend on them)."""
    law, it = Law(0.0, PC_SIGMAS[0] ** 2), iter(norms)
    levels = list(zip(PC_SIGMAS, PC_SIGMAS[1:] + [0.0]))
    for s_i, s_next in levels:
        for _ in range(CORRECTOR_STEPS):
            eps = min(2 * (SNR * math.sqrt(2) / next(it)) ** 2, s_i**2)
            law.step(corrector_factor * eps, corrector_factor * 2 * eps, sigma=s_i)
        if s_next > 0:  # the last level ends in the denoising step instead
            delta = s_i**2 - s_next**2
            law.step(predictor_factor * delta, predictor_factor * delta, sigma=s_i)
    return law.step(PC_SIGMAS[-1] ** 2, 0.0, sigma=PC_SIGMAS[-1])


def test_predictor_corrector_matches_its_exact_law():
    x, diag = samplers.predictor_corrector(
        _score,
        _start(PC_SIGMAS[0], 4),
        PC_SIGMAS,
        corrector_steps=CORRECTOR_STEPS,
        snr=SNR,
        batch_mean_rule=True,
        seed=14,
    )
    norms = diag["score_norm"]
    assert len(norms) == CORRECTOR_STEPS * len(PC_SIGMAS)
    alternatives = {
        "a 2x predictor step": _pc_law(norms, predictor_factor=2.0),
        "a 2x corrector step": _pc_law(norms, corrector_factor=2.0),
    }
    _assert_law(x, _pc_law(norms), alternatives)


# --- SGLD with a replay buffer -------------------------------------------------------------------------

SGLD_A, SGLD_B, SGLD_STEPS = 0.2, 0.3, 60
SGLD_RANGE = (-40.0, 40.0)  # never reached from the target: the clamp stays inactive


def _sgld_law(a, b2) -> Law:
    # From the uniform start the contraction c^(2 * 60) <= 0.8^120 leaves nothing of it.
    return Law(0.0, (SGLD_RANGE[1] - SGLD_RANGE[0]) ** 2 / 12).step(a, b2, times=SGLD_STEPS)


def test_sgld_replay_buffer_matches_its_exact_law():
    buffer = samplers.SGLDReplayBuffer(
        (2,),
        size=N,
        reinit_prob=0.0,
        steps=SGLD_STEPS,
        step_size=SGLD_A,
        noise_scale=SGLD_B,
        max_grad_norm=None,
        init_range=SGLD_RANGE,
        dtype=torch.float64,
        seed=15,
    )

    def energy(x):
        return 0.5 * (((x - MU) ** 2) / VAR).sum(1)

    x = buffer.sample(energy, N)
    alternatives = {
        "a 2x step": _sgld_law(2 * SGLD_A, SGLD_B**2),
        "noise scale x sqrt(2)": _sgld_law(SGLD_A, 2 * SGLD_B**2),
    }
    _assert_law(x, _sgld_law(SGLD_A, SGLD_B**2), alternatives)


# --- the command line's main job -------------------------------------------------------------------------


def test_scorefast_sample_matches_the_exact_law_of_its_y_coordinate(tmp_path, capsys):
    # The two-mode target's components share y-mean 0 and unit variance, so its score in y is
    # exactly -y: the y coordinate of ULA is linear-Gaussian whatever happens in x.
    a, steps, init = 0.5, 40, 2.0
    path = tmp_path / "stats.json"
    argv = ["sample", "--particles", str(N), "--steps", str(steps), "--step-size", str(a), "--init-scale", str(init)]
    rc = cli.main(argv + ["--dtype", "float64", "--seed", "16", "--no-plot", "--no-progress", "--json", str(path)])
    assert rc == 0
    capsys.readouterr()
    stats = json.loads(path.read_text())
    n = N - stats["non_finite_particles"]
    y_mean, y_var = stats["mean"][1], stats["covariance"][1][1]

    def z(a_used, noise_var):
        c = 1 - a_used
        s = init**2 * c ** (2 * steps) + noise_var * sum(c ** (2 * k) for k in range(steps))
        return max(abs(y_mean) / math.sqrt(s / n), abs(y_var / s - 1) / math.sqrt(2 / (n - 1)))

    assert z(a, 2 * a) < Z
    assert z(2 * a, 4 * a) > 2 * Z and z(a, a) > 2 * Z  # a 2x step or noise sqrt(a) would be seen


def test_predictor_corrector_per_particle_rule_equals_its_float64_replay():
    # The per-particle SNR rule makes each particle's step depend on its own score norm, so its
    # law is not Gaussian; instead the whole run is replayed in float64 from the reference step
    # and the normals the kernel drew (counter t: the correctors of a level, then its predictor),
    # so only float64 rounding separates the two. A 2x corrector or predictor step changes the
    # result by O(1).
    from scorefast.reference import langevin_step_ref

    sigmas, steps, seed = [2.0, 0.8, 0.3], 2, 17
    x0 = _start(sigmas[0], 5)[:256]
    x, _ = samplers.predictor_corrector(
        _score, x0.clone(), sigmas, corrector_steps=steps, snr=SNR, seed=seed, backend=_fused_backend("cpp")
    )
    y, t = x0.clone(), 0

    def z(t):
        return scorefast.normal(y.shape, seed=seed, step=t, backend="cpp").double()

    for s_i, s_next in zip(sigmas, sigmas[1:] + [0.0]):
        for _ in range(steps):
            s = _score(y, s_i)
            eps = (2 * (SNR * math.sqrt(2) / s.norm(dim=1)) ** 2).clamp(max=s_i**2)
            y = langevin_step_ref(y, s, step_size=eps, noise_scale=(2 * eps).sqrt(), noise=z(t))
            t += 1
        if s_next > 0:
            var = s_i**2 - s_next**2
            y = langevin_step_ref(y, _score(y, s_i), step_size=var, noise_scale=math.sqrt(var), noise=z(t))
            t += 1
    y = y + sigmas[-1] ** 2 * _score(y, sigmas[-1])
    torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
