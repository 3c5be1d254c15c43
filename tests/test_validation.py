"""Argument validation shared by every path: the stepwise and the fused samplers, the reference
and the kernels refuse (or accept) the same inputs, with errors that name the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import scorefast
from scorefast import samplers
from scorefast.targets import ring

BAD_SIGMAS = [
    ([], "non-empty"),
    ([1.0, 0.0], "> 0"),
    ([-1.0, -2.0], "> 0"),
    ([float("inf"), 1.0], "finite"),
    ([1.0, float("nan")], "finite"),
    ([1.0, 2.0], "decreasing"),
    (torch.ones(2, 1), "1-D"),
]


def _plain_score(x, sigma):
    return -x / (1 + sigma**2)


@pytest.mark.parametrize("sigmas, match", BAD_SIGMAS)
@pytest.mark.parametrize("path", ["annealed_function", "annealed_fused", "predictor_corrector", "gmm_chain"])
def test_noise_levels_are_checked_alike_on_every_path(path, sigmas, match):
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=f"sigmas must .*{match}"):
        if path == "annealed_function":
            samplers.annealed_langevin(_plain_score, x, sigmas, steps_per_level=2)
        elif path == "annealed_fused":
            samplers.annealed_langevin(ring().score, x, sigmas, steps_per_level=2)
        elif path == "predictor_corrector":
            samplers.predictor_corrector(_plain_score, x, sigmas)
        else:
            scorefast.gmm_chain(x, ring(), method="annealed", sigmas=sigmas, steps_per_level=2)


@pytest.mark.parametrize("score_fn", [_plain_score, ring().score], ids=["function", "mixture"])
@pytest.mark.parametrize("kwargs, match", [({"steps_per_level": 0}, "steps_per_level"), ({"epsilon": 0.0}, "epsilon")])
def test_annealed_schedule_is_checked_on_both_paths(score_fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        samplers.annealed_langevin(score_fn, torch.zeros(4, 2), [1.0, 0.5], **kwargs)


def test_predictor_corrector_with_a_zero_score_caps_the_step():
    # The SNR rule divides by ||s||: a zero score would ask for an infinite step.
    x, _ = samplers.predictor_corrector(lambda y, s: torch.zeros_like(y), torch.zeros(6, 3), [1.0, 0.5], seed=1)
    assert bool(torch.isfinite(x).all()) and float(x.abs().max()) < 10


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_normal_refuses_non_float_dtypes(dtype):
    with pytest.raises(TypeError, match="dtype must be float"):
        scorefast.normal((2, 3), seed=1, dtype=dtype)


def test_normal_refuses_fractional_shapes():
    with pytest.raises(TypeError, match="shape entry must be an int"):
        scorefast.normal((2.5, 3), seed=1)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_a_step_size_beyond_the_float32_range_names_step_size(backend):
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="^step_size must be finite in the math dtype of x"):
        scorefast.langevin_step(x, x, step_size=1e39, noise_scale=0.0, backend=backend)
    with pytest.raises(ValueError, match=r"^step_size \(through the default noise_scale"):
        scorefast.langevin_step(x.double(), x.double(), step_size=1e308, backend=backend)
    # float64 math holds 1e39: a zero score moves nothing
    out = scorefast.langevin_step(x.double(), x.double(), step_size=1e39, noise_scale=0.0, backend=backend)
    assert torch.equal(out, x.double())


@pytest.mark.parametrize("backend", ["reference", "cpp", "numba"])
def test_reference_and_kernels_accept_the_same_corner_inputs(backend):
    x = torch.zeros(4, 2)
    empty = scorefast.langevin_step(torch.zeros(0, 3), torch.zeros(0, 3), step_size=0.1, backend=backend)
    assert empty.shape == (0, 3)
    np_seed = scorefast.langevin_step(x, x, step_size=0.1, seed=np.int64(3), backend=backend)
    assert torch.equal(np_seed, scorefast.langevin_step(x, x, step_size=0.1, seed=3, backend=backend))
    # 1e300 is inf in float32: every element is clamped up to inf
    high = scorefast.langevin_step(x, x, step_size=0.1, clamp=(1e300, None), seed=1, backend=backend)
    assert bool(torch.isposinf(high).all())
    assert scorefast.dsm_perturb(torch.zeros(0, 3), 0.5, seed=1, backend=backend).shape == (0, 3)


def test_per_particle_tensors_that_require_grad_raise_no_warning():
    x = torch.zeros(4, 2)
    a = torch.full((4,), 0.1, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scorefast.langevin_step(x, x, step_size=a, seed=1)


@pytest.mark.parametrize(
    "steps, step_size, error", [(-1, 0.1, ValueError), (2.5, 0.1, TypeError), (3, 0.0, ValueError)]
)
@pytest.mark.parametrize("sampler", ["langevin", "mala"])
@pytest.mark.parametrize("target", ["function", "mixture"])
def test_ula_and_mala_check_their_schedule_alike_on_both_paths(sampler, target, steps, step_size, error):
    mix = ring()
    score = mix.score if target == "mixture" else (lambda y: -y)
    log_prob = mix.log_prob if target == "mixture" else (lambda y: -0.5 * (y**2).sum(1))
    with pytest.raises(error, match="steps must|step_size must"):
        if sampler == "langevin":
            samplers.langevin(score, torch.zeros(4, 2), steps=steps, step_size=step_size)
        else:
            samplers.mala(score, log_prob, torch.zeros(4, 2), steps=steps, step_size=step_size)
