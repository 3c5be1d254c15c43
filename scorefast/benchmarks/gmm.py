"""gmm_score benchmark: scorefast against the two PyTorch ways of writing it (baselines.gmm_direct,
the (N, K, D) difference tensor most code writes, and baselines.gmm_matmul, the best form) and
``torch.compile`` of each, for each covariance kind, in float32.
"""

from __future__ import annotations

import torch

from scorefast import gmm_score
from scorefast.targets import random_mixture

from . import fma_peak, harness
from .baselines import gmm_direct, gmm_matmul

SIZES = [(100_000, 2, 2), (100_000, 25, 2), (10_000, 64, 64), (4096, 16, 784)]
# The mixtures' means are drawn with spread 4 (separated components: at a point, all but a few
# have weight +0, which the kernels' score pass skips). These cases run once more with spread
# 0.1, overlapping components that all weigh at every point: the dense cost.
SPREAD = 4.0
OVERLAPPING = [(10_000, 64, 64)]
OVERLAPPING_SPREAD = 0.1
KINDS = ("isotropic", "diagonal", "full")
TORCH_FORMS = ("direct", "matmul", "direct+compile", "matmul+compile")


# The D sweep (bench_gmm.py --d-sweep): 16 components at every D where the CPU kernels change
# layout (register tiles of particles up to 8, blocks of points past it, partial vectors of
# coordinates at 9, 12 and 24, explicit precisions for full covariances from 9).
DSWEEP_DIMS = (2, 4, 6, 8, 9, 12, 16, 24, 32, 64)
DSWEEP_POINTS = 100_000
DSWEEP_COMPONENTS = 16


