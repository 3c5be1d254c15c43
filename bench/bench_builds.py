"""Two builds side by side: gmm_score at (N, K, D) = (1e4, 64, 64) for each covariance kind
and the 64-D and 32-D full-covariance MALA chains of bench_samplers.py, timed for the
scorefast on sys.path. Run it once per build, back to back, and pass the earlier runs'
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
            "N": case["N"],
            "steps": steps,
            "particle_steps_per_s": case["N"] * steps / t["median"],
        }
    return out


def combine(before: dict, after: dict) -> dict:
    """Both runs and the speed-ups of ``after`` over ``before``."""
    speedup = {f"gmm_score {k}": before["gmm_score_ms"][k] / v for k, v in after["gmm_score_ms"].items()}
    for name, c in after["chains"].items():
        speedup[name] = c["particle_steps_per_s"] / before["chains"][name]["particle_steps_per_s"]
    return {"op": "builds", "machine": after["machine"], "runs": [before, after], "speedup": speedup}


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
        combined = combine(before, result)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(combined, f, indent=1)
        for name, s in combined["speedup"].items():
            print(f"{name}: {s:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
