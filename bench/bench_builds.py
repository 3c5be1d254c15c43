"""Two builds side by side: gmm_score at (N, K, D) = (1e4, 64, 64) for each covariance kind,
the 64-D and 32-D full-covariance MALA chains of bench_samplers.py (8 components, a = 0.01)
and the same chains with 16 components and a = 0.05 (acceptance about 0.98 and 0.95), timed
for the scorefast on sys.path. Run it once per build, back to back, and pass the earlier runs'
JSON lines with --before to get one file with both and the ratios:

    PYTHONPATH=/path/to/old/checkout python bench/bench_builds.py --label old > old.json
    python bench/bench_builds.py --label new --before old.json --out result.json

Prints one JSON line (--out also writes the combined result with the machine named).
"""

import argparse
import json
import sys

import torch

from scorefast import gmm_chain, gmm_score
from scorefast.benchmarks import chain, harness
from scorefast.targets import random_mixture

GMM_SIZE = (10_000, 64, 64)
CHAIN_CASES = ("random 64-D MALA", "random 32-D full MALA")
# (name, components, dimension, covariance kind, steps), 1e4 particles, MALA with a = 0.05
WIDE_CHAINS = (
    ("random 64-D MALA, K = 16, a = 0.05", 16, 64, "isotropic", 200),
    ("random 32-D full MALA, K = 16, a = 0.05", 16, 32, "full", 100),
)


def _mixture_shape(mix) -> dict:
    return {"kind": mix.kind, "K": mix.num_components, "D": mix.dim}


def measure(label: str, quick: bool = False) -> dict:
    """Median times of this build: gmm_score_ms per kind and chain particle_steps_per_s per case."""
    cpu = torch.device("cpu")
    min_time = 0.05 if quick else 0.5
    N, K, D = (640, 8, 64) if quick else GMM_SIZE
    out = {"label": label, **harness.run_info(cpu), "gmm_size": [N, K, D], "gmm_score_ms": {}, "chains": {}}
    for kind in ("isotropic", "diagonal", "full"):
        mix = random_mixture(K, D, seed=0, kind=kind)
        x = mix.sample(N, seed=1).float()
        t = harness.time_fn(lambda: gmm_score(x, mix, backend="cpp"), cpu, min_time=min_time)
        out["gmm_score_ms"][kind] = t["median"] * 1e3
    for case in chain.cases(quick):
        if case["name"] not in CHAIN_CASES:
            continue
        x0 = (3.0 * torch.randn(case["N"], case["target"].dim, generator=torch.Generator().manual_seed(0))).float()
        kw = chain._chain_kwargs(case)
        steps = len(chain.schedule(case))
        t = harness.time_fn(lambda: gmm_chain(x0, case["target"], **kw), cpu, min_time=min_time, min_reps=2)
        out["chains"][case["name"]] = {
            **_mixture_shape(case["target"]),
            "N": case["N"],
            "steps": steps,
            "particle_steps_per_s": case["N"] * steps / t["median"],
        }
    for name, K, D, kind, steps in WIDE_CHAINS:
        mix = random_mixture(K, D, seed=0, spread=1.0, kind=kind)
        N, steps = (1000, steps // 10) if quick else (10_000, steps)
        x0 = (3.0 * torch.randn(N, D, generator=torch.Generator().manual_seed(0))).float()
        kw = dict(method="mala", steps=steps, step_size=0.05, seed=1)
        t = harness.time_fn(lambda: gmm_chain(x0, mix, **kw), cpu, min_time=min_time, min_reps=2)
        accepted = gmm_chain(x0, mix, **kw).accepted
        out["chains"][name] = {
            **_mixture_shape(mix),
            "N": N,
            "steps": steps,
            "particle_steps_per_s": N * steps / t["median"],
            "acceptance": float(accepted.double().mean()) / steps,
        }
    return out


def combine(before: dict, after: dict, peak: dict | None = None) -> dict:
    """Both runs and the speed-ups of ``after`` over ``before``; with ``peak``
    (fma_peak.measure()'s result) also the after run's share of the multiply-add peak."""
    speedup = {f"gmm_score {k}": before["gmm_score_ms"][k] / v for k, v in after["gmm_score_ms"].items()}
    for name, c in after["chains"].items():
        speedup[name] = c["particle_steps_per_s"] / before["chains"][name]["particle_steps_per_s"]
    out = {"op": "builds", "machine": after["machine"], "runs": [before, after], "speedup": speedup}
    if peak is not None:
        out["fma_peak"] = peak
        rate = peak.get("multiply_adds_per_s")
        if rate:
            from scorefast.benchmarks.gmm import multiply_adds  # this build's (an older one may not have it)

            N, K, D = after["gmm_size"]
            share = {}
            for kind, ms in after["gmm_score_ms"].items():
                share[f"gmm_score {kind}"] = multiply_adds(kind, N, K, D) / (ms * 1e-3) / rate
            for name, c in after["chains"].items():
                per_step = multiply_adds(c["kind"], 1, c["K"], c["D"])
                share[name] = per_step * c["particle_steps_per_s"] / rate
            out["after_fma_peak_fraction"] = share
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="this build", help="name of the build in the JSON")
    parser.add_argument("--before", help="a file with the JSON line of an earlier run (another build)")
    parser.add_argument("--out", help="write the combined result here (needs --before)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    args = parser.parse_args(argv)
    if args.out and not args.before:
        parser.error("--out needs --before")
    result = measure(args.label, args.quick)
    print(json.dumps(result))
    if args.before:
        with open(args.before) as f:
            before = json.loads(f.readline())
        from scorefast.benchmarks import fma_peak  # this build's, as multiply_adds

        combined = combine(before, result, fma_peak.measure())
        if args.out:
            with open(args.out, "w") as f:
                json.dump(combined, f, indent=1)
        for name, s in combined["speedup"].items():
            print(f"{name}: {s:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
