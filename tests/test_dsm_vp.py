"""dsm_vp_perturb / dsm_vp_loss: every backend against the float64 reference within an error
budget, for each parametrization and weighting; gradients (analytic, gradcheck, second
derivatives), dsm_perturb / dsm_loss as special cases, the regenerated noise, errors, opcheck,
compile."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_within

import scorefast
from scorefast.dsm_vp import loss_coefficients
from scorefast.reference import dsm_vp_loss_ref, dsm_vp_perturb_ref
from scorefast.testing.dsm_vp_budgets import dsm_vp_loss_budget, dsm_vp_perturb_tolerance

# small D, partial Philox groups, whole groups (the vector paths of the CUDA kernels), several tiles
SHAPES = [(1, 1), (3, 2), (5, 3, 7), (3, 16), (4, 33), (2, 4099), (2, 1024), (700, 3)]
SEED, STEP, OFFSET = 2**63 + 77, 5, 2**32 - 2
PARAMETRIZATIONS = ("score", "eps", "v", "x0")
WEIGHTINGS = ("none", "sigma^p", "snr", "min_snr")
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
POWER, GAMMA = 1.5, 2.0  # not the defaults: the exponent and the clip are checked too


def _require(kb, op):
    assert scorefast.backend_registry.has_op(kb.name, op), f"{kb.name} has no {op} kernel"


def _shapes(kb):
    return SHAPES[:3] if kb.interpreted else SHAPES


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _data(shape, dtype, device, seed=0):
    """x, pred in ``dtype``; alpha in [0.05, 1], sigma in [0.05, 2] in the math dtype (SNR on both sides of GAMMA)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    pred = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    alpha = (0.05 + 0.95 * torch.rand(shape[0], generator=g, dtype=torch.float64)).to(_acc(dtype)).to(device)
    sigma = (0.05 + 1.95 * torch.rand(shape[0], generator=g, dtype=torch.float64)).to(_acc(dtype)).to(device)
    return x, pred, alpha, sigma


def _kw(kb, **extra):
    return dict(seed=SEED, step=STEP, particle_offset=OFFSET, backend=kb.name, **extra)


@pytest.mark.parametrize("dtype", DTYPES)
def test_perturb_matches_reference(kernel_backend, dtype):
    _require(kernel_backend, "dsm_vp_perturb")
    for i, shape in enumerate(_shapes(kernel_backend)):
        x, _, alpha, sigma = _data(shape, dtype, kernel_backend.device)
        scalar_alpha = i % 2 == 1  # a float alpha on every other shape
        a_arg = 0.625 if scalar_alpha else alpha
        got = scorefast.dsm_vp_perturb(x, a_arg, sigma, **_kw(kernel_backend))
        a_used = torch.full_like(alpha, 0.625) if scalar_alpha else alpha
        ref = dsm_vp_perturb_ref(
            x.cpu(), a_used.cpu(), sigma.cpu(), SEED, STEP, OFFSET, compute_dtype=torch.float64
        ).double()
        tol = dsm_vp_perturb_tolerance(x.cpu(), a_used, sigma, ref, dtype, SEED, STEP, OFFSET)
        assert got.shape == x.shape and got.dtype == dtype and got.is_contiguous()
        assert_within(got.cpu(), ref, tol, f"perturb {shape}")


