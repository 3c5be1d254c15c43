"""scorefast.integrations.diffusers: the fused schedulers equal diffusers' own over whole loops.

Both run in float32 on the same inputs and the same noise: diffusers' draws from a generator,
or scorefast's counter-based normals fed to diffusers through its ``randn_tensor``. The two
differ only in rounding: each fused call rounds its few multiply-adds once where diffusers
rounds each eager op, a handful of float32 ulps of the largest |x| per step. The stand-in model
and the schedulers' maps are at most mildly expanding, so a loop of T steps stays within
T * 8 ulps of max |x|; a wrong coefficient or noise scale moves the result by orders more.
"""

from __future__ import annotations

import diffusers
import pytest
import torch
from diffusers.schedulers import scheduling_ddpm, scheduling_sde_ve

import scorefast
from scorefast.integrations import diffusers as fused

EPS32 = torch.finfo(torch.float32).eps
SHAPE = (4, 3, 8, 8)


def _model(x: torch.Tensor, t) -> torch.Tensor:
    """A smooth, deterministic stand-in for a network's output."""
    return 0.5 * torch.tanh(x) + 0.01 * float(t) / 50


def _start(scale=1.0) -> torch.Tensor:
    return scale * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def _close(ours: torch.Tensor, theirs: torch.Tensor, steps: int) -> None:
    tol = steps * 8 * EPS32 * max(1.0, float(theirs.abs().max()))
    err = float((ours - theirs).abs().max())
    assert err <= tol, f"max |ours - diffusers| = {err:.3g} > {tol:.3g}"


def _counter_normals(monkeypatch, module, seed: int) -> None:
    """diffusers' randn_tensor in ``module`` returns the contract's normals, one counter value per draw."""
    counter = iter(range(10**6))

    def draw(shape, generator=None, device=None, dtype=None, layout=None):
        return scorefast.normal(
            shape, seed=seed, step=next(counter), dtype=dtype or torch.float32, device=device or "cpu"
        )

    monkeypatch.setattr(module, "randn_tensor", draw)


def _ddpm_loop(scheduler, x, generator=None, inference_steps=None):
    if inference_steps:
        scheduler.set_timesteps(inference_steps)
    for t in scheduler.timesteps:
        x = scheduler.step(_model(x, t), t, x, generator=generator).prev_sample
    return x


DDPM_CONFIGS = {
    "default": {},  # epsilon, clip_sample, fixed_small
    "v_prediction": dict(prediction_type="v_prediction"),
    "sample_no_clip": dict(prediction_type="sample", clip_sample=False),
    "fixed_large": dict(variance_type="fixed_large"),
    "fixed_small_log": dict(variance_type="fixed_small_log"),
    "thresholding": dict(thresholding=True, sample_max_value=1.5),
}


@pytest.mark.parametrize("config", DDPM_CONFIGS, ids=list(DDPM_CONFIGS))
def test_ddpm_with_a_generator_reproduces_diffusers(config):
    cfg = dict(num_train_timesteps=40, **DDPM_CONFIGS[config])
    theirs = _ddpm_loop(diffusers.DDPMScheduler(**cfg), _start(), torch.Generator().manual_seed(1))
    ours = _ddpm_loop(fused.DDPMScheduler(**cfg), _start(), torch.Generator().manual_seed(1))
    _close(ours, theirs, 40)


def test_ddpm_with_inference_timesteps_and_from_config():
    base = diffusers.DDPMScheduler(num_train_timesteps=200, prediction_type="v_prediction")
    ours = fused.DDPMScheduler.from_config(base.config)
    settings = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert settings(ours.config) == settings(base.config)
    theirs = _ddpm_loop(base, _start(), torch.Generator().manual_seed(2), inference_steps=25)
    mine = _ddpm_loop(ours, _start(), torch.Generator().manual_seed(2), inference_steps=25)
    _close(mine, theirs, 25)


