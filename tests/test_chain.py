"""gmm_chain on every backend with a kernel (cpp, numba, triton): the fused chain equals
T single steps (langevin_step + gmm_score) on the same backend within their rounding budget,
and T one-step chains bit for bit (the state is stored between steps); it matches the
reference within the noise budget, is independent of particle chunking, records
trajectories, rounds 16-bit states to nearest even, and runs MALA with the contract's
uniforms (the same acceptances as the C++ kernel). Then the C++ kernel's own paths."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MAX_RADIUS, NOISE_REL_TOL, U32, U64, on_each_cpu_isa, require_or_skip, storage_ulp

import scorefast
from scorefast import backend_registry, samplers
from scorefast.reference.noise import normal_ref
from scorefast.targets import random_mixture, ring
from scorefast.testing.chain_budget import chain_error_bound
from scorefast.testing.gmm_budgets import gmm_budget

CASES = {
    "ula": dict(method="ula", steps=25, step_size=0.05),
    "annealed": dict(method="annealed", sigmas=[3.0, 1.0, 0.3], steps_per_level=8, epsilon=0.004),
    "mala": dict(method="mala", steps=25, step_size=0.1),
}
# The Triton interpreter (no GPU) runs every lane in Python: 6 steps, at most 13 particles.
TINY_CASES = {
    "ula": dict(CASES["ula"], steps=6),
    "annealed": dict(CASES["annealed"], steps_per_level=2),
    "mala": dict(CASES["mala"], steps=6),
}
KINDS = ["isotropic", "diagonal", "full"]
SEED_TOP_BIT = 5 - 2**63  # the op's int64 seed for 2^63 + 5: a key with its top bit set


def _require(kb):
    # Every backend that loads must carry the op: a missing kernel is a failure, not a skip.
    assert backend_registry.has_op(kb.name, "gmm_chain_"), f"{kb.name} has no gmm_chain_ kernel"


def _case(kb, case):
    return (TINY_CASES if kb.interpreted else CASES)[case]


def _n(kb, n):
    return min(n, 13) if kb.interpreted else n


def _levels(kw):
    """(sigma or None, step size) of every step of a case."""
    if kw["method"] != "annealed":
        return [(None, kw["step_size"])] * kw["steps"]
    last = kw["sigmas"][-1]
    return [(s, kw["epsilon"] / 2 * s**2 / last**2) for s in kw["sigmas"] for _ in range(kw["steps_per_level"])]


def _lam(mix, s2=0.0):
    """Largest precision of the mixture's components (noised by s2)."""
    return 1.0 / (float(torch.linalg.eigvalsh(mix.covariances()).min()) + s2)


def _schedule(kw):
    """(step sizes, noise levels or None) of a case, as chain_error_bound takes them."""
    levels = _levels(kw)
    return [a for _, a in levels], ([s for s, _ in levels] if kw["method"] == "annealed" else None)


def _within_bound(actual, expected, bound, what):
    """|actual - expected| <= bound elementwise: actual, expected (..., N, D), bound (..., N)."""
    err = (actual.cpu().double() - expected.double()).abs().amax(-1)
    worst = float((err / bound).max())
    assert bool((err <= bound).all()), f"{what}: error {float(err.max()):.3g} is {worst:.3g} of its bound"


def _float32_chain_within_bound(mix, x, kw, every):
    """cpp's float32 chain from x (N, D) against the float64 reference chain from the same
    (float32-exact) start, every `every`-th state and the last within chain_error_bound (float32
    rounding and the score's float32 budget every step, carried on by the noised mixture's
    drift). MALA: a rounding-level flip of one decision is allowed, and parts that particle's
    path. Returns cpp's result."""
    a = scorefast.gmm_chain(x, mix, seed=13, trajectory_every=every, backend="cpp", **kw)
    b = scorefast.gmm_chain(x.double(), mix, seed=13, trajectory_every=every, backend="reference", **kw)
    mala = kw["method"] == "mala"
    _, bound = chain_error_bound(x, mix, *_schedule(kw), mala=mala, seed=13, explicit_precision=True)
    keep = a.accepted == b.accepted if mala else torch.ones(x.shape[0], dtype=torch.bool)
    assert int((~keep).sum()) <= 1
    _within_bound(a.x[keep], b.x[keep], bound[-1][keep], "final state")
    _within_bound(a.trajectory[:, keep], b.trajectory[:, keep], bound[every - 1 :: every][:, keep], "trajectory")
    return a