def _check_loss_and_grads(kb, parametrization, weighting, dtype, shapes):
    for shape in shapes:
        x, pred, alpha, sigma = _data(shape, dtype, kb.device, seed=1)
        pred.requires_grad_(True)
        x_needs = parametrization in ("v", "x0")
        x.requires_grad_(x_needs)
        per = scorefast.dsm_vp_loss(
            pred,
            x,
            alpha,
            sigma,
            parametrization=parametrization,
            weighting=weighting,
            weighting_power=POWER,
            snr_gamma=GAMMA,
            reduction="none",
            **_kw(kb),
        )
        B = shape[0]
        gw = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
        bud = dsm_vp_loss_budget(
            pred, x, alpha, sigma, parametrization, weighting, POWER, GAMMA, dtype, SEED, STEP, OFFSET, upstream=gw
        )
        assert per.shape == (B,) and per.dtype == _acc(dtype)
        what = f"{parametrization}/{weighting} {shape} {dtype}"
        assert_within(per.detach().cpu(), bud.loss, bud.loss_tol, f"loss {what}")
        # d (sum_b g_b l_b) / d pred = 2 g_b w_b r; / d x = -c_b times that
        inputs = (pred, x) if x_needs else (pred,)
        grads = torch.autograd.grad((per * gw.to(per.device).to(per.dtype)).sum(), inputs)
        assert grads[0].dtype == dtype
        assert_within(grads[0].cpu().reshape(B, -1), bud.grad_pred, bud.grad_pred_tol, f"grad pred {what}")
        if x_needs:
            assert_within(grads[1].cpu().reshape(B, -1), bud.grad_x, bud.grad_x_tol, f"grad x {what}")


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_loss_and_gradients_match_reference(kernel_backend, parametrization, weighting):
    _require(kernel_backend, "dsm_vp_loss")
    shapes = _shapes(kernel_backend)[1:3] if kernel_backend.interpreted else _shapes(kernel_backend)
    _check_loss_and_grads(kernel_backend, parametrization, weighting, torch.float32, shapes)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("parametrization", PARAMETRIZATIONS)
def test_loss_dtypes(kernel_backend, parametrization, dtype):
    _require(kernel_backend, "dsm_vp_loss")
    shapes = _shapes(kernel_backend)[2:3] if kernel_backend.interpreted else _shapes(kernel_backend)[1:6]
    _check_loss_and_grads(kernel_backend, parametrization, "min_snr", dtype, shapes)


def test_reference_is_the_fused_form():
    # The reference written from the targets equals the fused form through loss_coefficients.
    x, pred, alpha, sigma = _data((6, 5), torch.float64, "cpu", seed=2)
    for par in PARAMETRIZATIONS:
        for weighting in WEIGHTINGS:
            kw = dict(parametrization=par, weighting=weighting, weighting_power=POWER, snr_gamma=GAMMA)
            want = dsm_vp_loss_ref(pred, x, alpha, sigma, SEED, STEP, OFFSET, reduction="none", **kw)
            got = scorefast.dsm_vp_loss(pred, x, alpha, sigma, reduction="none", **_kw_ref(), **kw)
            torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


def _kw_ref():
    return dict(seed=SEED, step=STEP, particle_offset=OFFSET, backend="reference")


def test_weightings_by_hand():
    # SNR = 1 and 16 (alpha^2 / sigma^2) around gamma = 5 (Hang et al. 2023)
    alpha = torch.tensor([0.5**0.5, 0.8], dtype=torch.float64)
    sigma = torch.tensor([0.5**0.5, 0.2], dtype=torch.float64)
    snr = torch.tensor([1.0, 16.0], dtype=torch.float64)

    def w(par, weighting, power=2.0):
        return loss_coefficients(alpha, sigma, par, weighting, power, 5.0)[2]

    close = lambda a, b: torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float64))  # noqa: E731
    close(w("eps", "min_snr"), [1.0, 5 / 16])
    close(w("x0", "min_snr"), [1.0, 5.0])
    close(w("v", "min_snr"), [1 / 2, 5 / 17])
    close(w("score", "min_snr"), 0.5 * sigma**2 * torch.tensor([1.0, 5 / 16], dtype=torch.float64))
    close(w("eps", "snr"), snr)
    close(w("eps", "none"), [1.0, 1.0])
    close(w("score", "none"), [0.5, 0.5])
    close(w("x0", "sigma^p", 3.0), sigma**3)
    # alpha = 0: SNR 0, min(SNR, gamma) / SNR -> 1 (not NaN)
    z = loss_coefficients(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), "eps", "min_snr")
    close(z[2], [1.0])


