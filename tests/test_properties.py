"""Property-based checks of every public op on every backend that runs here.

Random shapes (P = 0 and 1 included), strides, dtypes, coefficients and counters; each call is
compared with the float64 reference within its error budget (scorefast.testing.budgets), inputs
not documented as modified must be unchanged, and outputs finite wherever the reference is.
Examples are derandomized (the "scorefast" hypothesis profile in conftest.py), so a failure
reproduces; HYPOTHESIS_PROFILE=fuzz explores more.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import backend_device, is_interpreted, require_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st

import scorefast
from scorefast import backend_registry
from scorefast.ops import dsm as dsm_ref
from scorefast.ops import langevin as langevin_ref
from scorefast.ops import noise as noise_ref
from scorefast.targets import GaussianMixture, random_mixture
from scorefast.testing.budgets import (
    compare,
    dsm_loss_budget,
    dsm_perturb_tolerance,
    langevin_tolerance,
    noise_tolerance,
    storage_rounding,
)
from scorefast.testing.gmm_budgets import gmm_budget

BACKENDS = ["reference", "cpp", "numba", "triton", "cuda"]
FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LAYOUTS = ["contiguous", "column_major", "strided"]
COUNTERS = dict(seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**32 - 1))


def _backend(name: str, op: str) -> torch.device:
    """The device ``name`` runs on here (skip, or fail when required, if it cannot run)."""
    if name != "reference":
        status = backend_registry.status(name)
        if not status.available:
            require_or_skip(name, f"{name}: {status.reason}")
        assert backend_registry.has_op(name, op), f"{name} has no {op} kernel"
    return backend_device(name) if name != "reference" else torch.device("cpu")


def _sizes(name: str, data, max_p: int = 7, max_d: int = 9) -> tuple[int, int]:
    small = is_interpreted(name) or name == "cuda"  # Python-speed kernels: tiny problems
    P = data.draw(st.integers(0, 3 if small else max_p), label="P")
    D = data.draw(st.integers(1, 4 if small else max_d), label="D")
    return P, D


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` (P, D) with the same values in another memory layout."""
    if layout == "column_major":
        return t.t().contiguous().t()
    if layout == "strided":
        wide = torch.zeros(t.shape[0], 2 * t.shape[1], dtype=t.dtype, device=t.device)
        wide[:, ::2] = t
        return wide[:, ::2]
    return t


def _tensor(data, shape, dtype, device, layout, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="values"))
    t = (scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)
    return _laid_out(t, layout)


def _snapshot(*tensors):
    return [None if t is None else t.detach().clone() for t in tensors]


def _unchanged(before, *tensors):
    for b, t in zip(before, tensors):
        if t is not None:
            assert torch.equal(b, t.detach()), "an input not documented as modified changed"


def _finite_where_expected(got, expected):
    assert torch.equal(torch.isfinite(got.double().cpu()), torch.isfinite(expected.double())), "finiteness differs"


def _examples(name: str) -> int:
    return 8 if (is_interpreted(name) or name == "cuda") else 60


def _run_examples(name: str, body) -> None:
    """Run ``body(data)`` on the derandomized examples of ``name``; torch's generator is seeded
    from each example, so the values drawn with it are part of the example."""

    @settings(max_examples=_examples(name))
    @given(data=st.data())
    def run(data):
        torch.manual_seed(data.draw(st.integers(0, 2**31), label="torch seed"))
        body(data)

    run()


