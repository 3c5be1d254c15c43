"""``scorefast verify --statistical``: do the samplers reach their targets?

Each case starts 10000 independent chains (float32) from exact samples of a start distribution
and checks that, after the sampler, they follow a known distribution: mode weights, mean and
covariance against the exact values at a false-alarm level of 1e-6 per statistic, and the energy
distance of 1000 of them to exact samples against a threshold calibrated on exact-vs-exact draws
(``scorefast.testing.statistics``). The targets are exact, or the sampler's bias is far below
the thresholds:

* ULA on a Gaussian N(mu, C) stays Gaussian, with covariance Sigma_t = M Sigma_{t-1} M^T + 2a I
  (M = I - a C^-1): exact for any step, so a wrong step size shows (a = 0.2 on C with
  eigenvalues 2 and 0.5: the stationary variances are 2.11 and 0.625; twice the step gives 2.22
  and 0.833).
* ULA on the two-mode mixture with a = 0.01: its O(a) bias (about a/2 = 0.5 % of the covariance)
  is far below the thresholds (4 to 7 % of the covariance entries for 10000 particles).
* annealed Langevin from exact samples of the mixture noised by sigma_1 = 1 through sigma = 0.5,
  0.25 (200 steps a level, epsilon = 0.015): the particles follow the mixture noised by 0.25 up to
  the last level's ULA bias (0.75 %) and what is left of the previous level (e^-5 of it).
* MALA leaves the target exactly invariant: chains started from it stay in it.

The chains run through ``scorefast.gmm_chain`` (one fused op) and through ``scorefast.samplers``
with callable scores (every step through langevin_step and gmm_score). Every backend draws the
same noise, so their chains agree up to rounding: the reference backend (slow: its noise is
computed with int64 tensor ops) is checked only when no compiled backend runs natively.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import chain, samplers, targets
from ..targets import GaussianMixture
from ..testing import statistics
from .plan import BackendPlan
from .records import FAIL, PASS, SKIP, Record

PARTICLES = 10_000
ENERGY_SAMPLES = 1_000
SEED = 20_240
START_SEED = 7
ULA_STEP, ULA_STEPS = 0.01, 200
SIGMAS, EPSILON, STEPS_PER_LEVEL = (1.0, 0.5, 0.25), 0.03, 200
MALA_STEP, MALA_STEPS = 0.5, 100
GAUSSIAN_STEP, GAUSSIAN_STEPS = 0.2, 40


@dataclass(frozen=True)
class SamplerCase:
    """Chains from exact samples of ``start``, run by ``run(x, backend)``, must follow ``target``
    (``target_name`` keys its energy-distance calibration). Variants read ``target:<sampler>``."""

    op: str
    variant: str
    start: GaussianMixture
    target: GaussianMixture
    target_name: str
    run: Callable[[torch.Tensor, str], torch.Tensor]
    note: str


def noised(mixture: GaussianMixture, sigma: float) -> GaussianMixture:
    """The mixture convolved with N(0, sigma^2 I) (full covariances)."""
    eye = torch.eye(mixture.dim, dtype=torch.float64)
    return GaussianMixture(
        mixture.means, log_weights=mixture.log_weights, covariance=mixture.covariances() + sigma**2 * eye
    )


def ula_gaussian(step_size: float, steps: int) -> tuple[GaussianMixture, GaussianMixture]:
    """(a Gaussian N(mu, C) with eigenvalues 2 and 0.5, rotated; the law of ULA after ``steps``
    steps of size a from it: N(mu, Sigma_T), Sigma_t = M Sigma_{t-1} M^T + 2a I, M = I - a C^-1)."""
    c, s = math.cos(0.5), math.sin(0.5)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    C = R @ torch.diag(torch.tensor([2.0, 0.5], dtype=torch.float64)) @ R.T
    M = torch.eye(2, dtype=torch.float64) - step_size * torch.linalg.inv(C)
    sigma = C.clone()
    for _ in range(steps):
        sigma = M @ sigma @ M.T + 2 * step_size * torch.eye(2, dtype=torch.float64)
    mean = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    return GaussianMixture(mean, covariance=C[None]), GaussianMixture(mean, covariance=((sigma + sigma.T) / 2)[None])


def cases() -> list[SamplerCase]:
    two = targets.two_mode_2d()
    gauss, gauss_after = ula_gaussian(GAUSSIAN_STEP, GAUSSIAN_STEPS)
    noised_start, noised_end = noised(two, SIGMAS[0]), noised(two, SIGMAS[-1])
    ula = dict(steps=ULA_STEPS, step_size=ULA_STEP, seed=SEED)
    gauss_ula = dict(steps=GAUSSIAN_STEPS, step_size=GAUSSIAN_STEP, seed=SEED)
    annealed = dict(sigmas=list(SIGMAS), steps_per_level=STEPS_PER_LEVEL, epsilon=EPSILON, seed=SEED)
    mala = dict(steps=MALA_STEPS, step_size=MALA_STEP, seed=SEED)
    score = lambda b: lambda y, sigma=None: two.score(y, sigma, backend=b)  # noqa: E731
    log_prob = lambda b: lambda y: two.log_prob(y, backend=b)  # noqa: E731
    fused = lambda target, method, kw: lambda x, b: chain.gmm_chain(x, target, method=method, backend=b, **kw).x  # noqa: E731
    ula_note = f"ULA bias ~ a/2 = {ULA_STEP / 2:.3f} of the covariance, far below the thresholds"
    annealed_note = f"the mixture noised by {SIGMAS[-1]}; bias ~ a_L/2 = epsilon/4 and e^-5 of the last level's change"
    return [
        SamplerCase(
            "gmm_chain",
            "target:ula_gaussian",
            start=gauss,
            target=gauss_after,
            target_name="gaussian after ULA",
            run=fused(gauss, "ula", gauss_ula),
            note=f"exact: ULA's Gaussian law after {GAUSSIAN_STEPS} steps",
        ),
        SamplerCase(
            "gmm_chain",
            "target:ula",
            start=two,
            target=two,
            target_name="two_mode",
            run=fused(two, "ula", ula),
            note=ula_note,
        ),
        SamplerCase(
            "gmm_chain",
            "target:annealed",
            start=noised_start,
            target=noised_end,
            target_name="two_mode noised",
            run=fused(two, "annealed", annealed),
            note=annealed_note,
        ),
        SamplerCase(
            "gmm_chain",
            "target:mala",
            start=two,
            target=two,
            target_name="two_mode",
            run=fused(two, "mala", mala),
            note="exact: MALA leaves the target invariant",
        ),
        SamplerCase(
            "samplers",
            "target:langevin",
            start=two,
            target=two,
            target_name="two_mode",
            run=lambda x, b: samplers.langevin(score(b), x, backend=b, **ula),
            note=ula_note,
        ),
        SamplerCase(
            "samplers",
            "target:annealed_langevin",
            start=noised_start,
            target=noised_end,
            target_name="two_mode noised",
            note=annealed_note,
            run=lambda x, b: samplers.annealed_langevin(score(b), x, final_denoise=False, backend=b, **annealed),
        ),
        SamplerCase(
            "samplers",
            "target:mala",
            start=two,
            target=two,
            target_name="two_mode",
            run=lambda x, b: samplers.mala(score(b), log_prob(b), x, backend=b, **mala)[0],
            note="exact: MALA leaves the target invariant",
        ),
    ]


def run_case(case: SamplerCase, backend: BackendPlan) -> Record:
    """Run one case on ``backend`` and judge its particles."""
    start = time.perf_counter()
    record = dict(
        op=case.op,
        backend=backend.name,
        dtype="float32",
        variant=case.variant,
        kind="statistical",
        device=str(backend.device),
    )
    try:
        x0 = case.start.sample(PARTICLES, seed=START_SEED).float().to(backend.device)
        x = case.run(x0, backend.name).detach().cpu()
        sample = lambda n, seed: case.target.sample(n, seed=seed)  # noqa: E731
        stats = statistics.moment_statistics(x, case.target)
        stats.append(statistics.energy_statistic(x, sample, ENERGY_SAMPLES, key=case.target_name))
    except Exception as exc:  # the sampler crashed: its failure
        return Record(
            **record,
            status=FAIL,
            detail=f"{type(exc).__name__}: {exc}".splitlines()[0],
            seconds=time.perf_counter() - start,
        )
    worst = max(stats, key=lambda s: s.deviation / s.threshold if s.threshold > 0 else float("inf"))
    failed = [s for s in stats if not s.ok]
    detail = "; ".join(map(str, failed)) if failed else f"worst: {worst}"
    extra = {
        "particles": PARTICLES,
        "alpha": statistics.DEFAULT_ALPHA,
        "note": case.note,
        "statistics": [dict(name=s.name, value=s.value, exact=s.exact, threshold=s.threshold) for s in stats],
    }
    return Record(
        **record,
        status=FAIL if failed else PASS,
        max_error=worst.deviation,
        budget=worst.threshold,
        ratio=worst.deviation / worst.threshold,
        detail=detail,
        seconds=time.perf_counter() - start,
        extra=extra,
    )


def run_statistical_checks(backends: list[BackendPlan], ops=None, reporter=None) -> list[Record]:
    """Every case whose op ('gmm_chain', 'samplers') is in ``ops`` (default all) on every backend
    that runs natively here (emulated backends are skipped: the chains take thousands of steps; the
    reference when a compiled backend runs: they draw the same noise)."""
    records = []
    selected = [c for c in cases() if ops is None or c.op in ops]
    native = [b.name for b in backends if b.unavailable is None and not b.emulated and b.name != "reference"]
    for backend in backends:
        for case in selected:
            base = dict(op=case.op, backend=backend.name, dtype="float32", variant=case.variant, kind="statistical")
            if backend.unavailable is not None:
                status = FAIL if backend.required else SKIP
                r = Record(**base, status=status, detail=backend.unavailable)
            elif backend.emulated:
                r = Record(**base, status=SKIP, detail="runs emulated here: too slow for thousands of steps")
            elif backend.name == "reference" and native:
                r = Record(
                    **base, status=SKIP, detail=f"same noise, same chains up to rounding: checked on {native[0]}"
                )
            else:
                r = run_case(case, backend)
            records.append(r)
            if reporter is not None:
                reporter.record(r)
    return records
