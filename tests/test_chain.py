"""gmm_chain: the fused chain equals T single steps (langevin_step + gmm_score) on the same
backend, matches the reference within the noise budget, is independent of particle chunking,
records trajectories, and runs MALA with the contract's uniforms."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import MAX_RADIUS, NOISE_REL_TOL

import scorefast
from scorefast import samplers
from scorefast.targets import random_mixture, ring

CASES = {
    "ula": dict(method="ula", steps=25, step_size=0.05),
    "annealed": dict(method="annealed", sigmas=[3.0, 1.0, 0.3], steps_per_level=8, epsilon=0.002),
    "mala": dict(method="mala", steps=25, step_size=0.1),
}


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("case", ["ula", "annealed"])
def test_chain_equals_single_steps(kind, case):
    mix = random_mixture(3, 3, seed=1, kind=kind, spread=2.0)
    x = mix.sample(40, seed=2)
    kw = CASES[case]
    out = scorefast.gmm_chain(x, mix, seed=5, step_offset=7, backend="cpp", **kw).x
    y = x.clone()
    if case == "ula":
        levels = [(None, kw["step_size"])] * kw["steps"]
    else:
        last = kw["sigmas"][-1]
        levels = [(s, kw["epsilon"] * s**2 / last**2) for s in kw["sigmas"] for _ in range(kw["steps_per_level"])]
    for t, (sigma, a) in enumerate(levels):
        s = scorefast.gmm_score(y, mix, sigma=sigma, backend="cpp")[0]
        scorefast.langevin_step_(y, s, step_size=a, seed=5, step=7 + t, backend="cpp")
    torch.testing.assert_close(out, y, rtol=1e-10, atol=1e-10)


def test_mala_chain_equals_the_generic_mala_sampler():
    mix = random_mixture(4, 2, seed=3, kind="full", spread=2.0)
    x = mix.sample(200, seed=4)
    res = scorefast.gmm_chain(x, mix, method="mala", steps=30, step_size=0.2, seed=9, backend="cpp")
    y, diag = samplers.mala(lambda z: mix.score(z, backend="cpp"), lambda z: mix.log_prob(z, backend="cpp"),
                            x.clone(), steps=30, step_size=0.2, seed=9)
    torch.testing.assert_close(res.x, y, rtol=1e-10, atol=1e-10)
    assert torch.equal(res.accepted.double() / 30, diag["acceptance_rate"])
    assert 0.2 < float(res.accepted.double().mean() / 30) < 1.0


@pytest.mark.parametrize("case", list(CASES))
def test_chain_matches_reference_within_the_noise_budget(case):
    mix = random_mixture(3, 2, seed=6, kind="diagonal", spread=2.0)
    x = mix.sample(30, seed=7)
    kw = CASES[case]
    a = scorefast.gmm_chain(x, mix, seed=11, trajectory_every=5, backend="cpp", **kw)
    b = scorefast.gmm_chain(x, mix, seed=11, trajectory_every=5, backend="reference", **kw)
    # The two backends' normals differ by <= r * NOISE_REL_TOL; each step adds that times
    # sqrt(2a), and the drift can grow differences by at most (1 + a * max precision) per step.
    a_max = 0.1 if case == "mala" else 0.05 if case == "ula" else kw["epsilon"] * (3.0 / 0.3) ** 2
    T = b.trajectory.shape[0] * 5
    growth = (1 + a_max / float(mix.cov.min())) ** T
    tol = T * math.sqrt(2 * a_max) * MAX_RADIUS * NOISE_REL_TOL * growth
    assert (a.x - b.x).abs().max() <= tol
    assert (a.trajectory - b.trajectory).abs().max() <= tol
    if case == "mala":
        assert torch.equal(a.accepted, b.accepted)


def test_chunked_particles_equal_whole_batch():
    mix = ring()
    x = mix.sample(50, seed=1).float()
    kw = dict(method="ula", steps=10, step_size=0.01, seed=4, backend="cpp")
    whole = scorefast.gmm_chain(x, mix, **kw).x
    parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw).x for s, e in ((0, 17), (17, 50))]
    assert torch.equal(torch.cat(parts), whole)


def test_trajectory_and_final_denoise():
    mix = ring()
    x = mix.sample(20, seed=1)
    res = scorefast.gmm_chain(x, mix, method="ula", steps=12, step_size=0.01, trajectory_every=4, seed=2, backend="cpp")
    assert res.trajectory.shape == (3, 20, 2) and torch.equal(res.trajectory[-1], res.x)
    assert res.accepted is None
    assert torch.equal(x, mix.sample(20, seed=1))  # the start is not modified
    ann = dict(method="annealed", sigmas=[2.0, 0.5], steps_per_level=5, epsilon=0.01, seed=3, backend="cpp")
    plain = scorefast.gmm_chain(x, mix, **ann).x
    den = scorefast.gmm_chain(x, mix, final_denoise=True, **ann).x
    torch.testing.assert_close(den, plain + 0.25 * scorefast.gmm_score(plain, mix, sigma=0.5)[0])


def test_float32_chain_and_opcheck():
    mix = random_mixture(2, 3, seed=8, kind="isotropic")
    x = mix.sample(16, seed=1).float()
    res = scorefast.gmm_chain(x, mix, method="mala", steps=5, step_size=0.1, seed=1, backend="cpp")
    assert res.x.dtype == torch.float32 and res.accepted.dtype == torch.int64
    p = mix.kernel_params(torch.float32, x.device, None, per_point=True)
    args = (x.clone(), p["means"], p["var"], p["log_const"], p["factor"], torch.full((4,), 0.1),
            torch.zeros(4), True, 3, 0, 0, 2, torch.empty(2, 16, 3), torch.zeros(16, dtype=torch.int64))
    torch.library.opcheck(torch.ops.scorefast.gmm_chain_.default, args)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="hmc", steps=3, step_size=0.1), ValueError, "method"),
    (dict(method="annealed", sigmas=[1.0, 2.0]), ValueError, "decreasing"),
    (dict(method="annealed"), TypeError, "sigmas"),
    (dict(method="ula", step_size=0.1), TypeError, "steps"),
    (dict(method="ula", steps=3, step_size=-0.1), ValueError, "step_size"),
    (dict(method="ula", steps=2, step_size=torch.tensor([0.1, 0.1, 0.1])), ValueError, "schedule"),
    (dict(method="ula", steps=3, step_size=0.1, backend="numba"), NotImplementedError, "gmm_chain_"),
    (dict(method="ula", steps=3, step_size=0.1, step_offset=2**32 - 2), ValueError, "2\\^32"),
])
def test_errors(kwargs, error, match):
    mix = ring()
    with pytest.raises(error, match=match):
        scorefast.gmm_chain(torch.zeros(4, 2), mix, **kwargs)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("D", [1, 2, 4])
def test_float32_vector_path_matches_reference(kind, case, D):
    # float32 with D <= 4 runs 8 particles per vector; compare with the float64 reference
    # chain from the same (float32-exact) start. Each step adds the noise budget and <= 8u of
    # the state's magnitude; the drift grows differences by <= (1 + a * max precision).
    mix = random_mixture(3, D, seed=D, kind=kind, spread=2.0)
    x = mix.sample(37, seed=1).float()  # 37: a partial vector at the end
    kw = CASES[case]
    a = scorefast.gmm_chain(x, mix, seed=13, trajectory_every=5, backend="cpp", **kw)
    b = scorefast.gmm_chain(x.double(), mix, seed=13, trajectory_every=5, backend="reference", **kw)
    a_max = 0.1 if case == "mala" else 0.05 if case == "ula" else kw["epsilon"] * (3.0 / 0.3) ** 2
    T = b.trajectory.shape[0] * 5
    lam = 1.0 / float(torch.linalg.eigvalsh(mix.covariances()).min())
    growth = (1 + a_max * lam) ** T
    mag = float(b.x.abs().max()) + 1.0
    tol = T * (math.sqrt(2 * a_max) * MAX_RADIUS * NOISE_REL_TOL + 8 * 2.0**-24 * mag * (1 + a_max * lam)) * growth
    if case == "mala":
        same = a.accepted == b.accepted  # a rounding-level flip of one decision is allowed
        assert int((~same).sum()) <= 1
        keep = same
    else:
        keep = torch.ones(37, dtype=torch.bool)
    assert (a.x.double() - b.x)[keep].abs().max() <= tol
    assert a.x.dtype == torch.float32


def test_float32_vector_chain_independent_of_chunking_and_equal_to_steps():
    mix = ring()
    x = mix.sample(45, seed=3).float()
    kw = dict(method="ula", steps=15, step_size=0.01, seed=8, backend="cpp")
    whole = scorefast.gmm_chain(x, mix, **kw).x
    parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw).x for s, e in ((0, 13), (13, 45))]
    assert torch.equal(torch.cat(parts), whole)
    y = x.clone()
    for t in range(15):
        scorefast.langevin_step_(y, scorefast.gmm_score(y, mix, backend="cpp")[0], step_size=0.01, seed=8, step=t)
    torch.testing.assert_close(whole, y, rtol=1e-5, atol=1e-5)


def test_vector_chain_is_the_same_on_every_cpu_kernel_build():
    ext = scorefast._extension.extension()
    mix = random_mixture(3, 2, seed=4, kind="full", spread=2.0)
    x = mix.sample(29, seed=2).float()
    results = {}
    previous = ext.cpu_isa()
    try:
        for isa in ext.supported_cpu_isas():
            assert ext.select_cpu_isa(isa)
            results[isa] = scorefast.gmm_chain(x, mix, method="mala", steps=10, step_size=0.05, seed=6,
                                               backend="cpp")
    finally:
        ext.select_cpu_isa(previous)
    base = results["generic"]
    for isa, res in results.items():
        # the builds' normals differ within the noise budget only
        torch.testing.assert_close(res.x, base.x, rtol=0, atol=1e-4)
        assert int((res.accepted != base.accepted).sum()) <= 1, isa
