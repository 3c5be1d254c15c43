"""dsm_perturb / dsm_loss: every backend against the float64 reference within an error budget,
gradients (analytic and gradcheck), the regenerated noise, memory, errors, opcheck, compile."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MAX_RADIUS, U32, U64, assert_within, noise_tolerance, storage_ulp

import scorefast
from scorefast.reference import dsm_loss_ref, dsm_noise_ref, dsm_perturb_ref

SHAPES = [(1, 1), (3, 2), (5, 3, 7), (4, 33), (2, 4099), (700, 3), (1100, 2), (45, 4)]  # small D, partial groups, tiles
SEED, STEP, OFFSET = 2**63 + 77, 5, 2**32 - 2


def _require(kb, op):
    assert scorefast.backend_registry.has_op(kb.name, op), f"{kb.name} has no {op} kernel"


def _shapes(kb):
    return SHAPES[:4] if kb.interpreted else SHAPES


def _data(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    sigma = (0.05 + 2 * torch.rand(shape[0], generator=g, dtype=torch.float64)).to(device)
    pred = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    return x, sigma, pred


def _budget_terms(pred, sigma, eps_form, dtype):
    """Reference residual r (float64, [B, D]) and its per-element error bound dr.

    The kernel's z differs from the reference's by <= radius * NOISE_REL_TOL; forming r in
    float32 (float64) adds <= 2u (|pred| + |z|/sigma).
    """
    B = pred.shape[0]
    u = U64 if dtype == torch.float64 else U32
    z = dsm_noise_ref(pred.cpu(), SEED, STEP, OFFSET).double()
    p = pred.cpu().reshape(B, -1).double()
    s = sigma.cpu().double()[:, None]
    dz = noise_tolerance(B, p.shape[1], SEED, STEP, OFFSET)
    if eps_form:
        return p - z, dz + 2 * u * (p.abs() + z.abs())
    return p + z / s, dz / s + 2 * u * (p.abs() + z.abs() / s)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_perturb_matches_reference(kernel_backend, dtype):
    _require(kernel_backend, "dsm_perturb")
    for shape in _shapes(kernel_backend):
        x, sigma, _ = _data(shape, dtype, kernel_backend.device)
        got = scorefast.dsm_perturb(
            x,
            sigma.to(torch.float64 if dtype == torch.float64 else torch.float32),
            seed=SEED,
            step=STEP,
            particle_offset=OFFSET,
            backend=kernel_backend.name,
        )
        ref = dsm_perturb_ref(x.cpu(), sigma.cpu(), SEED, STEP, OFFSET, compute_dtype=torch.float64)
        B = shape[0]
        u = U64 if dtype == torch.float64 else U32
        s = sigma.cpu().double().reshape(B, *([1] * (len(shape) - 1)))
        tol = s * noise_tolerance(B, x[0].numel(), SEED, STEP, OFFSET).reshape(shape) + 4 * u * (
            x.cpu().double().abs() + s * MAX_RADIUS
        )
        if dtype != torch.float64:
            tol = tol + storage_ulp(ref.double(), dtype)
        assert got.shape == x.shape and got.dtype == dtype
        assert_within(got.cpu(), ref, tol, f"perturb {shape}")


@pytest.mark.parametrize("form", ["score", "eps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_loss_and_gradient_match_reference(kernel_backend, form, dtype):
    _require(kernel_backend, "dsm_loss")
    eps_form = form == "eps"
    for shape in _shapes(kernel_backend):
        x, sigma, pred = _data(shape, dtype, kernel_backend.device, seed=1)
        pred = pred.requires_grad_(True)
        power = 1.5
        per = scorefast.dsm_loss(
            pred,
            x,
            sigma,
            seed=SEED,
            step=STEP,
            particle_offset=OFFSET,
            weighting_power=power,
            parametrization=form,
            reduction="none",
            backend=kernel_backend.name,
        )
        B = shape[0]
        r, dr = _budget_terms(pred.detach(), sigma, eps_form, dtype)
        w = torch.ones(B, dtype=torch.float64) if eps_form else 0.5 * sigma.cpu().double() ** power
        ref = w * (r * r).sum(1)
        u = U64 if dtype == torch.float64 else U32
        tol = w * (2 * r.abs() * dr + dr * dr).sum(1) + 4 * u * ref
        assert per.shape == (B,)
        assert_within(per.detach().cpu(), ref, tol, f"loss {shape}")
        # gradient: dl_b/dpred = 2 w_b r  (g_b = the weights below)
        gw = torch.linspace(0.5, 1.5, B, dtype=torch.float64)
        (grad,) = torch.autograd.grad((per * gw.to(per.device).to(per.dtype)).sum(), pred)
        gref = (gw * 2 * w)[:, None] * r
        gtol = (gw * 2 * w)[:, None] * (dr + 2 * u * r.abs())
        if dtype != torch.float64:
            gtol = gtol + storage_ulp(gref, dtype)
        assert grad.dtype == dtype
        assert_within(grad.cpu().reshape(B, -1), gref, gtol, f"grad {shape}")


def test_reductions_and_default_weighting(kernel_backend):
    _require(kernel_backend, "dsm_loss")
    x, sigma, pred = _data((6, 5), torch.float64, kernel_backend.device, seed=2)
    kw = dict(seed=SEED, step=STEP, particle_offset=OFFSET, backend=kernel_backend.name)
    per = scorefast.dsm_loss(pred, x, sigma, reduction="none", **kw)
    torch.testing.assert_close(scorefast.dsm_loss(pred, x, sigma, **kw), per.mean())
    torch.testing.assert_close(scorefast.dsm_loss(pred, x, sigma, reduction="sum", **kw), per.sum())
    ref = dsm_loss_ref(pred.cpu(), sigma.cpu(), SEED, STEP, OFFSET, reduction="none")
    torch.testing.assert_close(per.cpu(), ref, rtol=1e-6, atol=1e-9)  # p = 2 by default
    # a scalar sigma is the same as a constant vector
    a = scorefast.dsm_loss(pred, x, 0.3, reduction="none", **kw)
    b = scorefast.dsm_loss(pred, x, torch.full((6,), 0.3, dtype=torch.float64, device=x.device), reduction="none", **kw)
    assert torch.equal(a, b)


def test_loss_regenerates_the_perturbation_noise(kernel_backend):
    # The exact targets make the loss vanish: the kernels regenerate the z they perturbed with.
    _require(kernel_backend, "dsm_loss")
    x, sigma, _ = _data((7, 9), torch.float64, kernel_backend.device, seed=3)
    kw = dict(seed=SEED, step=STEP, particle_offset=OFFSET, backend=kernel_backend.name)
    xt = scorefast.dsm_perturb(x, sigma, **kw)
    target_score = -(xt - x) / sigma[:, None] ** 2
    target_eps = (xt - x) / sigma[:, None]
    assert float(scorefast.dsm_loss(target_score, x, sigma, reduction="sum", **kw)) < 1e-18
    assert float(scorefast.dsm_loss(target_eps, x, sigma, parametrization="eps", reduction="sum", **kw)) < 1e-18
    # and a different step draws different noise
    other = scorefast.dsm_loss(target_eps, x, sigma, parametrization="eps", reduction="sum", **{**kw, "step": STEP + 1})
    assert float(other) > 1.0


def test_gradcheck_float64():
    x, sigma, pred = _data((3, 4), torch.float64, "cpu", seed=4)
    pred.requires_grad_(True)
    for form in ("score", "eps"):
        f = lambda p: scorefast.dsm_loss(
            p,
            x,
            sigma,
            seed=1,
            step=2,
            parametrization=form,  # noqa: E731
            reduction="none",
            backend="cpp",
        )
        assert torch.autograd.gradcheck(f, (pred,))


@pytest.mark.parametrize("form", ["score", "eps"])
def test_second_derivatives(kernel_backend, form):
    # Gradient penalties differentiate the loss twice: every backend's double backward must be
    # right (its dsm_loss_backward op has its own exact backward), checked numerically.
    x, sigma, pred = _data((3, 5), torch.float64, kernel_backend.device, seed=6)
    pred.requires_grad_(True)
    f = lambda p: scorefast.dsm_loss(
        p,
        x,
        sigma,
        seed=1,
        step=2,
        parametrization=form,  # noqa: E731
        weighting_power=1.5,
        reduction="none",
        backend=kernel_backend.name,
    )
    assert torch.autograd.gradgradcheck(f, (pred,))


def test_backward_saves_nothing_the_size_of_x_but_pred():
    x, sigma, pred = _data((8, 1000), torch.float32, "cpu", seed=5)
    pred.requires_grad_(True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = scorefast.dsm_loss(pred, x, sigma, seed=1, step=0, backend="cpp")
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == pred.data_ptr()
    loss.backward()
    assert pred.grad is not None


def test_nan_stays_in_its_sample(kernel_backend):
    _require(kernel_backend, "dsm_loss")
    x, sigma, pred = _data((4, 6), torch.float32, kernel_backend.device, seed=6)
    pred[2, 3] = float("nan")
    per = scorefast.dsm_loss(pred, x, sigma, seed=1, reduction="none", backend=kernel_backend.name)
    assert bool(torch.isnan(per[2])) and bool(torch.isfinite(per[[0, 1, 3]]).all())


def test_noncontiguous_inputs(kernel_backend):
    _require(kernel_backend, "dsm_loss")
    x, sigma, pred = _data((5, 8), torch.float32, kernel_backend.device, seed=7)
    strided = torch.empty(5, 16, device=pred.device)[:, ::2]
    strided.copy_(pred)
    kw = dict(seed=3, step=1, reduction="none", backend=kernel_backend.name)
    assert torch.equal(scorefast.dsm_loss(strided, None, sigma, **kw), scorefast.dsm_loss(pred, None, sigma, **kw))
    assert torch.equal(
        scorefast.dsm_perturb(strided, sigma, seed=3, backend=kernel_backend.name),
        scorefast.dsm_perturb(pred, sigma, seed=3, backend=kernel_backend.name),
    )


def test_opcheck(kernel_backend):
    _require(kernel_backend, "dsm_loss")
    if kernel_backend.interpreted:
        pytest.skip("opcheck traces the op; interpreted Triton kernels cannot be traced")
    ns = scorefast.backend_registry.op_namespace(kernel_backend.name)
    x, sigma, pred = _data((3, 5), torch.float32, kernel_backend.device, seed=8)
    s = sigma.float()
    torch.library.opcheck(ns.dsm_perturb.default, (x, s, 7, 2, 0))
    torch.library.opcheck(ns.dsm_loss.default, (pred.requires_grad_(True), s, 2.0, False, 7, 2, 0))
    torch.library.opcheck(
        ns.dsm_loss_backward.default, (torch.ones(3, device=pred.device), pred.detach(), s, 2.0, True, 7, 2, 0)
    )


def test_compile_training_step():
    x, sigma, _ = _data((16, 3), torch.float32, "cpu", seed=9)
    sigma = sigma.float()
    net = torch.nn.Linear(3, 3)

    def step(x, sigma):
        xt = scorefast.dsm_perturb(x, sigma, seed=11, step=4, backend="cpp")
        return scorefast.dsm_loss(net(xt), x, sigma, seed=11, step=4, backend="cpp")

    eager = step(x, sigma)
    eager.backward()
    g_eager = net.weight.grad.clone()
    net.zero_grad()
    compiled = torch.compile(step, fullgraph=True)(x, sigma)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(net.weight.grad, g_eager)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sigma=0.0), ValueError, "sigma"),
        (dict(sigma=float("nan")), ValueError, "sigma"),
        (dict(sigma=torch.tensor([1.0, -1.0, 1.0])), ValueError, "sigma"),
        (dict(sigma=torch.ones(4)), ValueError, "sigma"),
        (dict(parametrization="v"), ValueError, "parametrization"),
        (dict(reduction="max"), ValueError, "reduction"),
        (dict(weighting_power=math.inf), ValueError, "weighting_power"),
        (dict(x=torch.zeros(3, 5)), ValueError, "shape"),
        (dict(step=2**32), ValueError, "step"),
    ],
)
def test_errors_name_the_argument(kwargs, error, match):
    args = dict(x=torch.zeros(3, 4), sigma=0.5, seed=1)
    args.update(kwargs)
    pred = torch.zeros(3, 4)
    with pytest.raises(error, match=match):
        scorefast.dsm_loss(pred, args.pop("x"), args.pop("sigma"), **args)
