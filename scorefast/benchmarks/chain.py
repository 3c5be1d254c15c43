"""Whole-chain benchmarks on mixture targets, in particle-steps per second, against the eager
PyTorch loop (matmul-form score, ``randn_like`` noise) and that loop with ``torch.compile``
of its step:

* samplers: the fused chain (``gmm_chain``, auto backend) and the generic sampler with the
  fused ops (gmm_score + langevin_step per step);
* gmm_chain: the fused chain on each backend that runs it natively here.

The samplers benchmark also times BlackJAX (``blackjax_provider``) on the ULA and MALA cases
when JAX and BlackJAX are installed, and records why not otherwise.
"""

from __future__ import annotations

import math

import torch

from scorefast import gmm_chain, samplers, targets
from scorefast.nn import geometric_sigmas

from . import fma_peak, harness
from . import gmm as gmm_bench
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
            eps=1e-4,
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


# The D sweep of gmm_chain (bench_chain.py --d-sweep): 16-component random mixtures at particle
# sizes where the CPU kernels change layout (register tiles of particles up to D = 8, blocks of
# particles past it, partial vectors of coordinates at 12 and 24; full covariances through
# explicit precisions per noise level from 9).
DSWEEP_DIMS = (4, 6, 8, 12, 16, 24, 32)


