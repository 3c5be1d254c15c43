"""Whole-chain benchmarks on mixture targets, in particle-steps per second, against the eager
PyTorch loop (matmul-form score, ``randn_like`` noise) and that loop with ``torch.compile``
of its step:

* samplers: the fused chain (``gmm_chain``, auto backend) and the generic sampler with the
  fused ops (gmm_score + langevin_step per step);
* gmm_chain: the fused chain on each backend that runs it natively here.
"""

from __future__ import annotations

import math

import torch

from scorefast import gmm_chain, samplers, targets
from scorefast.nn import geometric_sigmas

from . import harness
from .baselines import gmm_matmul


def cases(quick: bool = False) -> list[dict]:
    """The chains: two-mode ULA at 1e3 and 1e5 particles, the 25-mode grid with annealed
    Langevin, random 64-D and 32-D full-covariance mixtures with MALA. ``quick``: 10x fewer
    particles (beyond the first case) and steps.

    Each case: name, target (a GaussianMixture), method ("ula", "annealed", "mala"), N, and
    steps and step size a (ULA, MALA) or sigmas, per_level and eps (annealed).
    """
    f = 10 if quick else 1
    return [
        dict(name="two_mode ULA", target=targets.two_mode_2d(), method="ula", N=1000, steps=2000 // f, a=0.01),
        dict(name="two_mode ULA", target=targets.two_mode_2d(), method="ula", N=100_000 // f, steps=2000 // f, a=0.01),
        dict(
            name="grid25 annealed 10x100",
            target=targets.grid(),
            method="annealed",
            N=10_000 // f,
            sigmas=geometric_sigmas(12.0, 0.05, 10),
            per_level=100 // f,
            eps=5e-5,
        ),
        dict(
            name="random 64-D MALA",
            target=targets.random_mixture(8, 64, seed=0, spread=1.0),
            method="mala",
            N=10_000 // f,
            steps=200 // f,
            a=0.01,
        ),
        dict(
            name="random 32-D full MALA",
            target=targets.random_mixture(8, 32, seed=0, spread=1.0, kind="full"),
            method="mala",
            N=10_000 // f,
            steps=100 // f,
            a=0.01,
        ),
    ]


def schedule(case: dict) -> list[tuple[float | None, float]]:
    """(noise level or None, step size) of every step of a case's chain."""
    if case["method"] == "annealed":
        last = float(case["sigmas"][-1])
        return [
            (float(s), case["eps"] * float(s) ** 2 / last**2) for s in case["sigmas"] for _ in range(case["per_level"])
        ]
    return [(None, case["a"])] * case["steps"]


def _eager_step_fns(mix, method, device):
    params = {}

    def p(sigma):
        if sigma not in params:
            q = mix.kernel_params(torch.float32, device, None if sigma is None else sigma * sigma, False)
            params[sigma] = (q["means"], q["inv_var"], q["factor"], q["log_const"])
        return params[sigma]

    def ula_step(x, a, means, inv_var, factor, log_const):
        s, _ = gmm_matmul(x, means, inv_var, factor, log_const)
        return x + a * s + math.sqrt(2 * a) * torch.randn_like(x)

    def mala_step(x, s_x, lp_x, a, means, inv_var, factor, log_const):
        z = torch.randn_like(x)
        y = x + a * s_x + math.sqrt(2 * a) * z
        s_y, lp_y = gmm_matmul(y, means, inv_var, factor, log_const)
        log_alpha = lp_y - lp_x - ((x - y - a * s_y) ** 2).sum(1) / (4 * a) + 0.5 * (z * z).sum(1)
        acc = torch.log(torch.rand_like(lp_x)) < log_alpha
        return (torch.where(acc[:, None], y, x), torch.where(acc[:, None], s_y, s_x), torch.where(acc, lp_y, lp_x))

    return p, (mala_step if method == "mala" else ula_step)


def _run_loop(step, p, case, x0):
    x = x0.clone()
    if case["method"] == "mala":
        s, lp = gmm_matmul(x, *p(None))
        for _, a in schedule(case):
            x, s, lp = step(x, s, lp, a, *p(None))
        return x
    for sigma, a in schedule(case):
        x = step(x, a, *p(sigma))
    return x


def eager_loop(case: dict, x0: torch.Tensor, compile_step: bool = False):
    """The eager PyTorch chain of a case from x0 (N, D) float32, as a callable returning the
    final state: matmul-form score, randn_like noise; with ``compile_step``, torch.compile of
    its step."""
    p, step = _eager_step_fns(case["target"], case["method"], x0.device)
    if compile_step:
        step = torch.compile(step, dynamic=False)
    return lambda: _run_loop(step, p, case, x0)


def _chain_kwargs(case: dict) -> dict:
    """gmm_chain's arguments for a case (its schedule), seed 1."""
    if case["method"] == "annealed":
        return dict(
            method="annealed", sigmas=case["sigmas"], steps_per_level=case["per_level"], epsilon=case["eps"], seed=1
        )
    return dict(method=case["method"], steps=case["steps"], step_size=case["a"], seed=1)


def _sampler_fn(case: dict, x0: torch.Tensor):
    """The generic sampler of a case given the score as a plain callable, so it runs one fused
    gmm_score + langevin_step per step (given the mixture itself it would run gmm_chain)."""
    mix, T = case["target"], len(schedule(case))
    if case["method"] == "ula":
        return lambda: samplers.langevin(lambda y: mix.score(y), x0.clone(), steps=T, step_size=case["a"], seed=1)
    if case["method"] == "annealed":
        return lambda: samplers.annealed_langevin(
            lambda y, s: mix.score(y, sigma=s),
            x0.clone(),
            case["sigmas"],
            steps_per_level=case["per_level"],
            epsilon=case["eps"],
            seed=1,
            final_denoise=False,
        )
    return lambda: samplers.mala(
        lambda y: mix.score(y), lambda y: mix.log_prob(y), x0.clone(), steps=T, step_size=case["a"], seed=1
    )


def _run(op: str, chain_cases: list[dict], device, compile_reference: bool, fused_providers) -> dict:
    """Time every case's eager loop, its compiled step and ``fused_providers(case, x0)``
    (name -> callable), each chain from the same start x0 (N, D) ~ N(0, 9 I)."""
    harness.allow_recompiles(256)
    rows = []
    for case in chain_cases:
        mix, N = case["target"], case["N"]
        x0 = (3.0 * torch.randn(N, mix.dim, generator=torch.Generator().manual_seed(0))).float().to(device)
        T = len(schedule(case))
        providers = {"eager loop": eager_loop(case, x0)}
        if compile_reference:
            providers["torch.compile step"] = eager_loop(case, x0, compile_step=True)
        providers.update(fused_providers(case, x0))
        times = {name: harness.time_fn(fn, device, min_time=0.2, min_reps=2) for name, fn in providers.items()}
        for t in times.values():
            t["particle_steps_per_s"] = N * T / t["median"]
            t["speedup_vs_eager"] = times["eager loop"]["median"] / t["median"]
        rows.append({"case": case["name"], "N": N, "D": mix.dim, "K": mix.num_components, "steps": T, "times": times})
    return {
        "op": op,
        **harness.run_info(device),
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def run_samplers_bench(quick: bool = False, compile_reference: bool = True, device=torch.device("cpu")) -> dict:
    """Whole chains: the eager loop, torch.compile of its step, the generic sampler with the
    fused ops ("scorefast sampler") and gmm_chain with the auto backend ("scorefast chain").

    Runs ``cases(quick)``. Returns the result dict (JSON fields as in
    bench/results/samplers-*.json): per row case, N, D, K, steps and per provider the times
    with particle_steps_per_s and speedup_vs_eager.
    """

    def fused(case, x0):
        return {
            "scorefast sampler": _sampler_fn(case, x0),
            "scorefast chain": lambda: gmm_chain(x0, case["target"], **_chain_kwargs(case)),
        }

    return _run("samplers (whole chains)", cases(quick), device, compile_reference, fused)


def run_gmm_chain_bench(
    quick: bool = False, compile_reference: bool = True, device=torch.device("cpu"), backends=None
) -> dict:
    """gmm_chain on each backend (providers named by backend) against the eager loop and
    torch.compile of its step, on the same cases and with the same fields as
    run_samplers_bench (op "gmm_chain").

    backends: names, or None for every backend with a native gmm_chain kernel on ``device``.
    """
    names = harness.timed_backends(device, "gmm_chain_", backends)

    def fused(case, x0):
        return {
            name: (lambda name=name: gmm_chain(x0, case["target"], backend=name, **_chain_kwargs(case)))
            for name in names
        }

    return _run("gmm_chain", cases(quick), device, compile_reference, fused)


def format_table(result: dict) -> str:
    """Particle-steps per second per provider, with the speed-up over the eager loop."""
    label = "Samplers" if result["op"].startswith("samplers") else result["op"]
    columns = [
        harness.Column("case", 24, lambda r: r["case"], align="<"),
        harness.Column("N", 7, lambda r: str(r["N"])),
        harness.Column("steps", 6, lambda r: str(r["steps"])),
    ]
    columns += [
        harness.Column(
            p,
            24,
            lambda r, p=p: f"{r['times'][p]['particle_steps_per_s']:12.3g} {r['times'][p]['speedup_vs_eager']:9.1f}x",
        )
        for p in result["providers"]
    ]
    title = (
        f"{label} on {result['machine']}, torch {result['torch']} (particle-steps/s; x = speed-up over the eager loop)"
    )
    return harness.format_table(title, columns, result["rows"])
