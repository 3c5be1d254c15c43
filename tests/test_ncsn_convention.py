"""``epsilon`` means NCSN's epsilon: the annealed samplers equal an independent NCSN implementation.

NCSN (Song & Ermon, 2019) steps level i with alpha_i = epsilon sigma_i^2 / sigma_L^2 as
x + alpha_i/2 s(x, sigma_i) + sqrt(alpha_i) z. The reference implementation here is the
``diffusers-ncsn`` package's AnnealedLangevinDynamicsScheduler (installed without its
dependencies), fed the contract's normals through ``torch.randn_like``, which its ``step``
calls once per step, drawn by the backend under test (backends agree on the normals up to a
float32 rounding, which float64 runs would see). Both sides run in float64, so they agree to float64 rounding: at most a
few ulps of |x| per step, over L*T = 12 steps with a Jacobian I + a grad s of norm below 2
here, about 1e-13 of |x|; 1e-11 leaves room. Twice NCSN's step (the convention this replaces)
moves x by a_i |s| ~ 1e-3, eight orders above it.
"""

from __future__ import annotations

import pytest
import torch
from ncsn.scheduler import AnnealedLangevinDynamicsScheduler

import scorefast
from scorefast import samplers, targets

SEED, LEVELS, PER_LEVEL, EPSILON = 11, 4, 3, 2e-3
SIGMA_MAX, SIGMA_MIN = 3.0, 0.3


def _ncsn_scheduler() -> AnnealedLangevinDynamicsScheduler:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # its sigma table in float64, like the runs it is compared with
    try:
        return AnnealedLangevinDynamicsScheduler(
            num_train_timesteps=LEVELS,
            num_annealed_steps=PER_LEVEL,
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            sampling_eps=EPSILON,
        )
    finally:
        torch.set_default_dtype(default)


def _ncsn_run(score, x: torch.Tensor, monkeypatch, backend: str) -> torch.Tensor:
    scheduler = _ncsn_scheduler()
    counter = iter(range(LEVELS * PER_LEVEL))

    def contract_normals(sample, *args, **kwargs):
        return scorefast.normal(sample.shape, seed=SEED, step=next(counter), dtype=sample.dtype, backend=backend)

    monkeypatch.setattr(torch, "randn_like", contract_normals)
    x = x.clone()
    for level in scheduler.timesteps:
        sigma = float(scheduler.sigmas[level])
        for _ in range(scheduler.num_annealed_steps):
            x = scheduler.step(score(x, sigma), int(level), x).prev_sample
    monkeypatch.undo()
    return x


@pytest.fixture
def problem():
    mix = targets.two_mode_2d()  # float64 parameters
    x = 2.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return mix, x, _ncsn_scheduler().sigmas.tolist()


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    tol = 1e-11 * (1 + theirs.abs().max())
    assert float((ours - theirs).abs().max()) <= tol


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_stepwise_annealed_langevin_is_ncsn(problem, monkeypatch, backend):
    mix, x, sigmas = problem
    score = lambda y, s: mix.score(y, sigma=s, backend="reference")  # noqa: E731  (a plain function: stepwise)
    theirs = _ncsn_run(score, x, monkeypatch, backend)
    kw = dict(steps_per_level=PER_LEVEL, seed=SEED, final_denoise=False, backend=backend)
    ours = samplers.annealed_langevin(score, x.clone(), sigmas, epsilon=EPSILON, **kw)
    _close(ours, theirs)
    doubled = samplers.annealed_langevin(score, x.clone(), sigmas, epsilon=2 * EPSILON, **kw)
    assert float((doubled - theirs).abs().max()) > 1e-4  # the test sees the old convention


@pytest.mark.parametrize("backend", ["reference", "cpp", "numba"])
def test_fused_annealed_chain_is_ncsn(problem, monkeypatch, backend):
    mix, x, sigmas = problem
    theirs = _ncsn_run(lambda y, s: mix.score(y, sigma=s, backend="reference"), x, monkeypatch, backend)
    res = scorefast.gmm_chain(
        x, mix, method="annealed", sigmas=sigmas, steps_per_level=PER_LEVEL, epsilon=EPSILON, seed=SEED, backend=backend
    )
    _close(res.x, theirs)
