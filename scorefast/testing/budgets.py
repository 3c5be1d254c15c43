"""Error budgets: how far a kernel may be from the float64 reference, element by element.

Kernels compute in float32 (float64 for float64 storage; 16-bit storage is computed in float32)
and are compared with the reference evaluated in float64 on the same inputs. A budget adds up
the rounding errors each operation may make (u, the unit roundoff of the compute dtype, times
the magnitude of its terms), the noise contract's tolerance between two float32 Box-Muller
implementations, and one unit in the last place of 16-bit or float32 storage.

``compare`` measures a result against its budget; ``assert_within`` raises when it is over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff
# Largest Box-Muller radius: the uniforms are >= 1e-7, so r = sqrt(-2 log u1) <= sqrt(-2 log 1e-7).
MAX_RADIUS = math.sqrt(-2.0 * math.log(1e-7))
# |z_a - z_b| between two float32 implementations of the contract (identical uniforms): each has
# <= 2 ulp in log, 0.5 in sqrt, 2 in cos/sin, 0.5 in the product, i.e. <= r * 3.6e-7 from the
# true value; two of them differ by <= r * 7.2e-7. We allow r * 1e-6.
NOISE_REL_TOL = 1e-6

_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u of the dtype the kernels compute in for ``dtype`` storage (float64, else float32)."""
    return U64 if dtype == torch.float64 else U32