def test_ddpm_counter_noise_is_diffusers_fed_the_contract_normals(monkeypatch):
    cfg = dict(num_train_timesteps=30)
    ours = _ddpm_loop(fused.DDPMScheduler(**cfg).manual_seed(5), _start())
    _counter_normals(monkeypatch, scheduling_ddpm, seed=5)
    theirs = _ddpm_loop(diffusers.DDPMScheduler(**cfg), _start())
    _close(ours, theirs, 30)
    other = _ddpm_loop(fused.DDPMScheduler(**cfg).manual_seed(6), _start())
    assert float((other - ours).abs().max()) > 1e-2  # the seed matters


def test_ddpm_step_returns_x0_and_tuple():
    s = fused.DDPMScheduler(num_train_timesteps=10, clip_sample=False).manual_seed(0)
    ref = diffusers.DDPMScheduler(num_train_timesteps=10, clip_sample=False)
    x = _start()
    out = s.step(_model(x, 9), 9, x)
    prev, x0 = s.step(_model(x, 9), 9, x, return_dict=False)
    _close(out.pred_original_sample, ref.step(_model(x, 9), 9, x).pred_original_sample, 1)
    assert torch.equal(x0, out.pred_original_sample)
    assert not torch.equal(prev, out.prev_sample)  # the counter moved on: new noise


def _ve_loop(scheduler, x, generator=None, steps=12, corrector_steps=2):
    scheduler.set_timesteps(steps)
    scheduler.set_sigmas(steps)
    x_mean = x
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i]
        for _ in range(corrector_steps):
            x = scheduler.step_correct(-x / (1 + sigma**2), x, generator=generator).prev_sample
        out = scheduler.step_pred(-x / (1 + sigma**2), t, x, generator=generator)
        x, x_mean = out.prev_sample, out.prev_sample_mean
    return x, x_mean


def test_score_sde_ve_with_a_generator_reproduces_diffusers():
    cfg = dict(num_train_timesteps=100, snr=0.16)
    theirs = _ve_loop(diffusers.ScoreSdeVeScheduler(**cfg), _start(50), torch.Generator().manual_seed(1))
    ours = _ve_loop(fused.ScoreSdeVeScheduler(**cfg), _start(50), torch.Generator().manual_seed(1))
    for a, b in zip(ours, theirs):
        _close(a, b, 3 * 12)


def test_score_sde_ve_counter_noise_is_diffusers_fed_the_contract_normals(monkeypatch):
    cfg = dict(num_train_timesteps=100, snr=0.16)
    ours = _ve_loop(fused.ScoreSdeVeScheduler(**cfg).manual_seed(7), _start(50))
    _counter_normals(monkeypatch, scheduling_sde_ve, seed=7)
    theirs = _ve_loop(diffusers.ScoreSdeVeScheduler(**cfg), _start(50))
    for a, b in zip(ours, theirs):
        _close(a, b, 3 * 12)


def test_score_sde_ve_per_sample_corrector_uses_each_samples_norms(monkeypatch):
    s = fused.ScoreSdeVeScheduler(num_train_timesteps=10, snr=0.2).manual_seed(3)
    s.set_timesteps(10)
    s.corrector_rule = "per_sample"
    x = _start()
    g = -x * torch.linspace(0.5, 2.0, SHAPE[0])[:, None, None, None]  # different norms per sample
    prev = s.step_correct(g, x).prev_sample
    z = scorefast.normal(SHAPE, seed=3, step=0)
    eps = 2 * (0.2 * z.flatten(1).norm(dim=1) / g.flatten(1).norm(dim=1)) ** 2
    expected = x + eps[:, None, None, None] * g + (2 * eps[:, None, None, None]) ** 0.5 * z
    _close(prev, expected, 1)
    s.corrector_rule = "bogus"
    with pytest.raises(ValueError, match="corrector_rule"):
        s.step_correct(g, x)


def test_set_timesteps_restarts_the_counter():
    s = fused.DDPMScheduler(num_train_timesteps=20).manual_seed(4)
    first = _ddpm_loop(s, _start(), inference_steps=10)
    again = _ddpm_loop(s, _start(), inference_steps=10)
    assert torch.equal(first, again)