def _counter(data, P: int, D: int) -> tuple[int, int, int]:
    """(seed, step, particle_offset) anywhere in their ranges: the flat element indices
    (particle_offset + p) D + d of the noise below 2^63."""
    seed, step = data.draw(COUNTERS["seed"], label="seed"), data.draw(COUNTERS["step"], label="step")
    return seed, step, data.draw(st.integers(0, 2**63 // max(D, 1) - P), label="particle_offset")


# --- langevin_step -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_langevin_step(name):
    device = _backend(name, "langevin_step")

    def run(data):
        P, D = _sizes(name, data)
        dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
        layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
        x = _tensor(data, (P, D), dtype, device, layout, scale=data.draw(st.sampled_from([1e-3, 1.0, 50.0])))
        s = _tensor(data, (P, D), dtype, device, data.draw(st.sampled_from(LAYOUTS)))
        guided = data.draw(st.booleans(), label="guidance")
        sc = _tensor(data, (P, D), dtype, device, layout) if guided else None
        w = data.draw(st.floats(-3, 3), label="w") if guided else 1.0
        per_particle = data.draw(st.booleans(), label="per_particle")
        if per_particle:
            a = torch.rand(P, dtype=torch.float64) * data.draw(st.floats(0, 4))
            b = torch.rand(P, dtype=torch.float64) * data.draw(st.floats(0, 2))
            a_arg = a.to(torch.float64 if dtype == torch.float64 else torch.float32).to(device)
            b_arg = b.to(a_arg.dtype).to(device)
        else:
            a = a_arg = data.draw(st.floats(0, 10), label="a")
            b = b_arg = data.draw(st.one_of(st.just(math.sqrt(2 * a)), st.floats(0, 5)), label="b")
        clamp = data.draw(st.sampled_from([None, (-1.0, 1.0), (None, 0.5), (-0.5, None)]), label="clamp")
        clip = data.draw(st.one_of(st.none(), st.floats(0.01, 10)), label="max_score_norm")
        seed, step, offset = _counter(data, P, D)
        inplace = data.draw(st.booleans(), label="inplace")
        before = _snapshot(x, s, sc)
        kw = dict(step_size=a_arg, noise_scale=b_arg, seed=seed, step=step, particle_offset=offset)
        kw.update(clamp=clamp, max_score_norm=clip, backend=name)
        if guided:
            kw.update(score_cond=sc, guidance=w)
        target = x.clone() if inplace else x
        got = scorefast.langevin_step(target, s, inplace=inplace, **kw)
        assert got.shape == x.shape and got.dtype == dtype
        _unchanged(before, x, s, sc)
        if inplace:
            assert got is target
        lo, hi = clamp if clamp is not None else (None, None)
        cpu = lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t  # noqa: E731
        expected = langevin_ref.langevin_step_ref(
            x.cpu().double(),
            s.cpu().double(),
            step_size=cpu(a_arg),
            noise_scale=cpu(b_arg),
            score_cond=None if sc is None else sc.cpu().double(),
            guidance=w,
            seed=seed,
            step=step,
            particle_offset=offset,
            clamp_min=lo,
            clamp_max=hi,
            max_score_norm=clip,
            compute_dtype=torch.float64,
        )
        tol = langevin_tolerance(x.cpu(), s.cpu(), cpu(sc), w, cpu(a_arg), cpu(b_arg), expected, dtype, True)
        _finite_where_expected(got, expected)
        result = compare(got.cpu(), expected, tol)
        assert result.ok, result.detail

    _run_examples(name, run)


# --- noise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_noise(name):
    device = _backend(name, "normal_fill_")

    def run(data):
        P, D = _sizes(name, data)
        dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
        seed, step, offset = _counter(data, P, D)
        counter = dict(seed=seed, step=step, particle_offset=offset, device=device, backend=name)
        words = scorefast.philox_words(P, (D + 3) // 4, **counter).cpu()
        assert torch.equal(words, noise_ref.philox_words_ref(P, (D + 3) // 4, seed, step, offset))
        got = scorefast.normal((P, D), dtype=dtype, **counter)
        expected = noise_ref.normal_ref(P, D, seed, step, offset).double()
        tol = noise_tolerance(P, D, seed, step, offset) + storage_rounding(expected, dtype)
        assert got.dtype == dtype
        _finite_where_expected(got, expected)
        result = compare(got.cpu(), expected, tol)
        assert result.ok, result.detail

    _run_examples(name, run)


# --- gmm_score -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_gmm_score(name):
    device = _backend(name, "gmm_score")

    def run(data):
        N, D = _sizes(name, data, max_d=6)
        K = data.draw(st.integers(1, 3 if _examples(name) < 10 else 9), label="K")
        kind = data.draw(st.sampled_from(["isotropic", "diagonal", "full"]), label="kind")
        mix = random_mixture(K, D, seed=data.draw(st.integers(0, 2**16)), kind=kind)
        if data.draw(st.booleans(), label="zero weight") and K > 1:
            w = mix.weights.clone()
            w[0] = 0.0
            mix = GaussianMixture(mix.means, w, **{_COV[kind]: mix.cov})
        dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
        layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
        x = _tensor(data, (N, D), dtype, device, layout, scale=data.draw(st.sampled_from([0.1, 3.0, 1e3])))
        sigma = data.draw(st.sampled_from(["none", "scalar", "per_point"]), label="sigma")
        sig = {"none": None, "scalar": 0.7, "per_point": torch.rand(N, dtype=torch.float64) * 2}[sigma]
        sig_arg = sig.to(dtype).to(device) if isinstance(sig, torch.Tensor) else sig
        before = _snapshot(x, sig_arg if isinstance(sig_arg, torch.Tensor) else None)
        score, log_p = scorefast.gmm_score(x, mix, sigma=sig_arg, backend=name)
        _unchanged(before, x, sig_arg if isinstance(sig_arg, torch.Tensor) else None)
        assert score.shape == (N, D) and log_p.shape == (N,)
        s_used = sig_arg.cpu().double() if isinstance(sig_arg, torch.Tensor) else sig
        ref_s, ref_l, tol_s, tol_l = gmm_budget(x.cpu(), mix, s_used, dtype)
        for got, ref, tol in ((score, ref_s, tol_s), (log_p, ref_l, tol_l)):
            _finite_where_expected(got, ref)
            result = compare(got.cpu(), ref, tol)
            assert result.ok, result.detail

    _run_examples(name, run)


_COV = {"isotropic": "variance", "diagonal": "diagonal", "full": "covariance"}


# --- dsm_perturb and dsm_loss ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_dsm(name):
    device = _backend(name, "dsm_loss")

    def run(data):
        B, D = _sizes(name, data)
        dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
        layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
        x = _tensor(data, (B, D), dtype, device, layout)
        pred = _tensor(data, (B, D), dtype, device, data.draw(st.sampled_from(LAYOUTS)))
        math_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        sigma = (0.05 + 3 * torch.rand(B, dtype=torch.float64)).to(math_dtype)
        seed, step, offset = _counter(data, B, D)
        counter = dict(seed=seed, step=step, particle_offset=offset, backend=name)
        before = _snapshot(x, pred)
        got = scorefast.dsm_perturb(x, sigma.to(device), **counter)
        expected = dsm_ref.dsm_perturb_ref(x.cpu().double(), sigma.double(), seed, step, offset, torch.float64)
        _finite_where_expected(got, expected)
        result = compare(
            got.cpu(), expected, dsm_perturb_tolerance(x.cpu(), sigma, expected, dtype, seed, step, offset)
        )
        assert result.ok, result.detail
        parametrization = data.draw(st.sampled_from(["score", "eps"]), label="parametrization")
        power = data.draw(st.sampled_from([0.0, 1.0, 2.0, 1.5]), label="weighting_power")
        p = pred.detach().requires_grad_(True)
        per = scorefast.dsm_loss(
            p, x, sigma.to(device), weighting_power=power, parametrization=parametrization, reduction="none", **counter
        )
        loss, loss_tol, grad, grad_tol = dsm_loss_budget(
            pred, sigma, parametrization == "eps", power, dtype, seed, step, offset
        )
        result = compare(per.detach().cpu(), loss, loss_tol, "loss")
        assert result.ok, result.detail
        if B:
            (g,) = torch.autograd.grad(per.sum(), p)
            result = compare(g.cpu(), grad, grad_tol, "gradient")
            assert result.ok, result.detail
        _unchanged(before, x, pred)

    _run_examples(name, run)


# --- gmm_chain -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_gmm_chain_keeps_its_start_and_stays_finite(name):
    device = _backend(name, "gmm_chain_")

    def run(data):
        N, D = _sizes(name, data, max_d=5)
        mix = random_mixture(data.draw(st.integers(1, 4), label="K"), D, seed=data.draw(st.integers(0, 99)))
        dtype = data.draw(st.sampled_from(FLOATS), label="dtype")
        x = _tensor(data, (N, D), dtype, device, "contiguous", scale=3.0)
        method = data.draw(st.sampled_from(["ula", "annealed", "mala"]), label="method")
        kw = (
            dict(sigmas=[2.0, 1.0, 0.5], steps_per_level=data.draw(st.integers(1, 3)), epsilon=0.02)
            if method == "annealed"
            else dict(steps=data.draw(st.integers(0, 6), label="steps"), step_size=0.05)
        )
        every = data.draw(st.integers(0, 4), label="trajectory_every")
        before = _snapshot(x)
        res = scorefast.gmm_chain(
            x, mix, method=method, seed=data.draw(COUNTERS["seed"]), trajectory_every=every, backend=name, **kw
        )
        _unchanged(before, x)
        T = kw.get("steps", 3 * kw.get("steps_per_level", 0))
        assert res.x.shape == x.shape and bool(torch.isfinite(res.x.double()).all())
        assert (res.trajectory is None) == (every == 0)
        if every:
            assert res.trajectory.shape == (T // every, N, D)
        if method == "mala":
            assert res.accepted.shape == (N,) and bool(((res.accepted >= 0) & (res.accepted <= T)).all())

    _run_examples(name, run)
