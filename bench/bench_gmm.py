"""gmm_score benchmark: the direct and the matmul PyTorch forms, torch.compile of each, and
every scorefast backend, for (N, K, D) in {(1e5, 2, 2), (1e5, 25, 2), (1e4, 64, 64),
(4096, 16, 784)} and each covariance kind.

    python bench/bench_gmm.py [--device cuda] [--quick]
    python bench/bench_gmm.py --d-sweep   # K = 16, N = 1e5, D from 2 to 64 (gmm_score-dsweep-*.json)
    python bench/bench_gmm.py --best-of   # calls interleaved, each provider's fastest call (*-best-of-*.json)

Prints one table and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere).
"""

import sys

import torch

from scorefast.benchmarks import gmm, harness


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="10x fewer points, D at most 128, fewer repeats")
    parser.add_argument("--d-sweep", action="store_true", help="16 components at D from 2 to 64 instead")
    parser.add_argument(
        "--best-of",
        action="store_true",
        help="interleave the providers' calls and report each one's fastest call instead of the median",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = ("gmm_score-dsweep" if args.d_sweep else "gmm_score") + ("-best-of" if args.best_of else "")
    path = harness.result_path(name, device, args.out, parser.error)
    result = gmm.run_gmm_bench(
        sizes=gmm.sizes(args.quick, dsweep=args.d_sweep),
        device=device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
        best_of=args.best_of,
    )
    harness.report(result, gmm.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
