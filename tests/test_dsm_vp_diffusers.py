"""dsm_vp_perturb and dsm_vp_loss against diffusers: the forward process is DDPMScheduler.add_noise
given the same noise (the contract's normals), the v target is DDPMScheduler.get_velocity, and
the min-SNR weights are those of diffusers' training scripts (training_utils.compute_snr)."""

from __future__ import annotations

import torch
from conftest import U32, U64, assert_within
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

import scorefast
from scorefast.dsm_vp import loss_coefficients

SEED, STEP = 12345, 7
SHAPE = (6, 3, 4, 4)  # images: dim 0 = samples
TIMESTEPS = torch.tensor([0, 1, 250, 500, 998, 999])
# Backends whose perturb rounds alpha x and sigma z before adding, as torch does in add_noise; the
# AVX2 and AVX-512 C++ builds contract sigma z + alpha x into one FMA (one rounding fewer).
FUSED_MULTIPLY_ADD = ("cpp:avx2", "cpp:avx512")


def _scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def _contract_noise(kb, dtype):
    """The normals the backend's dsm_vp kernels draw for SHAPE: its own normal op, same counter."""
    z = scorefast.normal(SHAPE, seed=SEED, step=STEP, device=kb.device, backend=kb.name)
    return z.to(dtype)


def test_vp_coefficients_are_add_noise_s():
    sched = _scheduler()
    x = torch.ones(len(TIMESTEPS), 1)
    alpha, sigma = scorefast.vp_coefficients(TIMESTEPS, sched.alphas_cumprod)
    assert torch.equal(sched.add_noise(x, torch.zeros_like(x), TIMESTEPS)[:, 0], alpha)
    assert torch.equal(sched.add_noise(torch.zeros_like(x), x, TIMESTEPS)[:, 0], sigma)


def test_perturb_is_add_noise(kernel_backend):
    sched = _scheduler()
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(SHAPE, generator=g, dtype=dtype).to(kernel_backend.device)
        alpha, sigma = scorefast.vp_coefficients(TIMESTEPS, sched.alphas_cumprod, dtype=dtype)
        z = _contract_noise(kernel_backend, dtype)
        want = sched.add_noise(x, z, TIMESTEPS.to(x.device))
        got = scorefast.dsm_vp_perturb(x, alpha, sigma, seed=SEED, step=STEP, backend=kernel_backend.name)
        if kernel_backend.variant in FUSED_MULTIPLY_ADD:
            u = U64 if dtype == torch.float64 else U32
            per = (-1, *([1] * (len(SHAPE) - 1)))
            tol = 2 * u * (alpha.reshape(per) * x.abs() + sigma.reshape(per) * z.abs()).double()
            assert_within(got.cpu(), want.cpu(), tol.cpu(), f"perturb {dtype}")
        else:
            assert torch.equal(got, want), f"perturb {dtype}"
    # and the reference draws the same normals
    x = torch.randn(SHAPE, generator=g)
    alpha, sigma = scorefast.vp_coefficients(TIMESTEPS, sched.alphas_cumprod)
    z = scorefast.reference.dsm_vp_noise_ref(x, SEED, STEP).reshape(SHAPE)
    ref = scorefast.dsm_vp_perturb(x, alpha, sigma, seed=SEED, step=STEP, backend="reference")
    assert torch.equal(ref, sched.add_noise(x, z, TIMESTEPS))


def test_v_target_is_get_velocity(kernel_backend):
    # pred = get_velocity(x, z, t) makes the v loss vanish up to the rounding of the target's terms
    sched = _scheduler()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(kernel_backend.device)
    alpha, sigma = scorefast.vp_coefficients(TIMESTEPS, sched.alphas_cumprod, dtype=torch.float64)
    v = sched.get_velocity(x, _contract_noise(kernel_backend, torch.float64), TIMESTEPS.to(x.device))
    kw = dict(seed=SEED, step=STEP, parametrization="v", weighting="none", reduction="none")
    per = scorefast.dsm_vp_loss(v, x, alpha, sigma, backend=kernel_backend.name, **kw)
    bound = ((4 * U64 * (v.abs() + 2 * x.abs() + 2 * MAX_Z)) ** 2).reshape(len(TIMESTEPS), -1).sum(1)
    assert bool((per.cpu() <= bound.cpu()).all()), per
    # a wrong target is far from 0
    assert bool((scorefast.dsm_vp_loss(-v, x, alpha, sigma, backend=kernel_backend.name, **kw) > 1.0).all())


MAX_Z = 6.0  # |z| < 5.7 for the contract's normals


def test_min_snr_weights_are_diffusers_training_weights():
    sched = _scheduler()
    t = torch.tensor([1, 10, 100, 400, 700, 999])
    snr = compute_snr(sched, t)
    gamma = 5.0
    clipped = torch.stack([snr, gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    alpha, sigma = scorefast.vp_coefficients(t, sched.alphas_cumprod)
    for par, diffusers_w in (("eps", clipped / snr), ("v", clipped / (snr + 1))):
        w = loss_coefficients(alpha, sigma, par, "min_snr", snr_gamma=gamma)[2]
        torch.testing.assert_close(w, diffusers_w.double(), rtol=1e-6, atol=0)