def sizes(quick: bool = False, dsweep: bool = False) -> list[tuple[int, int, int]]:
    """The (N, K, D) cases: SIZES, or with ``dsweep`` (N, 16, D) for D in DSWEEP_DIMS; with
    ``quick`` 10x fewer points (at least 64) and D at most 128."""
    cases = [(DSWEEP_POINTS, DSWEEP_COMPONENTS, d) for d in DSWEEP_DIMS] if dsweep else list(SIZES)
    if not quick:
        return cases
    return [(max(64, n // 10), k, min(d, 128)) for n, k, d in cases]


def multiply_adds(kind: str, N: int, K: int, D: int) -> int:
    """Multiply-adds of gmm_score's inner products, as the CPU kernels form them (a separate
    multiply or add counts as one): isotropic 2 NKD (the squared distances, then the weighted
    means), diagonal 4 NKD (with the precisions in both passes), full NKD^2 + 3 NKD (the
    product with the explicit precision, its quadratic form and the weighted sum). Every
    component is counted: where the score pass skips components of weight +0 (separated
    mixtures), the kernels make fewer, and the share of the peak is an equivalent rate."""
    per = {"isotropic": 2 * D, "diagonal": 4 * D, "full": D * D + 3 * D}[kind]
    return N * K * per


def run_gmm_bench(
    sizes=SIZES,
    kinds=KINDS,
    device=torch.device("cpu"),
    backends=None,
    compile_reference: bool = True,
    quick: bool = False,
    best_of: bool = False,
) -> dict:
    """Time gmm_score (score and log p) of a random float32 mixture on N points drawn from it.

    sizes: (N, K, D) cases; kinds: covariance kinds ("isotropic", "diagonal", "full");
    backends: names, or None for every backend with a native gmm_score kernel on ``device``.
    ``quick``: 0.05 s of timed calls per provider instead of 0.3 s. A PyTorch form that fails
    (e.g. out of memory) is recorded as {"error": message}. ``best_of``: the providers' calls
    interleaved, round by round (50 ms of calls each a round), and every figure and ratio taken
    from each provider's fastest call ("min") instead of the median: on a shared, busy host the
    slow spells then fall on all providers alike and the minimum is the figure least moved by
    them.

    Returns the result dict (JSON fields as in bench/results/gmm_score-*.json): the measured
    multiply-add peak ("fma_peak", fma_peak.measure), the statistic the figures use
    ("median", or "min" with ``best_of``), per row kind, N, K, D, spread (of the means: SPREAD,
    or OVERLAPPING_SPREAD for the OVERLAPPING cases), best_torch_s (the fastest PyTorch form),
    multiply_adds (``multiply_adds``) and per provider the times with points_per_s,
    speedup_vs_best_torch and fma_peak_fraction.
    """
    harness.allow_recompiles(256)
    peak = fma_peak.measure() if device.type == "cpu" else {"error": "measured on CPUs only"}
    backends = harness.timed_backends(device, "gmm_score", backends)
    min_time = 0.05 if quick else 0.3
    stat = "min" if best_of else "median"
    rows = []
    cases = [(size, SPREAD) for size in sizes]
    cases += [(size, OVERLAPPING_SPREAD) for size in sizes if size[1:] in {c[1:] for c in OVERLAPPING}]
    for kind in kinds:
        for (N, K, D), spread in cases:
            if spread != SPREAD and kind == "full":  # the full kernels skip nothing
                continue
            mix = random_mixture(K, D, seed=0, kind=kind, spread=spread, device=device)
            x = mix.sample(N, seed=1).float().to(device)
            p = mix.kernel_params(torch.float32, device, None, per_point=False)
            args = (x, p["means"], p["inv_var"], p["factor"], p["log_const"])
            providers = {"direct": lambda: gmm_direct(*args), "matmul": lambda: gmm_matmul(*args)}
            if compile_reference:
                cd = torch.compile(gmm_direct, dynamic=False)
                cm = torch.compile(gmm_matmul, dynamic=False)
                providers["direct+compile"] = lambda: cd(*args)
                providers["matmul+compile"] = lambda: cm(*args)
            for name in backends:
                providers[name] = lambda name=name: gmm_score(x, mix, backend=name)
            times = _time_providers(providers, device, min_time, best_of)
            torch_best = min(
                (t[stat] for p_, t in times.items() if p_ not in backends and stat in t), default=float("nan")
            )
            macs = multiply_adds(kind, N, K, D)
            for t in times.values():
                if stat in t:
                    t["points_per_s"] = N / t[stat]
                    t["speedup_vs_best_torch"] = torch_best / t[stat]
                    t["fma_peak_fraction"] = fma_peak.fraction(macs, t[stat], peak)
            row = {"kind": kind, "N": N, "K": K, "D": D, "spread": spread, "times": times, "best_torch_s": torch_best}
            rows.append({**row, "multiply_adds": macs})
    return {
        "op": "gmm_score",
        **harness.run_info(device),
        "fma_peak": peak,
        "statistic": stat,
        "dtype": "float32",
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def _time_providers(providers: dict, device: torch.device, min_time: float, interleaved: bool) -> dict:
    """harness timings per provider: one after another, or (``interleaved``) round by round,
    after one trial call each. A provider that fails (e.g. an N x K x D x D tensor too big) is
    recorded as {"error": message}."""

    def failure(exc: BaseException) -> dict:
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}

    times, runnable = {}, {}
    for prov, fn in providers.items():
        try:
            if interleaved:
                fn()
                runnable[prov] = fn
            else:
                times[prov] = harness.time_fn(fn, device, min_time=min_time)
        except (RuntimeError, MemoryError) as exc:
            times[prov] = failure(exc)
    if runnable:
        # blocks of calls of 50 ms a provider and round: the slow PyTorch forms sweep the cache
        times.update(harness.time_fns_interleaved(runnable, device, min_time=min_time, block_time=0.05))
    return {prov: times[prov] for prov in providers}


def _cell(row: dict, provider: str, stat: str) -> str:
    t = row["times"].get(provider, {})
    if stat not in t:
        return "-"
    if provider in TORCH_FORMS:
        return f"{t[stat] * 1e3:.3f}"
    frac = t.get("fma_peak_fraction")
    peak = f" {100 * frac:3.0f}%" if frac is not None else ""
    return f"{t[stat] * 1e3:8.3f} {t['speedup_vs_best_torch']:5.1f}x{peak}"


def format_table(result: dict) -> str:
    """Milliseconds per provider (the result's statistic), and each scorefast backend's speed-up
    over the best PyTorch form."""
    columns = [harness.Column("kind", 10, lambda r: r["kind"], align="<")]
    columns += [harness.Column(k, w, lambda r, k=k: str(r[k])) for k, w in (("N", 7), ("K", 4), ("D", 4))]
    columns.append(harness.Column("spread", 6, lambda r: f"{r.get('spread', SPREAD):g}"))
    stat = result.get("statistic", "median")
    columns += [harness.Column(p, 20, lambda r, p=p: _cell(r, p, stat)) for p in result["providers"]]
    title = (
        f"gmm_score on {result['machine']}, torch {result['torch']} (ms, {stat} of the calls;"
        " x = speed-up over the best PyTorch form; % = share of the measured multiply-add peak)"
    )
    peak = result.get("fma_peak", {})
    note = f"multiply-add peak: {peak['gflops']:.0f} GFLOP/s" if "gflops" in peak else f"peak: {peak.get('error')}"
    return harness.format_table(title, columns, result["rows"]) + "\n" + note