def storage_ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One unit in the last place of ``dtype`` at |values| (a float64 tensor of values' shape)."""
    mant = _MANTISSA_BITS[dtype]
    tiny = torch.finfo(dtype).tiny * 2.0**-mant  # smallest subnormal
    v = values.abs().double().clamp(min=torch.finfo(dtype).tiny)
    return torch.maximum(torch.exp2(torch.floor(torch.log2(v)) - mant), torch.tensor(tiny, dtype=torch.float64))


def storage_rounding(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The budget for storing float32 results in ``dtype``: one ulp for 16-bit and float32, 0 for float64."""
    if dtype == torch.float64:
        return torch.zeros_like(values, dtype=torch.float64)
    return storage_ulp(values, dtype)


# --- the noise contract ---------------------------------------------------------------------


def contract_radius(
    num_particles: int, particle_size: int, seed: int, step: int = 0, particle_offset: int = 0
) -> torch.Tensor:
    """Box-Muller radius r = sqrt(-2 log u1) of every element's pair, float64 (P, D)."""
    from ..ops.noise import contract_outputs_ref, uniform_ref

    def radii(words: torch.Tensor) -> torch.Tensor:
        u = uniform_ref(words).double()
        u1 = torch.stack((u[..., 0], u[..., 0], u[..., 2], u[..., 2]), dim=-1).clamp(min=1e-7)
        return torch.sqrt(-2.0 * torch.log(u1))

    return contract_outputs_ref(num_particles, particle_size, seed, step, particle_offset, radii)


def noise_tolerance(
    num_particles: int, particle_size: int, seed: int, step: int = 0, particle_offset: int = 0
) -> torch.Tensor:
    """Per-element tolerance between two implementations' normals: r * NOISE_REL_TOL, float64 (P, D)."""
    return NOISE_REL_TOL * contract_radius(num_particles, particle_size, seed, step, particle_offset)


# --- langevin_step --------------------------------------------------------------------------


def langevin_tolerance(
    x, score, score_cond, guidance, step_size, noise_scale, ref, dtype, noise_from_contract: bool
) -> torch.Tensor:
    """Elementwise bound on |kernel - reference(float64)| for langevin_step, float64 of x's shape.

    x, score, score_cond (or None): the kernel's inputs (P, ...); step_size, noise_scale: floats
    or (P,) tensors; ref: the float64 reference result; dtype: x's storage dtype.

    Compute-precision rounding: g = s + w (s_c - s) and x + a g + b z take a handful of
    roundings, each <= u * (magnitude of the terms): we allow 8 u * (|x| + |a|(|s| + |w|(|s|+|s_c|)) + |b| r_max).
    Contract noise adds |b| * the noise tolerance; 16-bit or float32 storage adds one ulp.
    """
    P = x.shape[0]
    f = lambda t: t.reshape(P, math.prod(x.shape[1:])).double()  # noqa: E731
    pp = lambda v: v.double().reshape(P, 1) if isinstance(v, torch.Tensor) else float(v)  # noqa: E731
    s = f(score).abs()
    g_mag = s if score_cond is None else s + abs(guidance) * (s + f(score_cond).abs())
    a, b = pp(step_size), pp(noise_scale)
    a_abs = a.abs() if isinstance(a, torch.Tensor) else abs(a)
    b_abs = b.abs() if isinstance(b, torch.Tensor) else abs(b)
    mag = f(x).abs() + a_abs * g_mag + b_abs * MAX_RADIUS
    tol = 8 * unit_roundoff(dtype) * mag
    if noise_from_contract:
        tol = tol + b_abs * NOISE_REL_TOL * MAX_RADIUS
    tol = tol + storage_rounding(f(ref), dtype)
    return tol.reshape(x.shape)


# --- denoising score matching ---------------------------------------------------------------


def dsm_perturb_tolerance(
    x: torch.Tensor,
    sigma: torch.Tensor,
    ref: torch.Tensor,
    dtype: torch.dtype,
    seed: int,
    step: int,
    particle_offset: int,
) -> torch.Tensor:
    """Bound on |dsm_perturb - reference| for x (B, ...), sigma (B,): sigma times the noise
    tolerance, 4u (|x| + sigma r_max) for the product and sum, one storage ulp."""
    B = x.shape[0]
    s = sigma.double().cpu().reshape(B, *([1] * (x.dim() - 1)))
    z_tol = noise_tolerance(B, math.prod(x.shape[1:]), seed, step, particle_offset).reshape(x.shape)
    tol = s * z_tol + 4 * unit_roundoff(dtype) * (x.double().cpu().abs() + s * MAX_RADIUS)
    return tol + storage_rounding(ref.double(), dtype)


def dsm_residual(
    pred: torch.Tensor,
    sigma: torch.Tensor,
    eps_form: bool,
    dtype: torch.dtype,
    seed: int,
    step: int,
    particle_offset: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference residual r (float64 (B, D): eps - z, or s + z / sigma) and its per-element
    error bound dr: the kernel's z differs by <= r_z * NOISE_REL_TOL, forming r adds 2u (|pred| + |z|/sigma)."""
    from ..ops.dsm import dsm_noise_ref

    B = pred.shape[0]
    u = unit_roundoff(dtype)
    z = dsm_noise_ref(pred.cpu(), seed, step, particle_offset).double()
    p = pred.detach().cpu().reshape(B, math.prod(pred.shape[1:])).double()
    s = sigma.detach().cpu().double()[:, None]
    dz = noise_tolerance(B, p.shape[1], seed, step, particle_offset)
    if eps_form:
        return p - z, dz + 2 * u * (p.abs() + z.abs())
    return p + z / s, dz / s + 2 * u * (p.abs() + z.abs() / s)


def dsm_loss_budget(
    pred: torch.Tensor,
    sigma: torch.Tensor,
    eps_form: bool,
    power: float,
    dtype: torch.dtype,
    seed: int,
    step: int,
    particle_offset: int,
    upstream: torch.Tensor | None = None,
):
    """(per-sample loss (B,), its tolerance, the gradient of sum_b c_b l_b w.r.t. pred (B, D), its
    tolerance), float64; c = ``upstream`` (B,) (default ones).

    l_b = w_b ||r_b||^2 with w = 1 (eps form) or sigma^p / 2: |dl| <= w (2|r| dr + dr^2) summed,
    plus 4u l for the sum; the gradient 2 c w r is within 2 c w (dr + 2u|r|) and one storage ulp
    of pred's dtype.
    """
    r, dr = dsm_residual(pred, sigma, eps_form, dtype, seed, step, particle_offset)
    u = unit_roundoff(dtype)
    B = r.shape[0]
    w = torch.ones(B, dtype=torch.float64) if eps_form else 0.5 * sigma.detach().cpu().double() ** power
    loss = w * (r * r).sum(1)
    loss_tol = w * (2 * r.abs() * dr + dr * dr).sum(1) + 4 * u * loss
    cw = 2 * w * (torch.ones(B, dtype=torch.float64) if upstream is None else upstream.detach().cpu().double())
    grad = cw[:, None] * r
    grad_tol = cw[:, None] * (dr + 2 * u * r.abs()) + storage_rounding(grad, dtype)
    return loss, loss_tol, grad, grad_tol


# --- comparing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """How a result compares with its reference.

    ok: every element within its budget (and NaN exactly where the reference is NaN).
    max_error: the largest |actual - expected| (NaN when the NaN patterns differ).
    budget: the budget of the element with the largest error / budget.
    ratio: the largest error / budget (<= 1 passes; inf where an error meets a zero budget).
    detail: one line for people.
    """

    ok: bool
    max_error: float
    budget: float
    ratio: float
    detail: str


def mismatch(detail: str) -> Comparison:
    """A failed comparison that has no error to measure (a wrong dtype, shape or return value)."""
    return Comparison(False, math.nan, math.nan, math.inf, detail)


def compare(actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor, what: str = "") -> Comparison:
    """Compare ``actual`` with ``expected`` (any shapes that broadcast with ``tol``) elementwise."""
    a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
    t = tol.detach().cpu().double().expand_as(e) if isinstance(tol, torch.Tensor) else torch.full_like(e, float(tol))
    prefix = f"{what}: " if what else ""
    if a.shape != e.shape:
        return mismatch(f"{prefix}shape {list(a.shape)}, expected {list(e.shape)}")
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if not torch.equal(nan_a, nan_e):
        return mismatch(
            f"{prefix}NaN pattern differs ({int(nan_a.sum())} NaN, expected {int(nan_e.sum())})",
        )
    keep = ~nan_e
    err, t = (a - e).abs()[keep], t[keep]
    if err.numel() == 0:
        return Comparison(True, 0.0, 0.0, 0.0, f"{prefix}nothing to compare")
    ratio = torch.where(err == 0, torch.zeros_like(err), err / t)
    worst = int(torch.argmax(torch.nan_to_num(ratio, nan=math.inf)))
    bad = ~(err <= t)  # NaN errors (inf - inf) count as over budget
    max_error, budget, worst_ratio = float(err.max()), float(t[worst]), float(ratio[worst])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        where = [int(v) for v in keep.nonzero()[i]]
        detail = (
            f"{prefix}{int(bad.sum())} of {err.numel()} over budget; first at {where}: "
            f"|{a[keep][i].item():.9g} - {e[keep][i].item():.9g}| = {err[i].item():.3e} > {t[i].item():.3e}"
        )
        return Comparison(False, max_error, budget, worst_ratio, detail)
    return Comparison(
        True, max_error, budget, worst_ratio, f"{prefix}max |err| {max_error:.2e}, worst {worst_ratio:.2f} of budget"
    )


def combine(*comparisons: Comparison) -> Comparison:
    """One comparison for several outputs: ok if all are, the numbers of the worst one."""
    worst = max(comparisons, key=lambda c: (not c.ok, c.ratio if not math.isnan(c.ratio) else math.inf))
    failed = [c.detail for c in comparisons if not c.ok]
    detail = "; ".join(failed) if failed else "; ".join(c.detail for c in comparisons)
    return Comparison(
        all(c.ok for c in comparisons), max(c.max_error for c in comparisons), worst.budget, worst.ratio, detail
    )


def assert_within(actual: torch.Tensor, expected: torch.Tensor, tol: torch.Tensor, what: str = "") -> Comparison:
    """|actual - expected| <= tol elementwise, NaN only where expected is NaN; raises
    AssertionError naming the error and the budget, else returns the comparison."""
    c = compare(actual, expected, tol, what)
    if not c.ok:
        raise AssertionError(c.detail)
    return c
