"""Sampler benchmark: particle-steps per second of whole chains on mixture targets.

Providers, measured in one run: the fused chain (``gmm_chain``), the generic sampler with
the fused ops (gmm_score + langevin_step per step), the eager PyTorch loop (matmul-form
score, ``randn_like`` noise) and that loop with ``torch.compile`` of its step.
"""
from __future__ import annotations

import datetime
import math

import torch

from . import samplers, targets
from .benchmark import machine_name, time_fn
from .benchmark_gmm import gmm_matmul
from .chain import gmm_chain
from .nn import geometric_sigmas


def _cases(quick: bool):
    f = 10 if quick else 1
    return [
        dict(name="two_mode ULA", target=targets.two_mode_2d(), method="ula", N=1000, steps=2000 // f, a=0.01),
        dict(name="two_mode ULA", target=targets.two_mode_2d(), method="ula", N=100_000 // f, steps=2000 // f, a=0.01),
        dict(name="grid25 annealed 10x100", target=targets.grid(), method="annealed", N=10_000 // f,
             sigmas=geometric_sigmas(12.0, 0.05, 10), per_level=100 // f, eps=5e-5),
        dict(name="random 64-D MALA", target=targets.random_mixture(8, 64, seed=0, spread=1.0), method="mala",
             N=10_000 // f, steps=200 // f, a=0.01),
        dict(name="random 32-D full MALA", target=targets.random_mixture(8, 32, seed=0, spread=1.0, kind="full"),
             method="mala", N=10_000 // f, steps=100 // f, a=0.01),
    ]


def _schedule(case):
    if case["method"] == "annealed":
        last = float(case["sigmas"][-1])
        return [(float(s), case["eps"] * float(s) ** 2 / last**2) for s in case["sigmas"] for _ in range(case["per_level"])]
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


def _run_loop(step, p, case, x0, mix):
    x = x0.clone()
    if case["method"] == "mala":
        s, lp = gmm_matmul(x, *p(None))
        for _, a in _schedule(case):
            x, s, lp = step(x, s, lp, a, *p(None))
        return x
    for sigma, a in _schedule(case):
        x = step(x, a, *p(sigma))
    return x


def run_chain_bench(quick: bool = False, compile_reference: bool = True, device=torch.device("cpu")) -> dict:
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(256, torch._dynamo.config.cache_size_limit)
    rows = []
    for case in _cases(quick):
        mix, N = case["target"], case["N"]
        x0 = (3.0 * torch.randn(N, mix.dim, generator=torch.Generator().manual_seed(0))).float().to(device)
        sched = _schedule(case)
        T = len(sched)
        p, step = _eager_step_fns(mix, case["method"], device)
        providers = {"eager loop": lambda: _run_loop(step, p, case, x0, mix)}
        if compile_reference:
            cstep = torch.compile(step, dynamic=False)
            providers["torch.compile step"] = lambda: _run_loop(cstep, p, case, x0, mix)
        if case["method"] == "ula":
            providers["scorefast sampler"] = lambda: samplers.langevin(
                lambda y: mix.score(y), x0.clone(), steps=T, step_size=case["a"], seed=1)
            providers["scorefast chain"] = lambda: gmm_chain(x0, mix, method="ula", steps=T, step_size=case["a"], seed=1)
        elif case["method"] == "annealed":
            providers["scorefast sampler"] = lambda: samplers.annealed_langevin(
                lambda y, s: mix.score(y, sigma=s), x0.clone(), case["sigmas"], steps_per_level=case["per_level"],
                epsilon=case["eps"], seed=1, final_denoise=False)
            providers["scorefast chain"] = lambda: gmm_chain(
                x0, mix, method="annealed", sigmas=case["sigmas"], steps_per_level=case["per_level"],
                epsilon=case["eps"], seed=1)
        else:
            providers["scorefast sampler"] = lambda: samplers.mala(
                lambda y: mix.score(y), lambda y: mix.log_prob(y), x0.clone(), steps=T, step_size=case["a"], seed=1)
            providers["scorefast chain"] = lambda: gmm_chain(x0, mix, method="mala", steps=T, step_size=case["a"], seed=1)
        times = {name: time_fn(fn, device, min_time=0.2, min_reps=2) for name, fn in providers.items()}
        for t in times.values():
            t["particle_steps_per_s"] = N * T / t["median"]
            t["speedup_vs_eager"] = times["eager loop"]["median"] / t["median"]
        rows.append({"case": case["name"], "N": N, "D": mix.dim, "K": mix.num_components, "steps": T, "times": times})
    return {
        "op": "samplers (whole chains)",
        "machine": machine_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def format_table(result: dict) -> str:
    provs = result["providers"]
    lines = [f"Samplers on {result['machine']}, torch {result['torch']} "
             "(particle-steps/s; x = speed-up over the eager loop)",
             f"{'case':<24} {'N':>7} {'steps':>6} " + " ".join(f"{p:>24}" for p in provs)]
    for row in result["rows"]:
        cells = [f"{row['times'][p]['particle_steps_per_s']:12.3g} {row['times'][p]['speedup_vs_eager']:9.1f}x" for p in provs]
        lines.append(f"{row['case']:<24} {row['N']:>7} {row['steps']:>6} " + " ".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)
