"""Error budget of gmm_chain, step by step: every recorded step of a kernel's chain against the
float64 reference step taken from the kernel's own state before it.

Starting from the same state, one ULA or annealed step x + a s + b z of the kernel is within

    e = a tol_s + 8u (|x| + a |s| + b |z|) + b dz + 2u b |z|

of the reference's, elementwise (tol_s the score's budget, dz the contract's tolerance on the
normals, 2u b |z| the rounding of b = sqrt(2a)). 16-bit states are stored by rounding to nearest
even, by the reference too: a stored element then equals the kernel's exactly unless the
reference's value lies within e of a rounding boundary. MALA keeps x where the reference rejects
and moves to the proposal where it accepts; where the reference's |log alpha - log u| is within
twice the first-order bound on the kernel's error in log alpha, either is right (that particle is
not compared at that step, and is counted). Comparing step by step keeps the budgets those of one
step: a chain's own sensitivity (between modes it grows differences) plays no part, and any
state the kernel carries between steps (MALA's score and log-density) is checked by the next step.

``chain_error_bound`` is for chains recorded only every few steps: a bound carried along the
whole chain, each step's error added to the earlier ones as the noised mixture's drift moves them.
"""

from __future__ import annotations

import math

import torch

from ..ops import gmm as gmm_ref
from ..ops import noise as noise_ref
from ..ops.chain import gmm_chain_ref
from .budgets import U64, Comparison, compare, noise_tolerance, storage_ulp, unit_roundoff
from .gmm_budgets import covariance_eigenvalues, gmm_budget, score_lipschitz

DECISION_FACTOR = 2.0  # on the first-order bound of log alpha's error (the proposals differ slightly)


def _norm(t: torch.Tensor) -> torch.Tensor:
    return t.norm(dim=1)


