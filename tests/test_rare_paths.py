"""Paths that random inputs almost never reach, pinned at inputs that reach them: the Box-Muller
clamp of tiny uniforms, the CPU kernels' exp flush of weights below e^-87, and the CUDA gmm
kernel's dynamic shared memory beyond the 48 KiB a launch gets by default."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MAX_RADIUS, NOISE_REL_TOL, assert_within, backend_device, noise_tolerance, require_or_skip

import scorefast
from scorefast import backend_registry
from scorefast.reference.noise import normal_ref, philox_words_ref, uniform_ref
from scorefast.targets import GaussianMixture, random_mixture
from scorefast.testing.gmm_budgets import FLUSH_LOG_WEIGHT, gmm_budget

# ---------------------------------------------------------------------------------------
# The Box-Muller clamp: u1 < 1e-7 is raised to 1e-7 before log.

# At seed 0, step 0, particle 2330056 the words of group 0 are (..., 0xFFFFFF45, w3): word 2
# folds to 186, u1 = 186 * 2^-31 = 8.66e-8, and u2 = u(w3) = 0.110551752. Elements 2 and 3 are
# (r cos 2pi u2, r sin 2pi u2) with r = sqrt(-2 log 1e-7) (clamped) instead of sqrt(-2 log u1).
CLAMP_PARTICLE = 2330056
CLAMP_WORD = 0xFFFFFF45
CLAMPED = (4.362164394665686, 3.634241749777743)  # float64 of the formula, u1 = 1e-7
UNCLAMPED = (4.381569307067709, 3.650408527648024)  # the same with u1 = 8.66e-8
# Two float32 Box-Muller implementations are within r * NOISE_REL_TOL of the formula's value.
LITERAL_TOL = MAX_RADIUS * NOISE_REL_TOL
# (particles, D, row of the clamped element): its counter's four elements alone, a particle that
# ends inside the counter (D = 3), and the element inside vector-width runs of several particles.
CLAMP_SHAPES = [(1, 4, 0), (1, 3, 0), (16, 8, 5), (5, 33, 2)]


def _clamped_site(D: int, row: int) -> tuple[int, int]:
    """(particle_offset, column) that put flat element 4 CLAMP_PARTICLE + 2 (output 2 of counter
    CLAMP_PARTICLE) at (row, column) of a [P, D] tensor."""
    g = 4 * CLAMP_PARTICLE + 2
    column = next(c for c in range(D) if (g - c) % D == 0)
    return (g - column) // D - row, column


def test_reference_clamps_the_tiny_uniform():
    words = philox_words_ref(1, 1, 0, 0, CLAMP_PARTICLE)
    assert int(words[0, 0, 2]) == CLAMP_WORD
    u = uniform_ref(words)[0, 0]
    assert 0 < float(u[2]) < 1e-7  # the clamp applies (u1 of the pair (z2, z3))
    assert all(float(u[j]) >= 1e-7 for j in (0, 1, 3))  # and only there
    for z in (normal_ref(1, 4, 0, 0, CLAMP_PARTICLE), scorefast.normal((1, 4), seed=0, particle_offset=CLAMP_PARTICLE)):
        z = z.cpu()
        assert bool(torch.isfinite(z).all())
        for j, (clamped, unclamped) in enumerate(zip(CLAMPED, UNCLAMPED)):
            assert abs(float(z[0, 2 + j]) - clamped) <= LITERAL_TOL
            assert abs(float(z[0, 2 + j]) - unclamped) > 1000 * LITERAL_TOL


@pytest.mark.parametrize("P, D, row", CLAMP_SHAPES)
def test_every_backend_clamps_the_tiny_uniform(kernel_backend, P, D, row):
    kb = kernel_backend
    offset, column = _clamped_site(D, row)
    got = scorefast.normal((P, D), seed=0, step=0, particle_offset=offset, device=kb.device, backend=kb.name).cpu()
    expected = normal_ref(P, D, 0, 0, offset)
    assert_within(got, expected, noise_tolerance(P, D, 0, 0, offset), f"normals {P}x{D}")
    flat, first = got.reshape(-1), row * D + column  # outputs 2 and 3 of the counter, where present
    checked = [j for j in range(2) if first + j < P * D]
    assert checked
    for j in checked:
        assert abs(float(flat[first + j]) - CLAMPED[j]) <= LITERAL_TOL, (row, column + j)


# ---------------------------------------------------------------------------------------
# The exp flush: the CPU kernels' float32 exp of l_k - max l gives 0 below -87.

KINDS = ["isotropic", "diagonal", "full"]
FAR = 10.0  # the far component's mean (FAR, 0), unit covariances: its score at 0 is (FAR, 0)


def _flush_mixture(gap: float, kind: str, far_first: bool) -> GaussianMixture:
    """Two unit-covariance components in D = 2, at 0 and at (FAR, 0), weighted so that at x = 0
    the far one's log-joint lies ``gap`` below the near one's: log(w_far / w_near) - FAR^2 / 2 = gap."""
    means = torch.tensor([[0.0, 0.0], [FAR, 0.0]], dtype=torch.float64)
    log_w = torch.tensor([0.0, gap + FAR**2 / 2], dtype=torch.float64)
    if far_first:  # the online log-sum-exp kernels then rescale their sums by exp(gap)
        means, log_w = means.flip(0), log_w.flip(0)
    cov = {
        "isotropic": dict(variance=torch.ones(2, dtype=torch.float64)),
        "diagonal": dict(diagonal=torch.ones(2, 2, dtype=torch.float64)),
        "full": dict(covariance=torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone()),
    }[kind]
    return GaussianMixture(means, log_weights=log_w, **cov)


@pytest.mark.parametrize("far_first", [False, True], ids=["near_first", "far_first"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gap", [-86.9, -87.1])
def test_exp_flush_threshold(kernel_backend, gap, kind, far_first):
    # At the near component's mean its own score is exactly 0, so the score is the far one's
    # share, r s_far = e^gap (FAR, 0) ~ 1.5e-37: a normal float32, thousands of times its budget.
    # The CPU kernels (cpp on this fixed-sigma, D <= 4 path, numba) drop it below -87 and must
    # keep it above; Triton's and CUDA's exp keep it on both sides.
    kb = kernel_backend
    mix = _flush_mixture(gap, kind, far_first)
    x = torch.zeros(3, 2)
    score, log_p = scorefast.gmm_score(x.to(kb.device), mix, backend=kb.name)
    score, log_p = score.cpu(), log_p.cpu()
    flushes = kb.name in ("cpp", "numba")
    ref_s, ref_l, tol_s, tol_l = gmm_budget(
        x, mix, None, torch.float32, flush_below=FLUSH_LOG_WEIGHT if flushes else None
    )
    _, _, strict, _ = gmm_budget(x, mix, None, torch.float32, flush_below=None)
    share = ref_s[:, 0]
    assert bool((share > 1e3 * strict[:, 0]).all()) and bool((share > 1e-37).all())
    if gap > FLUSH_LOG_WEIGHT:
        assert torch.equal(tol_s, strict)  # above the threshold the budget has no room for a dropped weight
    assert_within(score, ref_s, tol_s, f"score, gap {gap}")
    assert_within(log_p, ref_l, tol_l, f"log_prob, gap {gap}")
    if flushes and gap < FLUSH_LOG_WEIGHT:
        assert torch.equal(score, torch.zeros_like(score))  # dropped: the threshold is not lower
    else:
        assert bool((score[:, 0] > 0).all())  # kept


# ---------------------------------------------------------------------------------------
# The CUDA gmm kernel's dynamic shared memory beyond 48 KiB.

DEFAULT_SMEM = 48 * 1024  # what a launch may use without cudaFuncSetAttribute
THREADS = 256  # kThreads (csrc/cuda/kernel_common.cuh)
REGISTER_SLOTS = 32  # coordinate slots per lane kept in registers without a factor


def _warp_shared_bytes(D: int, dtype: torch.dtype) -> int:
    """The dynamic shared memory of launch_warp_shared (csrc/cuda/gmm_kernels.cu): acc and t of
    each warp, 2 * 32 * ceil(D / 32) values of the math type, for 8 warps halved while they
    pass 48 KiB (one warp then takes its whole slice, raising the kernel's limit)."""
    per_warp = 2 * math.ceil(D / 32) * 32 * (8 if dtype == torch.float64 else 4)
    warps = THREADS // 32
    while warps > 1 and warps * per_warp > DEFAULT_SMEM:
        warps //= 2
    return warps * per_warp


@pytest.mark.parametrize("sigma", [None, "per_point"])
@pytest.mark.parametrize("dtype, D", [(torch.float64, 3100), (torch.float32, 6200)], ids=["float64", "float32"])
def test_cuda_gmm_shared_memory_beyond_48_kib(dtype, D, sigma):
    status = backend_registry.status("cuda")
    if not status.available:
        require_or_skip("cuda", f"cuda: {status.reason}")
    dev = backend_device("cuda")
    if dev.type not in status.devices:
        pytest.skip(f"cuda does not run on {dev}")
    assert math.ceil(D / 32) > REGISTER_SLOTS  # past the register kernels: the shared-memory one
    assert _warp_shared_bytes(D, dtype) > DEFAULT_SMEM
    mix = random_mixture(3, D, seed=4, kind="diagonal", spread=2.0)
    x = mix.sample(5, seed=1).to(dtype)
    sig = None if sigma is None else torch.linspace(0.0, 1.0, 5, dtype=torch.float64).to(dtype)
    score, log_p = scorefast.gmm_score(x.to(dev), mix, sigma=None if sig is None else sig.to(dev), backend="cuda")
    ref_s, ref_l, tol_s, tol_l = gmm_budget(x, mix, sig, dtype)
    assert_within(score.cpu(), ref_s, tol_s, f"score D={D}")
    assert_within(log_p.cpu(), ref_l, tol_l, f"log_prob D={D}")