def _chain_op(kb, x, mix, steps, mala, seed, step_offset, trajectory_every=0):
    """The op itself on per-step (a, sigma^2) lists: (x, accepted, trajectory)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    p = mix.kernel_params(acc, x.device, None, per_point=True)
    out = x.clone()
    accepted = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    k = trajectory_every
    traj = x.new_empty((len(steps) // k, *x.shape)) if k else None
    a = torch.tensor([a for a, _ in steps], dtype=acc, device=x.device)
    s2 = torch.tensor([s2 for _, s2 in steps], dtype=acc, device=x.device)
    backend_registry.op_namespace(kb.name).gmm_chain_(
        out, p["means"], p["var"], p["log_const"], p["factor"], a, s2, mala, seed, step_offset, 0, k, traj, accepted
    )
    return out, accepted, traj


# ---------------------------------------------------------------------------------------
# Every backend


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["ula", "annealed"])
def test_chain_equals_single_steps(kernel_backend, case, kind, dtype):
    _chain_vs_single_steps(kernel_backend, case, kind, dtype, dim=3)


@pytest.mark.parametrize("dim", [6, 8, 10])
def test_chain_equals_single_steps_past_four_elements(kernel_backend, dim):
    # Particles of more than 4 elements, whose noise meets the flat view's counters aligned
    # (D = 8) or straddling them (D = 6, 10); cpp's register-tile chains take D <= 8, its
    # blocked ones D = 10.
    _chain_vs_single_steps(kernel_backend, "ula", "isotropic", torch.float32, dim)


def _chain_vs_single_steps(kb, case, kind, dtype, dim):
    _require(kb)
    mix = random_mixture(3, dim, seed=1, kind=kind, spread=2.0)
    x = mix.sample(_n(kb, 40), seed=2).to(dtype).to(kb.device)
    kw = _case(kb, case)
    out = scorefast.gmm_chain(x, mix, seed=5, step_offset=7, backend=kb.name, **kw).x
    # The same steps one call at a time (the mixture's parameters in the folded form there,
    # and b = sqrt(2a) rounded from float64): the two differ by rounding only. Each step adds
    # a times twice the score's budget, 8u of the update's terms for each side and 2u b |z|
    # for b's roundings; the drift grows earlier differences by at most (1 + a * largest
    # precision).
    u = U64 if dtype == torch.float64 else U32
    y = x.clone()
    tol = 0.0
    for t, (sigma, a) in enumerate(_levels(kw)):
        ref_s, _, tol_s, _ = gmm_budget(y.cpu(), mix, sigma, dtype)
        b = math.sqrt(2 * a)
        terms = float((y.cpu().double().abs() + a * ref_s.abs()).max()) + b * MAX_RADIUS
        step_err = 2 * a * float(tol_s.max()) + 16 * u * terms + 2 * u * b * MAX_RADIUS
        tol = tol * (1 + a * _lam(mix, (sigma or 0.0) ** 2)) + step_err
        s = scorefast.gmm_score(y, mix, sigma=sigma, backend=kb.name)[0]
        scorefast.langevin_step_(y, s, step_size=a, seed=5, step=7 + t, backend=kb.name)
    assert out.dtype == dtype
    err = float((out.double() - y.double()).abs().max())
    assert err <= tol, f"|chain - single steps| = {err:.3g} > budget {tol:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("dim", [3, 6])
@pytest.mark.parametrize("case", list(CASES))
def test_chain_equals_one_step_chains_bit_for_bit(kernel_backend, case, dim, dtype):
    # T fused steps equal T calls of one step each: the state is rounded to its storage after
    # every step, the counter of step t is step_offset + t, MALA's state and score carry over.
    kb = kernel_backend
    _require(kb)
    kind = {"ula": "full", "annealed": "diagonal", "mala": "isotropic"}[case]
    mix = random_mixture(3, dim, seed=4, kind=kind, spread=2.0)
    x = mix.sample(_n(kb, 24), seed=3).to(dtype).to(kb.device)
    kw = _case(kb, case)
    steps = [(a, 0.0 if s is None else s * s) for s, a in _levels(kw)]
    mala = case == "mala"
    fused, accepted, traj = _chain_op(kb, x, mix, steps, mala, seed=SEED_TOP_BIT, step_offset=3, trajectory_every=2)
    y = x.clone()
    total = torch.zeros_like(accepted)
    for t, step in enumerate(steps):
        y, acc, _ = _chain_op(kb, y, mix, [step], mala, seed=SEED_TOP_BIT, step_offset=3 + t)
        total += acc
        if (t + 1) % 2 == 0:
            assert torch.equal(traj[t // 2], y), f"trajectory frame {t // 2}"
    assert torch.equal(fused, y)
    if mala:
        assert torch.equal(accepted, total)
        assert 0 < int(total.sum()) < total.numel() * len(steps)  # both outcomes occur


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_16bit_state_is_rounded_to_nearest_even(kernel_backend, dtype):
    # One ULA step: v = x + a s + b z in float32, stored to 16 bits. Wherever v is farther from
    # a rounding boundary (half an ulp from its rounded value) than v's float32 error budget,
    # the result is exactly the round-to-nearest-even of the float64 value; elsewhere it is
    # one of the two neighbours.
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(2, 3, seed=5, kind="diagonal", spread=2.0)
    x = mix.sample(_n(kb, 64), seed=6).to(dtype)
    a = 0.05
    b = math.sqrt(2 * a)
    out = scorefast.gmm_chain(
        x.to(kb.device), mix, method="ula", steps=1, step_size=a, seed=9, step_offset=4, backend=kb.name
    ).x.cpu()
    s, _, tol_s, _ = gmm_budget(x, mix, None, torch.float32)
    z = normal_ref(x.shape[0], 3, 9, 4).double()
    xd = x.double()
    v = xd + a * s + b * z
    budget = (
        a * tol_s
        + 8 * U32 * (xd.abs() + a * s.abs() + b * z.abs())
        + b * NOISE_REL_TOL * MAX_RADIUS
        + 2 * U32 * b * z.abs()
    )  # the score, the update's roundings, the normals, b's rounding
    nearest = v.to(dtype).double()
    ulp = storage_ulp(nearest, dtype)
    # the gap to the neighbour toward zero is half an ulp at a power of two
    pow2 = nearest.abs() == torch.exp2(torch.floor(torch.log2(nearest.abs())))
    toward_zero = (v - nearest) * nearest < 0
    gap = torch.where(toward_zero & pow2, ulp / 2, ulp)
    clear = (v - nearest).abs() + budget < gap / 2
    assert int(clear.sum()) > 0.9 * clear.numel()
    assert torch.equal(out.double()[clear], nearest[clear])
    assert bool(((out.double() - v).abs() <= ulp + budget)[~clear].all())


@pytest.mark.parametrize("dim", [2, 7])
@pytest.mark.parametrize("case", list(CASES))
def test_chain_matches_reference_within_the_noise_budget(kernel_backend, case, dim):
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(3, dim, seed=6, kind="diagonal", spread=2.0)
    x = mix.sample(_n(kb, 30), seed=7)
    kw = _case(kb, case)
    k = 3 if kb.interpreted else 5
    a = scorefast.gmm_chain(x.to(kb.device), mix, seed=11, trajectory_every=k, backend=kb.name, **kw)
    b = scorefast.gmm_chain(x, mix, seed=11, trajectory_every=k, backend="reference", **kw)
    # Each step adds the normals' contract tolerance, the score's budget and rounding; the drift
    # of the mixture noised at that step's level carries earlier differences on, contracting
    # where its precisions dominate (chain_error_bound).
    _, bound = chain_error_bound(
        x, mix, *_schedule(kw), mala=case == "mala", seed=11, explicit_precision=kb.name == "cpp"
    )
    _within_bound(a.x, b.x, bound[-1], "final state")
    _within_bound(a.trajectory, b.trajectory, bound[k - 1 :: k], "trajectory")
    if case == "mala":
        assert torch.equal(a.accepted.cpu(), b.accepted)


@pytest.mark.parametrize("case", ["annealed", "mala"])
def test_wider_particles_match_reference(kernel_backend, case):
    # D = 6: two Philox groups per particle, the second one partial; MALA's uniform is group 2.
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(2, 6, seed=9, kind="full", spread=2.0)
    x = mix.sample(5, seed=8)
    if case == "mala":
        kw = dict(method="mala", steps=3, step_size=0.1)
    else:
        kw = dict(method="annealed", sigmas=[1.0, 0.3], steps_per_level=2, epsilon=0.004)
    a = scorefast.gmm_chain(x.to(kb.device), mix, seed=12, step_offset=9, backend=kb.name, **kw)
    b = scorefast.gmm_chain(x, mix, seed=12, step_offset=9, backend="reference", **kw)
    _, bound = chain_error_bound(
        x, mix, *_schedule(kw), mala=case == "mala", seed=12, step_offset=9, explicit_precision=kb.name == "cpp"
    )
    _within_bound(a.x, b.x, bound[-1], "final state")
    if case == "mala":
        assert torch.equal(a.accepted.cpu(), b.accepted)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_mala_acceptances_equal_the_cpp_kernel(kernel_backend, dtype):
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(4, 2, seed=3, kind="full", spread=2.0)
    x = mix.sample(_n(kb, 64), seed=4).to(dtype)
    kw = dict(method="mala", steps=6 if kb.interpreted else 30, step_size=0.2, seed=9, step_offset=2**32 - 40)
    res = scorefast.gmm_chain(x.to(kb.device), mix, backend=kb.name, **kw)
    cpp = scorefast.gmm_chain(x, mix, backend="cpp", **kw)
    same = res.accepted.cpu() == cpp.accepted
    if dtype == torch.float64:
        assert bool(same.all())
    else:  # float32 log-ratios may differ by rounding: one flipped decision is allowed
        assert int((~same).sum()) <= 1
    assert 0.2 < float(cpp.accepted.double().mean()) / kw["steps"] < 1.0


def test_chunked_particles_equal_whole_batch(kernel_backend, monkeypatch):
    kb = kernel_backend
    _require(kb)
    mix = ring()
    N = _n(kb, 50)
    x = mix.sample(N, seed=1).float().to(kb.device)
    kw = dict(method="ula", steps=4 if kb.interpreted else 10, step_size=0.01, seed=4, backend=kb.name)
    whole = scorefast.gmm_chain(x, mix, **kw).x
    cut = N // 3
    parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw).x for s, e in ((0, cut), (cut, N))]
    assert torch.equal(torch.cat(parts), whole)
    # Nor on the work split: a few particles per numba work item or Triton program.
    if kb.name == "numba":
        from scorefast.kernels.numba import chain

        monkeypatch.setattr(chain, "_CHUNK_WORK", 3 * kw["steps"] * mix.num_components)
    elif kb.name == "triton":
        from scorefast.kernels.triton import chain

        monkeypatch.setattr(chain, "MAX_BLOCK_N", 4)
    else:
        return
    assert torch.equal(scorefast.gmm_chain(x, mix, **kw).x, whole)


def test_trajectory_and_final_denoise(kernel_backend):
    kb = kernel_backend
    _require(kb)
    mix = ring()
    N = _n(kb, 20)
    x = mix.sample(N, seed=1).to(kb.device)
    start = x.clone()
    res = scorefast.gmm_chain(
        x, mix, method="ula", steps=6, step_size=0.01, trajectory_every=2, seed=2, backend=kb.name
    )
    assert res.trajectory.shape == (3, N, 2) and torch.equal(res.trajectory[-1], res.x)
    assert res.accepted is None
    assert torch.equal(x, start)  # the start is not modified
    ann = dict(method="annealed", sigmas=[2.0, 0.5], steps_per_level=2, epsilon=0.02, seed=3, backend=kb.name)
    plain = scorefast.gmm_chain(x, mix, **ann).x
    den = scorefast.gmm_chain(x, mix, final_denoise=True, **ann).x
    torch.testing.assert_close(den, plain + 0.25 * scorefast.gmm_score(plain, mix, sigma=0.5, backend=kb.name)[0])


def test_opcheck(kernel_backend):
    kb = kernel_backend
    _require(kb)
    if kb.interpreted:
        pytest.skip("opcheck traces the op; interpreted Triton kernels cannot be traced")
    mix = random_mixture(2, 3, seed=8, kind="isotropic")
    x = mix.sample(16, seed=1).float().to(kb.device)
    res = scorefast.gmm_chain(x, mix, method="mala", steps=5, step_size=0.1, seed=1, backend=kb.name)
    assert res.x.dtype == torch.float32 and res.accepted.dtype == torch.int64
    p = mix.kernel_params(torch.float32, x.device, None, per_point=True)
    f32 = dict(dtype=torch.float32, device=x.device)
    args = (
        x.clone(),
        p["means"],
        p["var"],
        p["log_const"],
        p["factor"],
        torch.full((4,), 0.1, **f32),
        torch.zeros(4, **f32),
        True,
        3,
        0,
        0,
        2,
        torch.empty(2, 16, 3, **f32),
        torch.zeros(16, dtype=torch.int64, device=x.device),
    )
    torch.library.opcheck(backend_registry.op_namespace(kb.name).gmm_chain_.default, args)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(step_size=torch.full((4,), 0.1, dtype=torch.float64)), "step_size"),
        (dict(sigma2=torch.zeros(3)), "sigma2"),
        (dict(trajectory=torch.empty(3, 8, 2)), "trajectory"),
        (dict(accepted=None), "accepted"),
        (dict(x=torch.zeros(2, 8).t()), "contiguous"),
        (dict(step_offset=2**32 - 3), "2\\^32"),
        (dict(log_const=torch.zeros(3)), "log_const"),
    ],
)
def test_op_errors_name_the_argument(kernel_backend, change, match):
    kb = kernel_backend
    _require(kb)
    p = ring().kernel_params(torch.float32, kb.device, None, per_point=True)
    args = dict(
        x=torch.zeros(8, 2),
        means=p["means"],
        var=p["var"],
        log_const=p["log_const"],
        factor=p["factor"],
        step_size=torch.full((4,), 0.1),
        sigma2=torch.zeros(4),
        mala=True,
        seed=0,
        step_offset=0,
        particle_offset=0,
        trajectory_every=2,
        trajectory=torch.empty(2, 8, 2),
        accepted=torch.zeros(8, dtype=torch.int64),
    )
    args.update(change)
    args = {k: v.to(kb.device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    with pytest.raises(RuntimeError, match=match):
        backend_registry.op_namespace(kb.name).gmm_chain_(*args.values())


@pytest.mark.parametrize("kind", KINDS)
def test_nan_noise_level_gives_nan_from_its_step_on(kernel_backend, kind):
    # The op does not check the schedule's values: a NaN sigma^2 at step 2 makes every particle
    # NaN from there on (the C++ full-covariance chain at D = 12 keeps one precision table per
    # distinct sigma^2: a NaN reuses its table rather than forming one per step and block).
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(3, 12, seed=4, kind=kind, spread=2.0)
    x = mix.sample(_n(kb, 20), seed=1).float().to(kb.device)
    steps = [(0.01, 0.5), (0.01, 0.5), (0.01, float("nan")), (0.01, 0.5)]
    before, _, _ = _chain_op(kb, x, mix, steps[:2], mala=False, seed=3, step_offset=0)
    assert bool(before.isfinite().all())
    after, _, traj = _chain_op(kb, x, mix, steps, mala=False, seed=3, step_offset=0, trajectory_every=1)
    assert torch.equal(traj[1], before)
    assert bool(traj[2].isnan().all()) and bool(after.isnan().all())


def test_schedule_returning_to_a_noise_level_equals_one_step_chains(kernel_backend):
    # sigma^2 goes 0.5, 0.1, 0.5, 0.1: the C++ full-covariance chain at D = 12 forms two
    # precision tables and switches between them; each step must equal a one-step chain.
    kb = kernel_backend
    _require(kb)
    mix = random_mixture(3, 12, seed=5, kind="full", spread=2.0)
    x = mix.sample(_n(kb, 19), seed=2).float().to(kb.device)
    steps = [(0.01, 0.5), (0.02, 0.1), (0.01, 0.5), (0.02, 0.1)]
    whole, _, _ = _chain_op(kb, x, mix, steps, mala=False, seed=9, step_offset=0)
    y = x
    for t, step in enumerate(steps):
        y, _, _ = _chain_op(kb, y, mix, [step], mala=False, seed=9, step_offset=t)
    assert torch.equal(whole, y)


def test_sampler_on_a_mixture_runs_the_fused_chain_of_its_backend(kernel_backend):
    kb = kernel_backend
    _require(kb)
    mix = ring()
    x = mix.sample(_n(kb, 40), seed=1).float().to(kb.device)
    kw = dict(steps=4, step_size=0.01, seed=3, backend=kb.name)
    assert torch.equal(samplers.langevin(mix, x.clone(), **kw), scorefast.gmm_chain(x, mix, method="ula", **kw).x)


def test_auto_passes_over_backends_without_a_chain_kernel(monkeypatch):
    # The scorefast namespace declares its ops for cpp and cuda alike; an extension built
    # without CUDA has no CUDA kernels: were cuda reported available, 'auto' would go on to
    # triton, and asking for cuda would name the missing kernel.
    from scorefast import _extension

    if _extension.extension() is None or _extension.extension().built_with_cuda():
        pytest.skip("needs the extension built without CUDA kernels")
    monkeypatch.delenv("SCOREFAST_CUDA_EMULATOR", raising=False)  # the extension's own cuda kernels
    if not backend_registry.status("triton").available:
        require_or_skip("triton", f"triton: {backend_registry.status('triton').reason}")
    monkeypatch.setattr(
        backend_registry, "status", lambda name: backend_registry.BackendStatus(name, True, ("cpu", "cuda"))
    )
    backend_registry._resolve.cache_clear()  # choices made under the real status
    try:
        assert not backend_registry.has_op("cuda", "gmm_chain_")
        assert backend_registry.resolve("auto", torch.device("cuda"), "gmm_chain_") == "triton"
        with pytest.raises(NotImplementedError, match="gmm_chain_"):
            backend_registry.resolve("cuda", torch.device("cuda"), "gmm_chain_")
    finally:
        backend_registry._resolve.cache_clear()  # forget the choices made under the fake status


def test_triton_chain_dimension_limit():
    status = backend_registry.status("triton")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not status.available:
        require_or_skip("triton", f"triton: {status.reason}")
    if device.type not in status.devices:
        pytest.skip(f"triton does not run on {device}")
    from scorefast.kernels.triton.gmm import MAX_BLOCK_D

    D = MAX_BLOCK_D + 1
    mix = random_mixture(1, D, seed=0)
    with pytest.raises(NotImplementedError, match=f"D <= {MAX_BLOCK_D}"):
        scorefast.gmm_chain(torch.zeros(2, D, device=device), mix, steps=1, step_size=0.1, backend="triton")


def test_numba_storage_rounding_matches_torch():
    if not backend_registry.status("numba").available:
        require_or_skip("numba", f"numba: {backend_registry.status('numba').reason}")
    import numba
    import numpy as np

    from scorefast.kernels.numba import chain

    @numba.njit
    def round_all(v, kind, out):
        for i in range(v.shape[0]):
            out[i] = chain.round_to_storage(v[i], kind)

    # Every 16-bit pattern as the upper half of a float32, with the lower half a tie, just
    # below and above one, and zero; float16's ties (13 dropped bits) at every exponent; and
    # random float32 values (subnormals, overflow, inf and NaN included).
    hi = torch.arange(2**16, dtype=torch.int64) << 16
    f16_ties = (torch.arange(2**19, dtype=torch.int64) << 13) | 0x1000
    rand = torch.randint(0, 2**32, (200_000,), generator=torch.Generator().manual_seed(0), dtype=torch.int64)
    bits = torch.cat([hi, hi | 0x8000, hi | 0x7FFF, hi | 0x8001, f16_ties, f16_ties - 1, f16_ties + 1, rand])
    v = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)
    for kind, dtype in ((chain._FLOAT16, torch.float16), (chain._BFLOAT16, torch.bfloat16)):
        out = np.empty(v.shape[0], np.float32)
        round_all(v.numpy(), kind, out)
        expected = v.to(dtype).float()
        got = torch.from_numpy(out)
        same = (got.view(torch.int32) == expected.view(torch.int32)) | (got.isnan() & expected.isnan())
        assert bool(same.all()), f"{dtype}: {int((~same).sum())} values rounded differently, e.g. {v[~same][:4]}"


# ---------------------------------------------------------------------------------------
# The public function, and the C++ kernel's own paths


def test_mala_chain_equals_the_generic_mala_sampler():
    mix = random_mixture(4, 2, seed=3, kind="full", spread=2.0)
    x = mix.sample(200, seed=4)
    res = scorefast.gmm_chain(x, mix, method="mala", steps=30, step_size=0.2, seed=9, backend="cpp")
    y, diag = samplers.mala(
        lambda z: mix.score(z, backend="cpp"),
        lambda z: mix.log_prob(z, backend="cpp"),
        x.clone(),
        steps=30,
        step_size=0.2,
        seed=9,
    )
    torch.testing.assert_close(res.x, y, rtol=1e-10, atol=1e-10)
    assert torch.equal(res.accepted.double() / 30, diag["acceptance_rate"])
    assert 0.2 < float(res.accepted.double().mean() / 30) < 1.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="hmc", steps=3, step_size=0.1), ValueError, "method"),
        (dict(method="annealed", sigmas=[1.0, 2.0]), ValueError, "decreasing"),
        (dict(method="annealed"), TypeError, "sigmas"),
        (dict(method="ula", step_size=0.1), TypeError, "steps"),
        (dict(method="ula", steps=3, step_size=-0.1), ValueError, "step_size"),
        (dict(method="ula", steps=2, step_size=torch.tensor([0.1, 0.1, 0.1])), ValueError, "schedule"),
        (dict(method="ula", steps=3, step_size=0.1, backend="cuda"), RuntimeError, "cuda"),
        (dict(method="ula", steps=3, step_size=0.1, step_offset=2**32 - 2), ValueError, "2\\^32"),
    ],
)
def test_errors(kwargs, error, match, monkeypatch):
    mix = ring()
    if kwargs.get("backend") == "cuda":
        monkeypatch.delenv("SCOREFAST_CUDA_EMULATOR", raising=False)  # the real cuda backend, on CPU tensors
        if backend_registry.status("cuda").available:
            pytest.skip("cuda runs here: tensors on the CPU give a device error instead")
    with pytest.raises(error, match=match):
        scorefast.gmm_chain(torch.zeros(4, 2), mix, **kwargs)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("D", [1, 2, 4, 7, 12, 37, 70])
def test_float32_vector_path_matches_reference(kind, case, D):
    # float32 with D <= 8 runs whole vectors of particles, D > 8 blocks of particles through
    # the two-pass evaluator (isotropic, diagonal; D = 12 and 37 with a partial vector of
    # coordinates) or, for full covariances, the explicit precisions (one noise level) and the
    # factor form (annealed; D = 70: more vectors per row than it keeps in registers); against
    # the float64 reference chain.
    mix = random_mixture(3, D, seed=D, kind=kind, spread=2.0)
    x = mix.sample(37, seed=1).float()  # 37: a partial vector at the end
    a = _float32_chain_within_bound(mix, x, CASES[case], every=5)
    assert a.x.dtype == torch.float32


@pytest.mark.parametrize("kind", ["isotropic", "diagonal"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("K", [8, 12, 20])
def test_float32_two_pass_chain_with_either_block_matches_reference(kind, case, K):
    # The two-pass evaluator runs blocks of 16 particles where the components fit one AVX-512
    # vector (K = 12; K = 8 in a vector of 8 components) and of 8 where they do not (K = 20);
    # 37 particles leave a partial block (5 in the second tile of 8 of the last 16), D = 37 a
    # partial vector of coordinates.
    mix = random_mixture(K, 37, seed=K, kind=kind, spread=2.0)
    _float32_chain_within_bound(mix, mix.sample(37, seed=1).float(), CASES[case], every=5)


@pytest.mark.parametrize("kind", ["isotropic", "diagonal"])
@pytest.mark.parametrize("case", ["ula", "mala"])
@pytest.mark.parametrize("K", [5, 12, 20])
def test_two_pass_chain_equals_one_step_chains_bit_for_bit(kind, case, K):
    # The blocked chains (16 particles a block for K = 5 and 12 in the AVX-512 build, K = 5 in
    # vectors of 8 components, 8 particles for K = 20)
    # carry the state, its score and log-density from step to step, and a MALA step takes its
    # proposal's buffers as the state: T one-step chains give the same bits.
    mix = random_mixture(K, 37, seed=K, kind=kind, spread=2.0)
    x = mix.sample(37, seed=3).float()
    kw = dict(method=case, step_size=0.1 if case == "mala" else 0.05, seed=11, backend="cpp")
    fused = scorefast.gmm_chain(x, mix, steps=6, step_offset=4, **kw)
    y, accepted = x, torch.zeros(37, dtype=torch.int64)
    for t in range(6):
        one = scorefast.gmm_chain(y, mix, steps=1, step_offset=4 + t, **kw)
        y = one.x
        if case == "mala":
            accepted += one.accepted
    assert torch.equal(fused.x, y)
    if case == "mala":
        assert torch.equal(fused.accepted, accepted)
        assert 0 < int(accepted.sum()) < 6 * 37  # both outcomes happen


@pytest.mark.parametrize("D", [9, 14, 17, 20, 33])
@pytest.mark.parametrize("case", list(CASES))
def test_float32_full_chain_through_the_precision_register_tiles_matches_reference(D, case):
    # The explicit-precision evaluator: blocks of 16 particles (AVX-512 build) or 8 in vector
    # lanes, through the register tiles (D <= 17) or chunks of coordinates (20: one whole chunk
    # and a partial one in the AVX-512 build; 33: two and a single coordinate); 19 particles
    # leave a partial block.
    mix = random_mixture(4, D, seed=D, kind="full", spread=2.0)
    x = mix.sample(19, seed=4).float()
    _float32_chain_within_bound(mix, x, dict(CASES[case], steps=6) if case != "annealed" else CASES[case], every=3)


@pytest.mark.parametrize("case", ["ula", "mala"])
def test_float32_full_chain_with_many_components_matches_reference(case):
    # Full covariances at D >= 9 with one noise level run the explicit-precision tiles while
    # the K precisions stay in cache (K D^2 <= 2^19); K = 1030 at D = 32 is past that and takes
    # the factor-form evaluator with its online log-sum-exp.
    mix = random_mixture(1030, 32, seed=3, kind="full", spread=2.0)
    x = mix.sample(9, seed=1).float()  # a block of 8 and a partial one
    _float32_chain_within_bound(mix, x, dict(CASES[case], steps=2), every=1)


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


@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("K", [5, 20])
def test_blocked_chain_independent_of_chunking(kind, case, K):
    # D > 4: blocks of particles (isotropic and diagonal: 16 where the components fit one
    # AVX-512 vector, else 8); a block cut short by a chunk boundary gives the same bits.
    mix = random_mixture(K, 9, seed=2, kind=kind, spread=2.0)
    x = mix.sample(23, seed=5).float()
    kw = dict(CASES[case], seed=17, backend="cpp")
    whole = scorefast.gmm_chain(x, mix, **kw)
    parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw) for s, e in ((0, 6), (6, 23))]
    assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
    if case == "mala":
        assert torch.equal(torch.cat([p.accepted for p in parts]), whole.accepted)


@pytest.mark.parametrize("D, kind", [(2, "full"), (9, "isotropic"), (9, "diagonal")])
def test_vector_chain_is_the_same_on_every_cpu_kernel_build(D, kind):
    # D = 2: particles in vector lanes; D = 9: blocks of 16 in the AVX-512 build, 8 in the
    # others (29: a short block at the end), with each build's MALA uniforms drawn a vector of
    # particles at a time
    mix = random_mixture(3, D, seed=4, kind=kind, spread=2.0)
    x = mix.sample(29, seed=2).float()
    results = on_each_cpu_isa(
        lambda isa: scorefast.gmm_chain(x, mix, method="mala", steps=10, step_size=0.05, seed=6, backend="cpp")
    )
    base = results["generic"]
    for isa, res in results.items():
        # the builds' normals differ within the noise budget only
        torch.testing.assert_close(res.x, base.x, rtol=0, atol=1e-4)
        assert int((res.accepted != base.accepted).sum()) <= 1, isa


class _Cpp:
    name = "cpp"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    "D, kind", [(2, "isotropic"), (3, "full"), (6, "diagonal"), (7, "full"), (9, "diagonal"), (9, "full")]
)
@pytest.mark.parametrize("case", ["ula", "annealed"])
def test_16bit_chain_is_the_float32_chain_rounded_every_step(dtype, D, kind, case):
    # 16-bit states run the float32 vector chains (D <= 4: particles in lanes; D = 9: blocks),
    # rounded to their storage after every update: each step equals the float32 step of the
    # rounded state, rounded, bit for bit, on every CPU kernel build (each rounds its own way:
    # whole vectors, the hardware's float16 conversions, or lane by lane). 37 particles: a
    # partial vector and block at the end.
    mix = random_mixture(3, D, seed=D, kind=kind, spread=2.0)
    x = mix.sample(37, seed=1).to(dtype)
    steps = [(a, 0.0 if s is None else s * s) for s, a in _levels(CASES[case])]

    def check(isa):
        fused, _, traj = _chain_op(_Cpp, x, mix, steps, False, seed=SEED_TOP_BIT, step_offset=3, trajectory_every=5)
        y = x
        for t, step in enumerate(steps):
            y32, _, _ = _chain_op(_Cpp, y.float(), mix, [step], False, seed=SEED_TOP_BIT, step_offset=3 + t)
            y = y32.to(dtype)
            if (t + 1) % 5 == 0:
                assert torch.equal(traj[t // 5], y), f"{isa}: trajectory frame {t // 5}"
        assert fused.dtype == dtype
        assert torch.equal(fused, y), isa

    on_each_cpu_isa(check)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16bit_chain_rounds_overflow_subnormals_and_nan_as_torch(dtype):
    # One ULA step that overflows the storage (a mean far beyond the state), one whose result
    # is subnormal in float16 (a tiny state, a tiny step), and NaN states: the stored bits are
    # torch's rounding of the float32 step, NaN where it is NaN.
    far = scorefast.targets.GaussianMixture(torch.tensor([[1e6, -1e6]], dtype=torch.float64))
    near = scorefast.targets.GaussianMixture(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    big = torch.full((37, 2), 6.0e4)
    tiny = torch.linspace(-3e-5, 3e-5, 74).reshape(37, 2)
    for mix, x0, a in ((far, big, 0.05), (near, tiny, 1e-12)):
        x0 = x0.clone()
        x0[5, 0] = float("nan")
        x = x0.to(dtype)

        def check(isa, mix=mix, x=x, a=a):
            out, _, _ = _chain_op(_Cpp, x, mix, [(a, 0.0)], False, seed=3, step_offset=0)
            want = _chain_op(_Cpp, x.float(), mix, [(a, 0.0)], False, seed=3, step_offset=0)[0].to(dtype)
            assert torch.equal(out.isnan(), want.isnan()) and bool(out[5, 0].isnan()), isa
            finite = ~want.isnan()
            assert torch.equal(out[finite], want[finite]), isa
            return out

        out = on_each_cpu_isa(check)["generic"]
        if mix is far:
            assert bool(out.isinf().any()) == (dtype == torch.float16)  # beyond float16's range
        elif dtype == torch.float16:
            assert bool(((out != 0) & (out.abs() < 2.0**-14)).any())  # float16 subnormals occur


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [1, 2, 6, 9])
@pytest.mark.parametrize("case", ["ula", "mala"])
def test_chain_independent_of_chunking_in_every_storage_type(dtype, D, case):
    # float64 states run blocks of up to 64 particles, 16-bit ones the vector chains: a cut
    # inside a block (at D <= 2 also inside a noise counter, 67 not a multiple of 4 / D) gives
    # the same bits.
    mix = random_mixture(3, D, seed=D, kind="diagonal", spread=2.0)
    x = mix.sample(150, seed=5).to(dtype)
    kw = dict(CASES[case], steps=6, seed=17, backend="cpp")
    whole = scorefast.gmm_chain(x, mix, **kw)
    parts = [scorefast.gmm_chain(x[s:e], mix, particle_offset=s, **kw) for s, e in ((0, 67), (67, 150))]
    assert whole.x.dtype == dtype
    assert torch.equal(torch.cat([p.x for p in parts]), whole.x)
    if case == "mala":
        assert torch.equal(torch.cat([p.accepted for p in parts]), whole.accepted)
        assert 0 < int(whole.accepted.sum()) < 150 * 6