def test_dsm_ops_are_special_cases(kernel_backend):
    # alpha = 1: dsm_vp_perturb is dsm_perturb, the score (sigma^p) and eps (none) losses and
    # their gradients are dsm_loss's, to the bit, on every backend.
    _require(kernel_backend, "dsm_vp_loss")
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        shapes = [(3, 5), (2, 9)] if kernel_backend.interpreted else [(3, 5), (2, 9), (4, 2100)]
        for shape in shapes:
            x, pred, _, sigma = _data(shape, dtype, kernel_backend.device, seed=3)
            kw = _kw(kernel_backend)
            assert torch.equal(scorefast.dsm_vp_perturb(x, 1.0, sigma, **kw), scorefast.dsm_perturb(x, sigma, **kw)), (
                f"perturb {shape} {dtype}"
            )
            for par, power in (("score", 2.0), ("score", 1.5), ("eps", 2.0)):
                p1 = pred.detach().clone().requires_grad_(True)
                p2 = pred.detach().clone().requires_grad_(True)
                new = scorefast.dsm_vp_loss(p1, x, 1.0, sigma, parametrization=par, weighting_power=power, **kw)
                old = scorefast.dsm_loss(p2, x, sigma, parametrization=par, weighting_power=power, **kw)
                assert torch.equal(new, old), f"{par} p={power} {shape} {dtype}: {new} vs {old}"
                new.backward()
                old.backward()
                assert torch.equal(p1.grad, p2.grad), f"grad {par} p={power} {shape} {dtype}"


def test_scalar_and_per_sample_coefficients_agree(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    x, pred, _, _ = _data((4, 6), torch.float32, kernel_backend.device, seed=4)
    kw = _kw(kernel_backend)
    full = lambda v: torch.full((4,), v, dtype=torch.float32, device=x.device)  # noqa: E731
    assert torch.equal(
        scorefast.dsm_vp_perturb(x, 0.6, 0.8, **kw), scorefast.dsm_vp_perturb(x, full(0.6), full(0.8), **kw)
    )
    a = scorefast.dsm_vp_loss(pred, x, 0.6, 0.8, parametrization="v", reduction="none", **kw)
    b = scorefast.dsm_vp_loss(pred, x, full(0.6), torch.tensor(0.8), parametrization="v", reduction="none", **kw)
    assert torch.equal(a, b)


def test_reductions(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    x, pred, alpha, sigma = _data((6, 5), torch.float64, kernel_backend.device, seed=5)
    kw = _kw(kernel_backend, parametrization="x0")
    per = scorefast.dsm_vp_loss(pred, x, alpha, sigma, reduction="none", **kw)
    torch.testing.assert_close(scorefast.dsm_vp_loss(pred, x, alpha, sigma, **kw), per.mean(), rtol=0, atol=0)
    torch.testing.assert_close(
        scorefast.dsm_vp_loss(pred, x, alpha, sigma, reduction="sum", **kw), per.sum(), rtol=0, atol=0
    )


def test_loss_regenerates_the_perturbation_noise(kernel_backend):
    # The exact targets make the loss vanish: the kernels regenerate the z they perturbed with.
    _require(kernel_backend, "dsm_vp_loss")
    x, _, alpha, sigma = _data((7, 9), torch.float64, kernel_backend.device, seed=6)
    kw = _kw(kernel_backend)
    xt = scorefast.dsm_vp_perturb(x, alpha, sigma, **kw)
    a, s = alpha[:, None], sigma[:, None]
    z = (xt - a * x) / s
    targets = {"score": -z / s, "eps": z, "v": a * z - s * x, "x0": x}
    for par, target in targets.items():
        loss = scorefast.dsm_vp_loss(
            target, x, alpha, sigma, parametrization=par, weighting="none", reduction="sum", **kw
        )
        assert float(loss) < 1e-18, par
    other = scorefast.dsm_vp_loss(
        targets["eps"], x, alpha, sigma, parametrization="eps", reduction="sum", **{**kw, "step": STEP + 1}
    )
    assert float(other) > 1.0


@pytest.mark.parametrize("parametrization", ["eps", "v"])
def test_gradcheck_float64(kernel_backend, parametrization):
    # first and second derivatives w.r.t. pred and x, numerically, on every backend and the reference
    x, pred, alpha, sigma = _data((2, 3), torch.float64, kernel_backend.device, seed=7)
    pred.requires_grad_(True)
    x.requires_grad_(parametrization == "v")
    inputs = (pred, x) if parametrization == "v" else (pred,)

    def loss(backend):
        def f(p, xx=x):
            return scorefast.dsm_vp_loss(
                p,
                xx,
                alpha,
                sigma,
                seed=1,
                step=2,
                parametrization=parametrization,
                weighting="min_snr",
                reduction="none",
                backend=backend,
            )

        return f

    for backend in ("reference", kernel_backend.name):
        assert torch.autograd.gradcheck(loss(backend), inputs)
        assert torch.autograd.gradgradcheck(loss(backend), inputs)


def test_perturb_gradient(kernel_backend):
    x, _, alpha, sigma = _data((3, 4), torch.float64, kernel_backend.device, seed=8)
    x.requires_grad_(True)
    f = lambda xx: scorefast.dsm_vp_perturb(xx, alpha, sigma, seed=1, backend=kernel_backend.name)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))


