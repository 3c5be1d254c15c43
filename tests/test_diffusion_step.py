"""reverse_step and snr_corrector_step: every backend against the float64 reference within the
error budget (scalar and per-particle coefficients, guidance, clipping, clamp, dtypes), in-place,
strides, NaN, errors, opcheck, torch.compile with a changing step counter, autograd, and the
samplers they fuse (DDPM ancestral, DDIM with eta, VE / VP reverse SDE, the Langevin corrector
with diffusers' batch-mean rule) each as one call against its eager formula."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MAX_RADIUS, NOISE_REL_TOL, assert_within, require_or_skip

import scorefast
from scorefast import backend_registry
from scorefast.ops.diffusion import reverse_step_ref, snr_corrector_step_ref
from scorefast.reference import normal_like_ref
from scorefast.testing.diffusion_budgets import corrector_tolerance, reverse_step_tolerance

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
SHAPES = [(1, 1), (5, 2), (3, 3), (4, 5, 3), (2, 33)]


def _randn(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)


def _pp(P, seed, lo, hi, device):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(P, generator=g, dtype=torch.float64)).to(device)


# Each case switches features on: public kwargs; "pp" marks a per-particle tensor (signed for the
# coefficients of x and g, >= 0 for the noise scale).
REVERSE_CASES = {
    "scalar": dict(x_coef=1.02, score_coef=-0.3, noise_scale=0.2),
    "per_particle": dict(x_coef="pp", score_coef="pp", noise_scale="pp"),
    "per_particle_mixed": dict(x_coef=0.97, score_coef="pp", noise_scale=0.1),
    "deterministic": dict(x_coef=1.1, score_coef=0.4),
    "guided_clip_clamp": dict(
        x_coef="pp", score_coef=0.5, noise_scale=0.3, guidance=2.5, max_score_norm=0.8, clamp=(-0.7, 0.9)
    ),
    "explicit_noise": dict(x_coef=0.9, score_coef=-0.2, noise_scale="pp", noise="z"),
    "offset": dict(score_coef=0.1, noise_scale=0.5, particle_offset=2**32 - 2, step=2**32 - 1, seed=2**64 - 5),
}


def _reverse_kwargs(case, x):
    kw = dict(REVERSE_CASES[case])
    P = x.shape[0]
    ranges = {"x_coef": (0.5, 1.5), "score_coef": (-1.0, 1.0), "noise_scale": (0.0, 0.6)}
    for i, name in enumerate(ranges):
        if kw.get(name) == "pp":
            kw[name] = _pp(P, 10 + i, *ranges[name], x.device)
    if "guidance" in kw:
        kw["score_cond"] = _randn(x.shape, x.dtype, x.device, 77)
    if kw.get("noise") == "z":
        kw["noise"] = _randn(x.shape, x.dtype, x.device, 78)
    else:
        kw.setdefault("seed", 123)
        kw.setdefault("step", 9)
    return kw


def _cpu(v):
    return v.cpu() if isinstance(v, torch.Tensor) else v


def _reverse_ref64(x, s, kw):
    kw = {k: _cpu(v) for k, v in kw.items()}
    clamp = kw.get("clamp") or (None, None)
    f64 = lambda t: None if t is None else t.double()  # noqa: E731
    return reverse_step_ref(
        x.cpu().double(),
        s.cpu().double(),
        score_coef=kw["score_coef"],
        x_coef=kw.get("x_coef", 1.0),
        noise_scale=kw.get("noise_scale", 0.0),
        score_cond=f64(kw.get("score_cond")),
        guidance=kw.get("guidance", 1.0),
        noise=f64(kw.get("noise")),
        seed=kw.get("seed", 0),
        step=kw.get("step", 0),
        particle_offset=kw.get("particle_offset", 0),
        clamp_min=clamp[0],
        clamp_max=clamp[1],
        max_score_norm=kw.get("max_score_norm"),
        compute_dtype=torch.float64,
    )


def _check_reverse(kb, case, shape, dtype, seed):
    x, s = _randn(shape, dtype, kb.device, seed), _randn(shape, dtype, kb.device, seed + 100)
    kw = _reverse_kwargs(case, x)
    out = scorefast.reverse_step(x, s, backend=kb.name, **kw)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    ref = _reverse_ref64(x, s, kw)
    tol = reverse_step_tolerance(
        x.cpu(),
        s.cpu(),
        _cpu(kw.get("score_cond")),
        kw.get("guidance", 1.0),
        _cpu(kw.get("x_coef", 1.0)),
        _cpu(kw["score_coef"]),
        _cpu(kw.get("noise_scale", 0.0)),
        ref,
        dtype,
        noise_from_contract=kw.get("noise") is None,
    )
    assert_within(out.cpu(), ref, tol, f"{kb} {case} {shape} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(REVERSE_CASES))
def test_reverse_step_matches_reference(kernel_backend, case, dtype):
    shapes = SHAPES[:3] if kernel_backend.interpreted else SHAPES
    for i, shape in enumerate(shapes):
        _check_reverse(kernel_backend, case, shape, dtype, seed=i)


CORRECTOR_CASES = {
    "per_sample": dict(),
    "batch_mean": dict(batch_mean=True),
    "guided_clamp": dict(guidance=-0.6, clamp=(-1.0, 1.2)),
    "batch_mean_guided_offset": dict(batch_mean=True, guidance=1.5, particle_offset=2**40 + 3, step=2**32 - 1),
    "explicit_noise": dict(explicit_noise=True),
    "explicit_noise_guided": dict(explicit_noise=True, batch_mean=True, guidance=0.7, clamp=(-1.5, None)),
}


def _check_corrector(kb, case, shape, dtype, seed):
    x, s = _randn(shape, dtype, kb.device, seed), _randn(shape, dtype, kb.device, seed + 100)
    kw = dict(CORRECTOR_CASES[case], snr=0.16, seed=2**63 + 11)
    kw.setdefault("step", 4)
    if "guidance" in kw:
        kw["score_cond"] = _randn(shape, dtype, kb.device, seed + 200)
    noise = _randn(shape, dtype, kb.device, seed + 300) if kw.pop("explicit_noise", False) else None
    call = dict(kw)
    if noise is not None:  # an explicit z excludes the seed
        del call["seed"]
        call["noise"] = noise
    out, eps = scorefast.snr_corrector_step(x, s, backend=kb.name, **call)
    assert out.shape == x.shape and out.dtype == dtype
    assert eps.shape == (shape[0],) and eps.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    clamp = kw.get("clamp") or (None, None)
    sc = kw.get("score_cond")
    ref, ref_eps = snr_corrector_step_ref(
        x.cpu().double(),
        s.cpu().double(),
        snr=kw["snr"],
        batch_mean=kw.get("batch_mean", False),
        score_cond=None if sc is None else sc.cpu().double(),
        guidance=kw.get("guidance", 1.0),
        noise=None if noise is None else noise.cpu().double(),
        seed=kw["seed"],
        step=kw["step"],
        particle_offset=kw.get("particle_offset", 0),
        clamp_min=clamp[0],
        clamp_max=clamp[1],
    )
    tol, eps_tol = corrector_tolerance(
        x.cpu(),
        s.cpu(),
        None if sc is None else sc.cpu(),
        kw.get("guidance", 1.0),
        kw.get("batch_mean", False),
        kw["seed"],
        kw["step"],
        kw.get("particle_offset", 0),
        ref,
        ref_eps,
        dtype,
        None if noise is None else noise.cpu(),
    )
    what = f"{kb} {case} {shape} {dtype}"
    assert_within(eps.cpu(), ref_eps, eps_tol, what + " step sizes")
    assert_within(out.cpu(), ref, tol, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CORRECTOR_CASES))
def test_corrector_matches_reference(kernel_backend, case, dtype):
    shapes = SHAPES[1:3] if kernel_backend.interpreted else SHAPES
    for i, shape in enumerate(shapes):
        _check_corrector(kernel_backend, case, shape, dtype, seed=i)


@pytest.mark.parametrize("batch_mean", [False, True])
def test_corrector_large_particles(kernel_backend, batch_mean):
    # D > 2048: the CUDA kernels take one block per particle, the CPU several noise tiles.
    if kernel_backend.interpreted:
        pytest.skip("too large for the Triton interpreter")
    _check_corrector(kernel_backend, "batch_mean" if batch_mean else "per_sample", (3, 2 * 2048 + 3), torch.float32, 0)
    x, s = _randn((3, 4099), torch.float32, "cpu", 1), _randn((3, 4099), torch.float32, "cpu", 2)
    kw = dict(x_coef=0.9, score_coef=0.3, noise_scale=0.2, seed=1, step=2, max_score_norm=5.0)
    out = scorefast.reverse_step(
        x.to(kernel_backend.device), s.to(kernel_backend.device), backend=kernel_backend.name, **kw
    )
    ref = _reverse_ref64(x, s, kw)
    tol = reverse_step_tolerance(x, s, None, 1.0, 0.9, 0.3, 0.2, ref, torch.float32, True)
    assert_within(out.cpu(), ref, tol, f"{kernel_backend} reverse clip D=4099")


# ---------------------------------------------------------------------------------------
# In place, strides, NaN.


def test_inplace_equals_out_of_place(kernel_backend):
    x, s = (
        _randn((6, 7), torch.float32, kernel_backend.device, 0),
        _randn((6, 7), torch.float32, kernel_backend.device, 1),
    )
    kw = dict(x_coef=0.9, score_coef=-0.2, noise_scale=0.3, seed=4, step=2, backend=kernel_backend.name)
    out = scorefast.reverse_step(x, s, **kw)
    y = x.clone()
    assert scorefast.reverse_step_(y, s, **kw) is y
    assert torch.equal(y, out)
    for batch_mean in (False, True):
        ckw = dict(snr=0.2, batch_mean=batch_mean, seed=4, step=2, backend=kernel_backend.name)
        out, eps = scorefast.snr_corrector_step(x, s, **ckw)
        y = x.clone()
        ret, eps_ = scorefast.snr_corrector_step_(y, s, **ckw)
        assert ret is y and torch.equal(y, out) and torch.equal(eps, eps_)


def test_noncontiguous_inputs(kernel_backend):
    # Transposed x, strided score: the noise follows the logical [P, D] index, not memory.
    dev = kernel_backend.device
    base = _randn((9, 6), torch.float32, dev, 1)
    x = base.t()
    s = _randn((6, 18), torch.float32, dev, 2)[:, ::2]
    a = _pp(6, 3, -1.0, 1.0, dev).float()
    assert not x.is_contiguous() and not s.is_contiguous()
    kw = dict(x_coef=1.1, score_coef=a[::1], noise_scale=0.2, seed=6, step=1, backend=kernel_backend.name)
    expected = scorefast.reverse_step(x.contiguous(), s.contiguous(), **kw)
    assert torch.equal(scorefast.reverse_step(x, s, **kw), expected)
    y_base = base.clone()
    scorefast.reverse_step_(y_base.t(), s, **kw)
    assert torch.equal(y_base.t(), expected)
    ckw = dict(snr=0.3, seed=6, step=1, backend=kernel_backend.name)
    c_expected, eps = scorefast.snr_corrector_step(x.contiguous(), s.contiguous(), **ckw)
    assert torch.equal(scorefast.snr_corrector_step(x, s, **ckw)[0], c_expected)
    y_base = base.clone()
    _, eps_ = scorefast.snr_corrector_step_(y_base.t(), s, **ckw)
    assert torch.equal(y_base.t(), c_expected) and torch.equal(eps_, eps)


def test_nan_in_nan_out(kernel_backend):
    dev = kernel_backend.device
    x, s = _randn((4, 5), torch.float32, dev, 0), _randn((4, 5), torch.float32, dev, 1)
    x[1, 2] = float("nan")
    s[2, 0] = float("nan")
    for kw in (dict(), dict(clamp=(-1.0, 1.0)), dict(max_score_norm=1.0)):
        out = scorefast.reverse_step(x, s, score_coef=0.1, noise_scale=0.1, seed=1, backend=kernel_backend.name, **kw)
        assert torch.isnan(out[1, 2]) and torch.isnan(out[2, 0]), kw
        if "max_score_norm" in kw:  # the NaN score poisons its particle's norm, only that particle
            assert torch.isnan(out[2]).all()
        assert torch.isfinite(out[[0, 3]]).all(), kw
    z = _randn((4, 5), torch.float32, dev, 2)
    for noise in (dict(seed=1), dict(noise=z)):
        out, eps = scorefast.snr_corrector_step(x, s, snr=0.2, backend=kernel_backend.name, **noise)
        assert torch.isnan(out[1, 2]) and torch.isnan(out[2]).all() and torch.isnan(eps[2])
        assert torch.isfinite(out[[0, 3]]).all() and torch.isfinite(eps[[0, 1, 3]]).all()
        out, eps = scorefast.snr_corrector_step(x, s, snr=0.2, batch_mean=True, backend=kernel_backend.name, **noise)
        assert torch.isnan(eps).all() and torch.isnan(out).all()  # a NaN norm poisons the batch mean


def test_empty_batch(kernel_backend):
    x = torch.empty(0, 3, device=kernel_backend.device)
    out, eps = scorefast.snr_corrector_step(x, x, snr=0.1, noise=x, backend=kernel_backend.name)
    assert out.shape == (0, 3) and eps.shape == (0,)
    assert scorefast.reverse_step(x, x, score_coef=0.1, noise_scale=0.1, seed=1, backend=kernel_backend.name).shape == (
        0,
        3,
    )
    out, eps = scorefast.snr_corrector_step(x, x, snr=0.1, seed=1, backend=kernel_backend.name)
    assert out.shape == (0, 3) and eps.shape == (0,)


def test_inplace_with_partially_overlapping_inputs_raises(kernel_backend):
    buf = torch.randn(2002, 1, device=kernel_backend.device)
    with pytest.raises(ValueError, match="score partially overlaps x"):
        scorefast.reverse_step_(buf[:-1], buf[1:], score_coef=0.1, seed=1, backend=kernel_backend.name)
    with pytest.raises(ValueError, match="score partially overlaps x"):
        scorefast.snr_corrector_step_(buf[:-1], buf[1:], snr=0.1, seed=1, backend=kernel_backend.name)
    ns = backend_registry.op_namespace(kernel_backend.name)
    with pytest.raises(RuntimeError, match="score partially overlaps x"):
        ns.reverse_step_(buf[:-1], buf[1:], None, 1.0, 1.0, None, 0.1, None, 0.0, None, None, 0, 0, 0, None, None, None)
    with pytest.raises(RuntimeError, match="score partially overlaps x"):
        ns.snr_corrector_step_(buf[:-1], buf[1:], None, 1.0, 0.1, False, 0, 0, 0, None, None)


# ---------------------------------------------------------------------------------------
# Errors: each names the argument and what was expected.

_REVERSE_ERRORS = [
    (dict(x=torch.zeros(4, 3, dtype=torch.int64)), TypeError, "x must be float32"),
    (dict(score=torch.zeros(4, 2)), ValueError, r"score must have the shape of x \[4, 3\]"),
    (dict(score_coef=float("nan")), ValueError, "score_coef must be finite"),
    (dict(score_coef="0.1"), TypeError, "score_coef must be a real number"),
    (dict(x_coef=float("inf")), ValueError, "x_coef must be finite"),
    (dict(x_coef=torch.tensor([1.0, float("nan"), 1.0, 1.0])), ValueError, "x_coef must be finite .* at particle 1"),
    (dict(score_coef=torch.ones(3)), ValueError, r"score_coef tensor must have shape \[P\] = \[4\]"),
    (dict(noise_scale=-0.1), ValueError, "noise_scale must be >= 0"),
    (dict(noise_scale=torch.tensor([0.1, 0.1, -1.0, 0.1])), ValueError, "noise_scale must be finite and >= 0"),
    (dict(x_coef=1e39), ValueError, "x_coef must be finite in the math dtype of x"),
    (dict(clamp=(1.0, -1.0)), ValueError, r"clamp min \(1.0\) must be <= clamp max"),
    (dict(clamp=1.0), TypeError, "clamp must be a"),
    (dict(max_score_norm=0.0), ValueError, "max_score_norm must be > 0"),
    (dict(guidance=2.0), ValueError, "guidance needs score_cond"),
    (dict(noise=torch.zeros(4, 3), seed=1), ValueError, "either noise= .* or seed="),
    (dict(step=2**32), ValueError, "step must be in"),
    (dict(seed=-1), ValueError, "seed must be in"),
]


@pytest.mark.parametrize("i", range(len(_REVERSE_ERRORS)))
def test_reverse_step_errors_name_the_argument(i):
    overrides, error, match = _REVERSE_ERRORS[i]
    kw = dict(x=torch.zeros(4, 3), score=torch.zeros(4, 3), score_coef=0.1, seed=1)
    kw.update(overrides)
    if kw.get("noise") is not None and "seed" not in overrides:
        kw.pop("seed")
    with pytest.raises(error, match=match):
        scorefast.reverse_step(kw.pop("x"), kw.pop("score"), **kw)


_CORRECTOR_ERRORS = [
    (dict(snr=-0.1), ValueError, "snr must be >= 0"),
    (dict(snr=float("nan")), ValueError, "snr must be finite"),
    (dict(batch_mean=1), TypeError, "batch_mean must be a bool"),
    (dict(score=torch.zeros(4, 3, dtype=torch.int32)), TypeError, "score must be float32"),
    (dict(score_cond=torch.zeros(2, 3)), ValueError, "score_cond must have the shape of x"),
    (dict(particle_offset=-1), ValueError, "particle_offset must be in"),
    (dict(clamp=(None, float("nan"))), ValueError, "clamp max must be finite"),
    (dict(noise=torch.zeros(4, 3), seed=1), ValueError, "either noise= .* or seed="),
    (dict(noise=torch.zeros(4, 2)), ValueError, r"noise must have the shape of x \[4, 3\]"),
    (dict(noise=torch.zeros(4, 3, dtype=torch.int32)), TypeError, "noise must be float32"),
]


@pytest.mark.parametrize("i", range(len(_CORRECTOR_ERRORS)))
def test_corrector_errors_name_the_argument(i):
    overrides, error, match = _CORRECTOR_ERRORS[i]
    kw = dict(x=torch.zeros(4, 3), score=torch.zeros(4, 3), snr=0.1, seed=1)
    if overrides.get("noise") is not None and "seed" not in overrides:
        kw.pop("seed")
    kw.update(overrides)
    with pytest.raises(error, match=match):
        scorefast.snr_corrector_step(kw.pop("x"), kw.pop("score"), **kw)


def test_op_level_checks_guard_direct_calls(kernel_backend):
    # torch.ops.<namespace>.* called directly still gets named errors, not crashes.
    ns = backend_registry.op_namespace(kernel_backend.name)
    x = torch.zeros(4, 3, device=kernel_backend.device)
    base = [x, x, None, 1.0, 1.0, None, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None]
    for i, value, match in [
        (1, torch.zeros(4, 2, device=x.device), "score must have the shape of x"),
        (4, float("nan"), "x_coef must be finite"),
        (5, torch.ones(4, dtype=torch.float64, device=x.device), "x_coef_per_particle must be Float"),
        (7, torch.ones(3, device=x.device), r"score_coef_per_particle must have shape \[P\] = \[4\]"),
        (8, -1.0, "noise_scale must be finite and >= 0"),
        (12, 2**32, "step must be in"),
        (14, 1.0, None),
    ]:
        bad = list(base)
        bad[i] = value
        if match is None:  # clamp_min > clamp_max
            bad[15] = 0.0
            match = r"clamp_min \(1(\.0)?\) must be <= clamp_max \(0(\.0)?\)"
        with pytest.raises(RuntimeError, match=match):
            ns.reverse_step(*bad)
    cbase = [x, x, None, 1.0, 0.1, False, 0, 0, 0, None, None]
    for i, value, match in [(4, -1.0, "snr must be finite and >= 0"), (7, -1, "step must be in")]:
        bad = list(cbase)
        bad[i] = value
        with pytest.raises(RuntimeError, match=match):
            ns.snr_corrector_step(*bad)


# ---------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile, autograd.


def _reverse_samples(device):
    g = torch.Generator().manual_seed(0)
    mk = lambda *sh: torch.randn(*sh, generator=g).to(device)  # noqa: E731
    pp = lambda: torch.rand(5, generator=g).to(device)  # noqa: E731
    return [
        [mk(5, 3), mk(5, 3), None, 1.0, 1.1, None, -0.2, None, 0.3, None, None, 7, 3, 0, None, None, None],
        [mk(5, 2, 2), mk(5, 2, 2), mk(5, 2, 2), 2.0, 1.0, pp(), 0.0, pp(), 0.0, pp(), None, -3, 1, 10, -1.0, 1.0, 2.0],
        [mk(5, 3), mk(5, 3), None, 1.0, 0.9, None, 0.1, None, 0.3, None, mk(5, 3), 0, 0, 0, None, 0.5, None],
        [mk(5, 3).requires_grad_(), mk(5, 3).requires_grad_(), None, 1.0, 0.8, None, 0.1, None, 0.2, None, None]
        + [1, 2, 0, None, None, None],
    ]


def _corrector_samples(device):
    g = torch.Generator().manual_seed(1)
    mk = lambda *sh: torch.randn(*sh, generator=g).to(device)  # noqa: E731
    return [
        [mk(5, 3), mk(5, 3), None, 1.0, 0.16, False, 7, 3, 0, None, None],
        [mk(4, 2, 3), mk(4, 2, 3), mk(4, 2, 3), 1.5, 0.1, True, -5, 2, 9, -1.0, 1.0],
        [mk(5, 3).requires_grad_(), mk(5, 3), None, 1.0, 0.2, False, 1, 0, 0, None, 0.5],
    ]


def test_opcheck(kernel_backend):
    ns = backend_registry.op_namespace(kernel_backend.name)
    for op, op_, samples in (
        (ns.reverse_step.default, ns.reverse_step_.default, _reverse_samples(kernel_backend.device)),
        (ns.snr_corrector_step.default, ns.snr_corrector_step_.default, _corrector_samples(kernel_backend.device)),
    ):
        for args in samples:
            torch.library.opcheck(op, args)
            torch.library.opcheck(op_, [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args])


def _compile_count(fn, *args, iterations=12):
    """Graphs torch.compile(fullgraph=True) builds over ``iterations`` calls of fn(*args, it),
    each result equal to eager."""
    count = [0]

    def counting_backend(gm, example_inputs):
        count[0] += 1
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=counting_backend)
    for it in range(iterations):
        got, want = compiled(*args, it), fn(*args, it)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    torch._dynamo.reset()
    return count[0]


@pytest.mark.parametrize("backend", ["reference", "cpp", "numba", "triton", "cuda"])
def test_compile_fullgraph_with_a_changing_step(backend):
    status = backend_registry.status(backend)
    if not status.available:
        require_or_skip(backend, f"{backend}: {status.reason}")
    if backend in ("cuda", "triton") and "cuda" not in status.devices:
        pytest.skip(f"{backend} is emulated here: torch.compile cannot trace it")
    dev = torch.device("cuda" if backend in ("cuda", "triton") else "cpu")
    x = torch.randn(6, 4, device=dev)
    a = torch.linspace(-0.5, 0.5, 6, device=dev)

    def sample_step(x, it):
        y = scorefast.reverse_step(x, -x, x_coef=1.01, score_coef=a, noise_scale=0.1, seed=3, step=it, backend=backend)
        return scorefast.snr_corrector_step(y, -y, snr=0.16, seed=3, step=it, particle_offset=it, backend=backend)

    assert _compile_count(sample_step, x) <= 2


@pytest.mark.parametrize("features", ["plain", "guided_clamp", "per_particle"])
def test_reverse_step_autograd_matches_reference(kernel_backend, features):
    dtype = torch.float64 if kernel_backend.name != "triton" else torch.float32
    dev = kernel_backend.device
    leaves = {k: _randn((4, 5), dtype, dev, i) for i, k in enumerate(("x", "s", "sc", "z"))}
    kw = dict(x_coef=0.9, score_coef=-0.4, noise_scale=0.3)
    if features == "guided_clamp":
        kw.update(guidance=1.7, clamp=(-0.5, 0.5))
    if features == "per_particle":
        kw.update(x_coef=_pp(4, 1, 0.5, 1.5, dev).to(dtype), noise_scale=_pp(4, 2, 0.0, 1.0, dev).to(dtype))

    def grads(backend):
        ins = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
        extra = dict(score_cond=ins["sc"]) if "guidance" in kw else {}
        out = scorefast.reverse_step(ins["x"], ins["s"], noise=ins["z"], backend=backend, **kw, **extra)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
        (out * weights).sum().backward()
        return {k: v.grad for k, v in ins.items()}

    got, want = grads(kernel_backend.name), grads("reference")
    for k in want:
        if want[k] is None:
            assert got[k] is None or torch.count_nonzero(got[k]) == 0, k
        else:
            assert torch.allclose(got[k], want[k], rtol=1e-5, atol=1e-6), k


def test_corrector_autograd(kernel_backend):
    dev = kernel_backend.device
    x = _randn((4, 5), torch.float32, dev, 0).requires_grad_()
    s = _randn((4, 5), torch.float32, dev, 1)
    out, eps = scorefast.snr_corrector_step(x, s, snr=0.3, seed=1, clamp=(-0.5, None), backend=kernel_backend.name)
    assert not eps.requires_grad
    out.sum().backward()
    assert torch.equal(x.grad, (out > -0.5).to(x.dtype))  # the identity where not clamped
    s_leaf = s.clone().requires_grad_()
    out, _ = scorefast.snr_corrector_step(x, s_leaf, snr=0.3, seed=1, backend=kernel_backend.name)
    with pytest.raises(RuntimeError, match="step size depends on the score"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="does not track gradients"):
        scorefast.snr_corrector_step_(x.detach().clone().requires_grad_(), s, snr=0.3, backend=kernel_backend.name)


def test_corrector_with_explicit_noise_autograd(kernel_backend):
    # With an explicit z the step runs as norms plus reverse_step; gradients as the op's.
    dev = kernel_backend.device
    x = _randn((4, 5), torch.float32, dev, 0).requires_grad_()
    s, z = _randn((4, 5), torch.float32, dev, 1), _randn((4, 5), torch.float32, dev, 2)
    kw = dict(snr=0.3, noise=z, clamp=(-0.5, None), backend=kernel_backend.name)
    out, eps = scorefast.snr_corrector_step(x, s, **kw)
    assert not eps.requires_grad
    out.sum().backward()
    assert torch.equal(x.grad, (out > -0.5).to(x.dtype))
    for leaf in ("score", "noise"):
        s_in = s.clone().requires_grad_() if leaf == "score" else s
        z_in = z.clone().requires_grad_() if leaf == "noise" else z
        out, _ = scorefast.snr_corrector_step(x, s_in, **dict(kw, noise=z_in))
        with pytest.raises(RuntimeError, match="depends on their norms"):
            out.sum().backward()
    with pytest.raises(ValueError, match="seed"):
        scorefast.snr_corrector_step(x.detach(), s, snr=0.3, noise=z, seed=1, backend=kernel_backend.name)


def test_autograd_refuses_unsupported_gradients(kernel_backend):
    dev = kernel_backend.device
    x, s = _randn((4, 5), torch.float32, dev, 0), _randn((4, 5), torch.float32, dev, 1)
    a = torch.full((4,), 0.1, device=dev, requires_grad=True)
    out = scorefast.reverse_step(x, s, score_coef=a, seed=1, backend=kernel_backend.name)
    with pytest.raises(RuntimeError, match="per-particle x_coef, score_coef or noise_scale"):
        out.sum().backward()
    out = scorefast.reverse_step(
        x, s.clone().requires_grad_(), score_coef=0.1, max_score_norm=0.5, seed=1, backend=kernel_backend.name
    )
    with pytest.raises(RuntimeError, match="max_score_norm"):
        out.sum().backward()


# ---------------------------------------------------------------------------------------
# The samplers each op call fuses, against their eager formulas with the same noise.


def _schedule_case(kernel_backend, dtype=torch.float64):
    dev = kernel_backend.device
    x, g = _randn((6, 2, 3), dtype, dev, 5), _randn((6, 2, 3), dtype, dev, 6)
    z = scorefast.normal_like(x, seed=42, step=7, backend="reference").to(dtype)
    return x, g, z, dict(seed=42, step=7, backend=kernel_backend.name)


def _close(got, want, noise_scale):
    # The kernels' float32 normals are within r * NOISE_REL_TOL of the reference's; the rest is
    # float64 arithmetic in another order.
    atol = float(torch.as_tensor(noise_scale).abs().max()) * NOISE_REL_TOL * MAX_RADIUS
    torch.testing.assert_close(got, want, rtol=1e-12, atol=atol + 1e-12)


def test_ddpm_ancestral_step(kernel_backend):
    x, eps, z, kw = _schedule_case(kernel_backend)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas_bar = torch.cumprod(1 - betas, 0)
    t = 500
    alpha, beta, ab = 1 - betas[t], betas[t], alphas_bar[t]
    sigma = math.sqrt(beta * (1 - alphas_bar[t - 1]) / (1 - ab))  # the posterior variance
    want = (x - beta / torch.sqrt(1 - ab) * eps) / torch.sqrt(alpha) + sigma * z
    c_x, c_s = float(1 / torch.sqrt(alpha)), float(-beta / (torch.sqrt(alpha) * torch.sqrt(1 - ab)))
    _close(scorefast.reverse_step(x, eps, x_coef=c_x, score_coef=c_s, noise_scale=sigma, **kw), want, sigma)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_with_eta(kernel_backend, eta):
    x, eps, z, kw = _schedule_case(kernel_backend)
    # Per-particle timesteps: each particle at its own noise level (a (B,) schedule).
    ab_t = torch.tensor([0.3, 0.5, 0.7, 0.2, 0.9, 0.6], dtype=torch.float64, device=x.device)
    ab_prev = torch.sqrt(ab_t)  # a less noisy level for each
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    pp = lambda v: v.reshape(-1, 1, 1)  # noqa: E731
    x0 = (x - pp(torch.sqrt(1 - ab_t)) * eps) / pp(torch.sqrt(ab_t))
    want = pp(torch.sqrt(ab_prev)) * x0 + pp(torch.sqrt(1 - ab_prev - sigma**2)) * eps + pp(sigma) * z
    c_x = torch.sqrt(ab_prev / ab_t)
    c_s = torch.sqrt(1 - ab_prev - sigma**2) - torch.sqrt(ab_prev * (1 - ab_t) / ab_t)
    got = scorefast.reverse_step(x, eps, x_coef=c_x, score_coef=c_s, noise_scale=sigma, **kw)
    _close(got, want, sigma)


def test_ve_reverse_sde_euler_maruyama(kernel_backend):
    x, score, z, kw = _schedule_case(kernel_backend)
    sigma_t, sigma_prev = 10.0, 8.5
    var = sigma_t**2 - sigma_prev**2
    want = x + var * score + math.sqrt(var) * z
    _close(scorefast.reverse_step(x, score, score_coef=var, noise_scale=math.sqrt(var), **kw), want, math.sqrt(var))


def test_vp_reverse_sde_euler_maruyama(kernel_backend):
    x, score, z, kw = _schedule_case(kernel_backend)
    beta, dt = 12.0, 1e-3
    # dx = [-beta/2 x - beta s] dt + sqrt(beta) dw, integrated backwards in time by dt.
    want = x - (-0.5 * beta * x - beta * score) * dt + math.sqrt(beta * dt) * z
    got = scorefast.reverse_step(
        x, score, x_coef=1 + beta * dt / 2, score_coef=beta * dt, noise_scale=math.sqrt(beta * dt), **kw
    )
    _close(got, want, math.sqrt(beta * dt))


@pytest.mark.parametrize("batch_mean", [False, True])
def test_langevin_corrector_step(kernel_backend, batch_mean):
    x, score, z, kw = _schedule_case(kernel_backend)
    snr, B = 0.16, x.shape[0]
    grad_norm = torch.linalg.vector_norm(score.reshape(B, -1), dim=1)
    noise_norm = torch.linalg.vector_norm(z.reshape(B, -1), dim=1)
    if batch_mean:  # diffusers' ScoreSdeVeScheduler.step_correct
        step_size = (2 * (snr * noise_norm.mean() / grad_norm.mean()) ** 2).expand(B)
    else:
        step_size = 2 * (snr * noise_norm / grad_norm) ** 2
    pp = step_size.reshape(B, 1, 1)
    want = x + pp * score + torch.sqrt(2 * pp) * z
    got, eps = scorefast.snr_corrector_step(x, score, snr=snr, batch_mean=batch_mean, **kw)
    # The step size follows the norms: relative error ~ 2 * NOISE_REL_TOL from the normals.
    torch.testing.assert_close(
        got,
        want,
        rtol=1e-12,
        atol=float((pp.abs() * score.abs()).max()) * 1e-5 + float(torch.sqrt(2 * pp).max()) * 1e-5,
    )
    torch.testing.assert_close(eps, step_size, rtol=1e-5, atol=0)


def test_reference_backend_matches_reference_functions():
    x, s = _randn((4, 3), torch.float32, "cpu", 0), _randn((4, 3), torch.float32, "cpu", 1)
    out = scorefast.reverse_step(x, s, x_coef=2.0, score_coef=0.1, noise_scale=0.5, seed=9, step=2, backend="reference")
    assert torch.allclose(out, 2 * x + 0.1 * s + 0.5 * normal_like_ref(x, 9, 2), atol=1e-6)
    got = scorefast.snr_corrector_step(x, s, snr=0.2, seed=9, step=2, backend="reference")
    want = snr_corrector_step_ref(x, s, snr=0.2, seed=9, step=2)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
