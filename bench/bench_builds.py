"""Two builds side by side: gmm_score at (N, K, D) = (1e4, 64, 64) for each covariance kind,
the 64-D and 32-D full-covariance MALA chains of bench_samplers.py (8 components, a = 0.01)
and the same chains with 16 components and a = 0.05 (acceptance about 0.98 and 0.95), timed
for the scorefast on sys.path. Run it once per build, back to back, and pass the earlier runs'
JSON lines with --before to get one file with both and the ratios:

    PYTHONPATH=/path/to/old/checkout python bench/bench_builds.py --label old > old.json
    python bench/bench_builds.py --label new --before old.json --out result.json

--gmm-size N,K,D times gmm_score at another size; --best-of takes each case's fastest call
over 2 s of calls instead of the median over 0.5 s (a shared, busy host's slow spells move
the median). Both runs must use the same options. On such a host, let the script alternate
the two builds itself, R rounds of each, and keep each case's best round:

    python bench/bench_builds.py --alternate /path/to/old /path/to/new --rounds 3 --out result.json

(each path goes first on PYTHONPATH of its runs; implies --best-of).

Prints one JSON line (--out also writes the combined result with the machine named).
"""

import argparse
import json
import os
import subprocess
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


def measure(
    label: str, quick: bool = False, gmm_size: tuple[int, int, int] | None = None, best_of: bool = False
) -> dict:
    """This build's gmm_score_ms per kind (at gmm_size (N, K, D), default GMM_SIZE) and chain
    particle_steps_per_s per case, from the median call, or with best_of the fastest (the
    run's "statistic")."""
    cpu = torch.device("cpu")
    min_time = 0.05 if quick else (2.0 if best_of else 0.5)
    stat = "min" if best_of else "median"
    N, K, D = gmm_size or ((640, 8, 64) if quick else GMM_SIZE)
    out = {"label": label, **harness.run_info(cpu), "statistic": stat, "gmm_size": [N, K, D]}
    out.update(gmm_score_ms={}, chains={})
    for kind in ("isotropic", "diagonal", "full"):
        mix = random_mixture(K, D, seed=0, kind=kind)
        x = mix.sample(N, seed=1).float()
        t = harness.time_fn(lambda: gmm_score(x, mix, backend="cpp"), cpu, min_time=min_time)
        out["gmm_score_ms"][kind] = t[stat] * 1e3
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
            "particle_steps_per_s": case["N"] * steps / t[stat],
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
            "particle_steps_per_s": N * steps / t[stat],
            "acceptance": float(accepted.double().mean()) / steps,
        }
    return out


def combine(before: dict, after: dict, peak: dict | None = None) -> dict:
    """Both runs and the speed-ups of ``after`` over ``before``; with ``peak``
    (fma_peak.measure()'s result) also the after run's share of the multiply-add peak."""
    if before["gmm_size"] != after["gmm_size"]:
        raise ValueError(f"gmm_score timed at {before['gmm_size']} before and {after['gmm_size']} after")
    if before.get("statistic", "median") != after["statistic"]:
        raise ValueError(f"the {before.get('statistic', 'median')} call before, the {after['statistic']} after")
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


def best_of_runs(runs: list[dict]) -> dict:
    """One run from several of the same build: each case's fastest time (highest rate), the
    first run's other fields, and how many runs there were ("rounds")."""
    best = json.loads(json.dumps(runs[0]))
    for run in runs[1:]:
        for kind, ms in run["gmm_score_ms"].items():
            best["gmm_score_ms"][kind] = min(best["gmm_score_ms"][kind], ms)
        for name, c in run["chains"].items():
            if c["particle_steps_per_s"] > best["chains"][name]["particle_steps_per_s"]:
                best["chains"][name]["particle_steps_per_s"] = c["particle_steps_per_s"]
    best["rounds"] = len(runs)
    return best


def alternate(paths: tuple[str, str], rounds: int, options: list[str], labels: tuple[str, str]) -> tuple[dict, dict]:
    """``rounds`` runs of this script for each build, alternating (before, after, before, ...),
    each in a process with its path first on PYTHONPATH; the best of each build's runs."""
    runs = ([], [])
    for _ in range(rounds):
        for i, path in enumerate(paths):
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])))
            cmd = [sys.executable, os.path.abspath(__file__), "--label", labels[i], "--best-of", *options]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            runs[i].append(json.loads(out.strip().splitlines()[-1]))
    return best_of_runs(runs[0]), best_of_runs(runs[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="this build", help="name of the build in the JSON")
    parser.add_argument("--before", help="a file with the JSON line of an earlier run (another build)")
    parser.add_argument("--out", help="write the combined result here (needs --before)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    default_size = ",".join(map(str, GMM_SIZE))
    parser.add_argument("--gmm-size", help=f"N,K,D of the gmm_score timings (default {default_size})")
    parser.add_argument(
        "--best-of", action="store_true", help="each case's fastest call over 2 s instead of the median"
    )
    parser.add_argument(
        "--alternate", nargs=2, metavar=("BEFORE", "AFTER"), help="time two builds (paths for PYTHONPATH) in turn"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each build with --alternate (default 3)")
    args = parser.parse_args(argv)
    if args.out and not (args.before or args.alternate):
        parser.error("--out needs --before or --alternate")
    if args.alternate and args.before:
        parser.error("--alternate and --before exclude each other")
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive count, got {args.rounds}")
    gmm_size = None
    if args.gmm_size:
        try:
            gmm_size = tuple(int(v) for v in args.gmm_size.split(","))
        except ValueError:
            gmm_size = ()
        if len(gmm_size) != 3 or min(gmm_size) < 1:
            parser.error(f"--gmm-size: expected three positive integers N,K,D, got {args.gmm_size!r}")
    if args.alternate:
        options = (["--quick"] if args.quick else []) + (["--gmm-size", args.gmm_size] if args.gmm_size else [])
        label = args.label if args.label != "this build" else "after"
        before, result = alternate(tuple(args.alternate), args.rounds, options, ("before", label))
        return _report(before, result, args.out)
    result = measure(args.label, args.quick, gmm_size, args.best_of)
    print(json.dumps(result))
    if args.before:
        with open(args.before) as f:
            before = json.loads(f.readline())
        return _report(before, result, args.out)
    return 0


def _report(before: dict, after: dict, out: str | None) -> int:
    """Combine the two runs with this build's multiply-add peak, write them to ``out`` if given
    and print the speed-ups."""
    from scorefast.benchmarks import fma_peak  # this build's, as multiply_adds

    combined = combine(before, after, fma_peak.measure())
    if out:
        with open(out, "w") as f:
            json.dump(combined, f, indent=1)
    for name, s in combined["speedup"].items():
        print(f"{name}: {s:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