def _store(v: torch.Tensor, err: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(v stored in ``dtype``, float64; elementwise bound on the kernel's stored value) where the
    kernel's value before storing is within ``err`` (N, D) of v (N, D). float32 and float64 states
    are the compute dtype (their rounding is in the 8u terms)."""
    if dtype not in (torch.float16, torch.bfloat16):
        return v, err
    nearest = v.to(dtype).double()
    ulp = storage_ulp(nearest, dtype)
    # the gap to the neighbour toward zero is half an ulp at a power of two
    pow2 = nearest.abs() == torch.exp2(torch.floor(torch.log2(nearest.abs())))
    toward_zero = (v - nearest) * nearest < 0
    gap = torch.where(toward_zero & pow2, ulp / 2, ulp)
    clear = (v - nearest).abs() + err < gap / 2
    return nearest, torch.where(clear, torch.zeros_like(v), err + ulp)


class _Proposal:
    """y = x + a s + b z from x (N, D) with the contract's z, stored in ``dtype``; ``tol`` (N, D)
    bounds the kernel's y. ``score_storage``: the dtype an implementation rounds s to first."""

    def __init__(self, x, s, tol_s, a, seed, step, particle_offset, dtype, score_storage=None):
        N, D = x.shape
        u = unit_roundoff(dtype)
        b = math.sqrt(2 * a)
        self.z = noise_ref.normal_ref(N, D, seed, step, particle_offset).double()
        self.dz = noise_tolerance(N, D, seed, step, particle_offset)
        e = a * tol_s + 8 * u * (x.abs() + a * s.abs() + b * self.z.abs()) + b * self.dz + 2 * u * b * self.z.abs()
        if score_storage is not None:
            e = e + a * storage_ulp(s, score_storage)
        self.y, self.tol = _store(x + a * s + b * self.z, e, dtype)


def _mala_decision(x, lp, tol_lp, prop: _Proposal, a, mixture, compute, q, seed, step, particle_offset, explicit):
    """(the reference accepts (N,), its decision is beyond the kernel's error (N,)) for the proposal
    ``prop`` from x (N, D) with log p(x) = lp (N,) within tol_lp."""
    N, D = x.shape
    u = unit_roundoff(compute)
    y, z = prop.y, prop.z
    s_y, lp_y, tol_sy, tol_ly = gmm_budget(y, mixture, None, compute, precision_gemm=explicit)
    w = x - y - a * s_y
    log_alpha = lp_y - lp - (w * w).sum(1) / (4 * a) + 0.5 * (z * z).sum(1)
    words = noise_ref.philox_words_ref(N, q + 1, seed, step, particle_offset)[:, q, 0]
    log_u = torch.log(noise_ref.uniform_ref(words).double())
    # the kernel's error in log alpha: log p(y) (moved by y's error), both log-densities' budgets,
    # the backward residual w, |z|^2, the sum's own rounding and log u's
    dy = _norm(prop.tol)
    dw = dy + a * (score_lipschitz(y, mixture) * dy + _norm(tol_sy)) + 4 * u * _norm(x.abs() + y.abs() + a * s_y.abs())
    wn, zn, dzn = _norm(w), _norm(z), _norm(prop.dz)
    d_log_alpha = (
        _norm(s_y) * dy
        + tol_ly
        + tol_lp
        + (2 * wn * dw + dw * dw + (D + 2) * u * wn * wn) / (4 * a)
        + zn * dzn
        + 0.5 * dzn * dzn
        + 0.5 * (D + 2) * u * zn * zn
        + 4 * u * (lp_y.abs() + lp.abs() + wn * wn / (4 * a) + 0.5 * zn * zn + log_u.abs())
    )
    return log_u < log_alpha, (log_alpha - log_u).abs() > DECISION_FACTOR * d_log_alpha


def compare_chain_steps(
    start: torch.Tensor,
    trajectory: torch.Tensor,
    accepted: torch.Tensor | None,
    mixture,
    step_sizes,
    sigmas,
    *,
    mala: bool,
    seed: int,
    step_offset: int = 0,
    particle_offset: int = 0,
    score_storage: torch.dtype | None = None,
    explicit_precision: bool = False,
) -> Comparison:
    """Every step of a chain recorded with trajectory_every=1 against the reference step.

    start (N, D): the chain's start (its dtype sets the budget); trajectory (T, N, D): the state
    after every step; accepted (N,): MALA's acceptance counts (None otherwise); step_sizes [T],
    sigmas [T] or None: the schedule; seed, step_offset, particle_offset: the noise counter.
    ``score_storage``: the dtype an implementation stores the score in before a ULA step (the
    reference backend's gmm_chain stores it in x's dtype); None: kept in the compute dtype.
    ``explicit_precision``: the implementation may take full covariances' explicit precisions
    (gmm_budget's ``precision_gemm``).
    """
    dtype = start.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32  # scores are never stored in 16 bits
    states = [start.detach().cpu().double()] + [f.detach().cpu().double() for f in trajectory]
    N, D = states[0].shape
    q = (D + 3) // 4
    reference_accepted = torch.zeros(N, dtype=torch.int64)
    always_decided = torch.ones(N, dtype=torch.bool)
    undecided_steps, max_error, worst = 0, 0.0, Comparison(True, 0.0, 0.0, 0.0, "")
    for t, a in enumerate(float(v) for v in step_sizes):
        x = states[t]
        counter = (seed, step_offset + t, particle_offset)
        sig = None if sigmas is None or float(sigmas[t]) == 0 else float(sigmas[t])
        s, lp, tol_s, tol_lp = gmm_budget(x, mixture, sig, compute, precision_gemm=explicit_precision)
        prop = _Proposal(x, s, tol_s, a, *counter, dtype, None if mala else score_storage)
        expected, tol, keep = prop.y, prop.tol, torch.ones(N, dtype=torch.bool)
        if mala:
            accept, keep = _mala_decision(x, lp, tol_lp, prop, a, mixture, compute, q, *counter, explicit_precision)
            reference_accepted += accept
            always_decided &= keep
            undecided_steps += int((~keep).sum())
            expected = torch.where(accept[:, None], prop.y, x)
            tol = torch.where(accept[:, None], prop.tol, torch.zeros_like(tol))  # a rejection keeps x exactly
        c = compare(states[t + 1][keep], expected[keep], tol[keep], f"step {t}")
        if not c.ok:
            return c
        max_error = max(max_error, c.max_error)
        if c.ratio > worst.ratio or t == 0:
            worst = c
    note = (
        f"; {undecided_steps} particle-steps met an acceptance too close to call and were not compared"
        if undecided_steps
        else ""
    )
    if accepted is not None:
        differ = int((accepted.detach().cpu() != reference_accepted)[always_decided].sum())
        if differ:
            return Comparison(
                False,
                max_error,
                worst.budget,
                worst.ratio,
                f"{differ} particles accepted a different number of proposals{note}",
            )
    return Comparison(
        True,
        max_error,
        worst.budget,
        worst.ratio,
        f"{len(states) - 1} steps, max |err| {max_error:.2e}, worst {worst.ratio:.2f} of budget{note}",
    )


def chain_error_bound(
    start: torch.Tensor,
    mixture,
    step_sizes,
    sigmas,
    *,
    mala: bool,
    seed: int,
    step_offset: int = 0,
    particle_offset: int = 0,
    explicit_precision: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the float64 reference chain's state after every step (T, N, D), a bound (T, N) on each
    particle's Euclidean distance from it after every step) for a whole chain run by a kernel
    from ``start`` (N, D) (float32 or float64: its dtype sets u), compared only where it is
    recorded. step_sizes [T], sigmas [T] or None, the counter, ``mala`` and
    ``explicit_precision`` as in compare_chain_steps; for MALA the caller compares the
    particles whose acceptances agree.

    With e_t = x_t - y_t (kernel minus reference), one ULA or annealed step gives
    e_{t+1} = e_t + a (s(x_t) - s(y_t)) + a (s'(x_t) - s(x_t)) + b (z' - z) + rounding. The score
    of the mixture noised by sigma_t has the Jacobian J = -sum_k r_k P_k + sum_k r_k (s_k - s)(s_k - s)^T,
    whose precisions P_k have eigenvalues in [mu, lam] = [1 / (max var + sigma^2), 1 / (min var + sigma^2)]
    and whose second term is at most V = sum_k r_k ||s_k - s||^2; so
    ||e_t + a (s(x_t) - s(y_t))|| <= G ||e_t|| with G = max(a lam - 1, 1 - a mu + a V) (V at y_t,
    first order in the distance). Without linearising, s(x) - s(y) = -sum_k r_k(x) P_k e +
    sum_k (r_k(x) - r_k(y)) s_k(y): a convex combination of the precisions, and the difference of
    two convex combinations of the component scores at y, at most their spread R_t (the largest
    ||s_j - s_k|| over components of nonzero weight); so also
    ||e_t + a (s(x_t) - s(y_t))|| <= max(1 - a mu, a lam - 1) ||e_t|| + a R_t. Each step then adds
    a ||score budget||, b ||contract tolerance on z|| and the update's rounding, 8u (|x| + a |s| +
    b |z|) + 2u b |z| for the kernel and for the float64 reference. A MALA step from equal
    decisions either moves as above or keeps both states: the bound never shrinks there.
    """
    dtype = start.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"chain_error_bound takes float32 or float64 states, got {dtype}")
    u = unit_roundoff(dtype) + U64
    x0 = start.detach().cpu().double()
    N, D = x0.shape
    seed = seed % 2**64
    counter = dict(seed=seed, step_offset=step_offset, particle_offset=particle_offset)
    _, _, frames = gmm_chain_ref(x0, mixture, step_sizes, sigmas, mala=mala, trajectory_every=1, **counter)
    states = [x0, *frames]
    means, logw, cov = mixture.means.cpu(), mixture.log_weights.cpu(), mixture.cov.cpu()
    eig = covariance_eigenvalues(mixture)
    live = torch.isfinite(logw)
    bound = torch.zeros(N, dtype=torch.float64)
    bounds = []
    for t, a in enumerate(float(v) for v in step_sizes):
        y = states[t]
        sig = None if sigmas is None or float(sigmas[t]) == 0 else float(sigmas[t])
        s2 = 0.0 if sig is None else sig * sig
        lam, mu = 1.0 / (float(eig.min()) + s2), 1.0 / (float(eig.max()) + s2)
        b = math.sqrt(2 * a)
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        s, _, tol_s, _ = gmm_budget(y, mixture, sig, compute, precision_gemm=explicit_precision)
        lj, sk = gmm_ref.gmm_log_joint_ref(y, means, logw, mixture.kind, cov, sig)
        r = torch.softmax(lj, dim=1)
        V = torch.where(r > 0, r * ((sk - s[:, None]) ** 2).sum(-1), torch.zeros_like(r)).sum(1)
        live_sk = sk[:, live]
        R = (live_sk[:, :, None] - live_sk[:, None, :]).norm(dim=-1).flatten(1).amax(1)
        G = torch.clamp(1 - a * mu + a * V, min=a * lam - 1)
        C = max(1 - a * mu, a * lam - 1)
        z = noise_ref.normal_ref(N, D, seed, step_offset + t, particle_offset).double()
        dz = noise_tolerance(N, D, seed, step_offset + t, particle_offset)
        added = a * tol_s + b * dz + 8 * u * (y.abs() + a * s.abs() + b * z.abs()) + 2 * u * b * z.abs()
        moved = torch.minimum(G * bound, C * bound + a * R) + _norm(added)
        bound = torch.maximum(bound, moved) if mala else moved
        bounds.append(bound)
    return torch.stack(states[1:]), torch.stack(bounds)