def dsweep_cases(quick: bool = False) -> list[dict]:
    """ULA (isotropic and full covariance, 100 steps) and annealed Langevin (full covariance,
    10 levels of 10 steps) on 10^4 particles at every D of DSWEEP_DIMS; ``quick``: 10x fewer
    particles and steps."""
    f = 10 if quick else 1
    out = []
    for D in DSWEEP_DIMS:
        iso = targets.random_mixture(16, D, seed=0, spread=2.0)
        full = targets.random_mixture(16, D, seed=0, spread=2.0, kind="full")
        out.append(dict(name=f"{D}-D isotropic ULA", target=iso, method="ula", N=10_000 // f, steps=100 // f, a=0.01))
        out.append(dict(name=f"{D}-D full ULA", target=full, method="ula", N=10_000 // f, steps=100 // f, a=0.01))
        out.append(
            dict(
                name=f"{D}-D full annealed 10x10",
                target=full,
                method="annealed",
                N=10_000 // f,
                sigmas=geometric_sigmas(2.0, 0.1, 10),
                per_level=max(1, 10 // f),
                eps=1e-3,
            )
        )
    return out


def schedule(case: dict) -> list[tuple[float | None, float]]:
    """(noise level or None, step size) of every step of a case's chain."""
    if case["method"] == "annealed":
        last = float(case["sigmas"][-1])
        return [
            (float(s), case["eps"] / 2 * float(s) ** 2 / last**2)
            for s in case["sigmas"]
            for _ in range(case["per_level"])
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


def multiply_adds_per_step(case: dict) -> int:
    """Multiply-adds of one particle-step's mixture score, as gmm_score's kernels count them
    (gmm.multiply_adds for one point); the noise and the update are not counted."""
    mix = case["target"]
    return gmm_bench.multiply_adds(mix.kind, 1, mix.num_components, mix.dim)


def _run(op: str, chain_cases: list[dict], device, compile_reference: bool, fused_providers, blackjax=None) -> dict:
    """Time every case's eager loop, its compiled step and ``fused_providers(case, x0)``
    (name -> callable), each chain from the same start x0 (N, D) ~ N(0, 9 I); with
    ``blackjax`` (_blackjax_info's dict; None: not timed) also BlackJAX, into each row's and
    the result's "blackjax" field."""
    harness.allow_recompiles(256)
    peak = fma_peak.measure() if device.type == "cpu" else {"error": "measured on CPUs only"}
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
        macs = multiply_adds_per_step(case)
        for t in times.values():
            t["particle_steps_per_s"] = N * T / t["median"]
            t["speedup_vs_eager"] = times["eager loop"]["median"] / t["median"]
            t["fma_peak_fraction"] = fma_peak.fraction(macs * N * T, t["median"], peak)
        row = {"case": case["name"], "N": N, "D": mix.dim, "K": mix.num_components, "steps": T, "times": times}
        row["multiply_adds_per_step"] = macs
        if blackjax is not None:
            row["blackjax"] = _blackjax_entry(case, x0, times, device, blackjax["reason"])
        rows.append(row)
    result = {
        "op": op,
        **harness.run_info(device),
        "fma_peak": peak,
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }
    if blackjax is not None:
        result["blackjax"] = blackjax["info"]
    return result


def _blackjax_info(device) -> dict:
    """{"reason": why BlackJAX cannot run or None, "info": the result's "blackjax" field:
    {"skipped": reason} or the jax and blackjax versions and the JAX backend}."""
    from . import blackjax_provider

    reason = blackjax_provider.unavailable_reason(device)
    if reason is not None:
        return {"reason": reason, "info": {"skipped": reason}}
    backend = "cpu" if device.type == "cpu" else "gpu"
    return {"reason": None, "info": {**blackjax_provider.versions(), "backend": backend}}


def _blackjax_entry(case: dict, x0: torch.Tensor, times: dict, device, reason: str | None) -> dict:
    """A row's "blackjax" field: {"skipped": reason}, or BlackJAX's chain from x0 timed as the
    other providers (times fields, particle_steps_per_s, speedup_vs_eager) with its algorithm,
    compile_s (not timed), scorefast_chain_vs_blackjax and scorefast_sampler_vs_blackjax (ratios
    of particle-steps/s) and, for MALA, the mean acceptance of BlackJAX's and gmm_chain's chains."""
    from . import blackjax_provider

    reason = reason or blackjax_provider.case_skip_reason(case)
    if reason is not None:
        return {"skipped": reason}
    N, T = case["N"], len(schedule(case))
    bj = blackjax_provider.Chain(case, x0, device, seed=1)
    # run() waits for the JAX result itself, so time it by the wall clock on any device.
    t = harness.time_fn(bj.run, torch.device("cpu"), min_time=0.2, min_reps=2)
    t["particle_steps_per_s"] = N * T / t["median"]
    t["speedup_vs_eager"] = times["eager loop"]["median"] / t["median"]
    entry = {"algorithm": bj.algorithm, **t, "compile_s": bj.compile_s}
    for name, key in (
        ("scorefast chain", "scorefast_chain_vs_blackjax"),
        ("scorefast sampler", "scorefast_sampler_vs_blackjax"),
    ):
        if name in times:
            entry[key] = t["median"] / times[name]["median"]
    if case["method"] == "mala":
        entry["acceptance"] = bj.acceptance
        accepted = gmm_chain(x0, case["target"], **_chain_kwargs(case)).accepted
        entry["scorefast_acceptance"] = float(accepted.sum()) / (N * T)
    return entry


def run_samplers_bench(
    quick: bool = False, compile_reference: bool = True, device=torch.device("cpu"), blackjax: bool = True
) -> dict:
    """Whole chains: the eager loop, torch.compile of its step, the generic sampler with the
    fused ops ("scorefast sampler"), gmm_chain with the auto backend ("scorefast chain") and,
    with ``blackjax`` (default), BlackJAX where it is installed and has the method.

    Runs ``cases(quick)``. Returns the result dict (JSON fields as in
    bench/results/samplers-*.json): per row case, N, D, K, steps and per provider the times
    with particle_steps_per_s and speedup_vs_eager; with ``blackjax``, "blackjax" fields in
    the result (versions, or {"skipped": reason}) and in each row (see _blackjax_entry).
    """

    def fused(case, x0):
        return {
            "scorefast sampler": _sampler_fn(case, x0),
            "scorefast chain": lambda: gmm_chain(x0, case["target"], **_chain_kwargs(case)),
        }

    bj = _blackjax_info(device) if blackjax else None
    return _run("samplers (whole chains)", cases(quick), device, compile_reference, fused, bj)


def run_gmm_chain_bench(
    quick: bool = False, compile_reference: bool = True, device=torch.device("cpu"), backends=None, dsweep=False
) -> dict:
    """gmm_chain on each backend (providers named by backend) against the eager loop and
    torch.compile of its step, on the same cases and with the same fields as
    run_samplers_bench (op "gmm_chain"); ``dsweep``: on dsweep_cases instead.

    backends: names, or None for every backend with a native gmm_chain kernel on ``device``.
    """
    names = harness.timed_backends(device, "gmm_chain_", backends)

    def fused(case, x0):
        return {
            name: (lambda name=name: gmm_chain(x0, case["target"], backend=name, **_chain_kwargs(case)))
            for name in names
        }

    chain_cases = dsweep_cases(quick) if dsweep else cases(quick)
    return _run("gmm_chain", chain_cases, device, compile_reference, fused)


STORAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def run_dtype_bench(
    quick: bool = False, device=torch.device("cpu"), backend: str = "cpp", dtypes=STORAGE_DTYPES
) -> dict:
    """gmm_chain of one backend with the state in each storage type, on the cases of
    run_gmm_chain_bench: the same start x0 (N, D) ~ N(0, 9 I) rounded to each dtype, the calls
    of the dtypes interleaved (``harness.time_fns_interleaved``), so their ratios hold on a
    busy host. Rows carry each dtype's particle-steps/s and its ratio to float32
    (``vs_float32``; float32 first in ``dtypes``)."""
    rows = []
    for case in cases(quick):
        mix, N = case["target"], case["N"]
        x0 = (3.0 * torch.randn(N, mix.dim, generator=torch.Generator().manual_seed(0))).float().to(device)
        T = len(schedule(case))
        fns = {
            str(dt).removeprefix("torch."): (
                lambda x=x0.to(dt): gmm_chain(x, case["target"], backend=backend, **_chain_kwargs(case))
            )
            for dt in dtypes
        }
        times = harness.time_fns_interleaved(fns, device, min_time=0.2, min_reps=2)
        first = next(iter(times.values()))["median"]
        for t in times.values():
            t["particle_steps_per_s"] = N * T / t["median"]
            t["vs_float32"] = first / t["median"]
        rows.append({"case": case["name"], "N": N, "D": mix.dim, "K": mix.num_components, "steps": T, "times": times})
    return {
        "op": "gmm_chain by storage type",
        **harness.run_info(device),
        "backend": backend,
        "dtypes": [str(dt).removeprefix("torch.") for dt in dtypes],
        "rows": rows,
    }


def _case_columns() -> list:
    """The columns naming a row's chain: case, N and steps."""
    return [
        harness.Column("case", 24, lambda r: r["case"], align="<"),
        harness.Column("N", 7, lambda r: str(r["N"])),
        harness.Column("steps", 6, lambda r: str(r["steps"])),
    ]


def format_dtype_table(result: dict) -> str:
    """Particle-steps per second per storage type, with the ratio to float32."""
    columns = _case_columns() + [
        harness.Column(
            dt,
            22,
            lambda r, dt=dt: f"{r['times'][dt]['particle_steps_per_s']:12.3g} {r['times'][dt]['vs_float32']:7.2f}x",
        )
        for dt in result["dtypes"]
    ]
    title = (
        f"gmm_chain ({result['backend']}) by storage type on {result['machine']}, torch {result['torch']} "
        f"(particle-steps/s; x = over {result['dtypes'][0]})"
    )
    return harness.format_table(title, columns, result["rows"])


def format_table(result: dict) -> str:
    """Particle-steps per second per provider, with the speed-up over the eager loop."""
    label = "Samplers" if result["op"].startswith("samplers") else result["op"]
    columns = _case_columns() + [
        harness.Column(
            p,
            24,
            lambda r, p=p: f"{r['times'][p]['particle_steps_per_s']:12.3g} {r['times'][p]['speedup_vs_eager']:9.1f}x",
        )
        for p in result["providers"]
    ]
    if "blackjax" in result:
        columns += _blackjax_columns()
    title = (
        f"{label} on {result['machine']}, torch {result['torch']} (particle-steps/s; x = speed-up over the eager loop)"
    )
    table = harness.format_table(title, columns, result["rows"]) + "\n" + _fma_notes(result)
    return table if "blackjax" not in result else table + "\n" + _blackjax_notes(result)


def _fma_notes(result: dict) -> str:
    """The measured multiply-add peak and each provider's share of it on the larger mixtures."""
    peak = result.get("fma_peak", {})
    if "gflops" not in peak:
        return f"multiply-add peak: {peak.get('error', 'not measured')}"
    lines = [f"multiply-add peak: {peak['gflops']:.0f} GFLOP/s ({peak['threads']} threads); share of it:"]
    for r in result["rows"]:
        if r["D"] < 16:
            continue
        shares = ", ".join(
            f"{p} {100 * t['fma_peak_fraction']:.1f}%"
            for p, t in r["times"].items()
            if t.get("fma_peak_fraction") is not None
        )
        lines.append(f"  {r['case']} ({r['multiply_adds_per_step']} multiply-adds per particle-step): {shares}")
    return "\n".join(lines)


def _blackjax_columns() -> list:
    """BlackJAX's particle-steps/s and speed-up over the eager loop, scorefast chain / BlackJAX
    and the MALA acceptance of gmm_chain / BlackJAX; "skipped" where it did not run."""

    def cell(fmt):
        return lambda r: "skipped" if "skipped" in r["blackjax"] else fmt(r["blackjax"])

    def acceptance(b):
        return "" if "acceptance" not in b else f"{b['scorefast_acceptance']:.3f}/{b['acceptance']:.3f}"

    return [
        harness.Column(
            "BlackJAX", 24, cell(lambda b: f"{b['particle_steps_per_s']:12.3g} {b['speedup_vs_eager']:9.1f}x")
        ),
        harness.Column("chain/BlackJAX", 14, cell(lambda b: f"{b['scorefast_chain_vs_blackjax']:.1f}x")),
        harness.Column("accept sf/BJ", 13, cell(acceptance)),
    ]


def _blackjax_notes(result: dict) -> str:
    """What the BlackJAX columns ran, or why they are empty."""
    info = result["blackjax"]
    if "skipped" in info:
        return f"BlackJAX: skipped ({info['skipped']})"
    ran = {r["blackjax"]["algorithm"] for r in result["rows"] if "skipped" not in r["blackjax"]}
    lines = [
        f"BlackJAX {info['blackjax']}, jax {info['jax']} ({info['backend']}, float32): "
        + ", ".join(sorted(ran))
        + "; vmap over chains, whole chain in one lax.scan, compile not timed"
    ]
    lines += [
        f"BlackJAX skipped {r['case']}: {r['blackjax']['skipped']}"
        for r in result["rows"]
        if "skipped" in r["blackjax"]
    ]
    return "\n".join(lines)