def test_schedule_gradients_are_refused():
    x, pred, alpha, sigma = _data((3, 4), torch.float64, "cpu", seed=9)
    sigma.requires_grad_(True)
    pred.requires_grad_(True)
    loss = scorefast.dsm_vp_loss(pred, x, alpha, sigma, seed=1, parametrization="v", backend="numba")
    with pytest.raises(RuntimeError, match="noise schedule"):
        loss.backward()


def test_backward_saves_nothing_the_size_of_x_but_its_inputs():
    x, pred, alpha, sigma = _data((8, 1000), torch.float32, "cpu", seed=10)
    pred.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = scorefast.dsm_vp_loss(pred, x, alpha, sigma, seed=1, parametrization="v", backend="numba")
    big = {t.data_ptr() for t in saved if t.numel() >= x.numel()}
    assert big == {pred.data_ptr(), x.data_ptr()}
    loss.backward()
    assert pred.grad is not None


def test_nan_stays_in_its_sample(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    x, pred, alpha, sigma = _data((4, 6), torch.float32, kernel_backend.device, seed=11)
    pred[2, 3] = float("nan")
    x[1, 0] = float("nan")
    kw = _kw(kernel_backend, reduction="none")
    v = scorefast.dsm_vp_loss(pred, x, alpha, sigma, parametrization="v", **kw)
    assert torch.isnan(v).tolist() == [False, True, True, False]
    eps = scorefast.dsm_vp_loss(pred, x, alpha, sigma, parametrization="eps", **kw)  # x is not read
    assert torch.isnan(eps).tolist() == [False, False, True, False]
    xt = scorefast.dsm_vp_perturb(x, alpha, sigma, seed=1, backend=kernel_backend.name)
    assert torch.isnan(xt).nonzero().tolist() == [[1, 0]]


def test_noncontiguous_inputs(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    x, pred, alpha, sigma = _data((5, 8), torch.float32, kernel_backend.device, seed=12)

    def strided(t):
        buf = torch.empty(5, 16, dtype=t.dtype, device=t.device)
        buf[:, ::2] = t
        return buf[:, ::2]

    sx, sp = strided(x), strided(pred)
    sa = torch.stack([alpha, alpha], 1)[:, 0]  # a strided (B,) view
    assert not (sx.is_contiguous() or sp.is_contiguous() or sa.is_contiguous())
    kw = _kw(kernel_backend)
    for par in PARAMETRIZATIONS:
        got = scorefast.dsm_vp_loss(sp, sx, sa, sigma, parametrization=par, reduction="none", **kw)
        want = scorefast.dsm_vp_loss(pred, x, alpha, sigma, parametrization=par, reduction="none", **kw)
        assert torch.equal(got, want), par
    assert torch.equal(scorefast.dsm_vp_perturb(sx, sa, sigma, **kw), scorefast.dsm_vp_perturb(x, alpha, sigma, **kw))


def test_opcheck(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    if kernel_backend.interpreted:
        pytest.skip("opcheck traces the op; interpreted Triton kernels cannot be traced")
    ns = scorefast.backend_registry.op_namespace(kernel_backend.name)
    x, pred, alpha, sigma = _data((3, 5), torch.float32, kernel_backend.device, seed=13)
    a, c, w = loss_coefficients(alpha, sigma, "v", "min_snr")
    torch.library.opcheck(ns.dsm_vp_perturb.default, (x.requires_grad_(True), alpha, sigma, 7, 2, 0))
    x = x.detach()
    torch.library.opcheck(ns.dsm_vp_loss.default, (pred.requires_grad_(True), x, a, c, w, 7, 2, 0))
    torch.library.opcheck(ns.dsm_vp_loss.default, (pred, None, a, c, w, 7, 2, 0))
    torch.library.opcheck(
        ns.dsm_vp_loss_backward.default, (torch.ones(3, device=pred.device), pred.detach(), x, a, c, w, 7, 2, 0)
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sigma=0.0), ValueError, "sigma"),
        (dict(sigma=float("nan")), ValueError, "sigma"),
        (dict(sigma=torch.tensor([1.0, -1.0, 1.0])), ValueError, "sigma"),
        (dict(alpha=-0.5), ValueError, "alpha"),
        (dict(alpha=torch.ones(4)), ValueError, "alpha"),
        (dict(alpha="a"), TypeError, "alpha"),
        (dict(parametrization="velocity"), ValueError, "parametrization"),
        (dict(weighting="p2"), ValueError, "weighting"),
        (dict(snr_gamma=0.0), ValueError, "snr_gamma"),
        (dict(reduction="max"), ValueError, "reduction"),
        (dict(weighting_power=math.inf), ValueError, "weighting_power"),
        (dict(x=torch.zeros(3, 5)), ValueError, "shape"),
        (dict(x=None, parametrization="v"), ValueError, "x"),
        (dict(step=2**32), ValueError, "step"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = dict(x=torch.zeros(3, 4), alpha=0.8, sigma=0.5, seed=1)
    args.update(kwargs)
    pred = torch.zeros(3, 4)
    with pytest.raises(error, match=match):
        scorefast.dsm_vp_loss(pred, args.pop("x"), args.pop("alpha"), args.pop("sigma"), **args)


def test_op_errors_name_the_argument(kernel_backend):
    _require(kernel_backend, "dsm_vp_loss")
    ns = scorefast.backend_registry.op_namespace(kernel_backend.name)
    dev = kernel_backend.device
    pred, ones = torch.zeros(3, 4, device=dev), torch.ones(3, device=dev)
    with pytest.raises(RuntimeError, match="weight must be Double"):
        ns.dsm_vp_loss(pred, None, ones, ones, ones, 1, 0, 0)
    w = ones.double()
    with pytest.raises(RuntimeError, match=r"c must have shape \[B\] = \[3\]"):
        ns.dsm_vp_loss(pred, None, ones, torch.ones(4, device=dev), w, 1, 0, 0)
    with pytest.raises(RuntimeError, match="x must have the dtype of pred"):
        ns.dsm_vp_loss(pred, pred.double(), ones, ones, w, 1, 0, 0)
    with pytest.raises(RuntimeError, match="alpha must be Float"):
        ns.dsm_vp_perturb(pred, w, ones, 1, 0, 0)
