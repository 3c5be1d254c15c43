"""gmm_chain benchmark: the fused whole chain on every scorefast backend that runs it here,
against the eager PyTorch loop and torch.compile of its step, on the cases of
bench_samplers.py (two-mode ULA, grid25 annealed Langevin, 64-D and 32-D full MALA).

    python bench/bench_chain.py [--quick] [--device cuda] [--backends cpp,numba]
    python bench/bench_chain.py --dtypes [--backends cpp]   # the state in each storage type
    python bench/bench_chain.py --d-sweep   # 16 components, D from 4 to 32 (gmm_chain-dsweep-*.json)

Prints one table (particle-steps/s and the speed-up over the eager loop; with --dtypes, over
float32) and writes JSON with the machine named to bench/results/ of the source checkout
(``--out`` elsewhere).
"""

import sys

import torch

from scorefast.benchmarks import chain, harness


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="10x fewer particles and steps")
    parser.add_argument(
        "--dtypes", action="store_true", help="one backend (default cpp) with the state in float32, bf16, f16, f64"
    )
    parser.add_argument("--d-sweep", action="store_true", help="16-component chains at D from 4 to 32 instead")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.dtypes:
        backends = harness.parse_backends(args.backends) or ["cpp"]
        if len(backends) != 1:
            parser.error("--dtypes times one backend: name it with --backends")
        path = harness.result_path("gmm_chain-dtypes", device, args.out, parser.error)
        result = chain.run_dtype_bench(quick=args.quick, device=device, backend=backends[0])
        harness.report(result, chain.format_dtype_table(result), path)
        return 0
    path = harness.result_path("gmm_chain-dsweep" if args.d_sweep else "gmm_chain", device, args.out, parser.error)
    result = chain.run_gmm_chain_bench(
        quick=args.quick,
        compile_reference=not args.no_compile,
        device=device,
        backends=harness.parse_backends(args.backends),
        dsweep=args.d_sweep,
    )
    harness.report(result, chain.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
