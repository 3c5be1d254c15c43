"""Noise benchmark: the contract's normals on every scorefast backend against torch.randn.

    python bench/bench_noise.py [--device cuda] [--min-log2 16] [--max-log2 26]

Prints one table and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere).
"""

import sys

import torch

from scorefast.benchmarks import harness, noise


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="sizes up to 2^20 and fewer repeats")
    parser.add_argument("--min-log2", type=int, default=16, help="smallest size, log2 of elements")
    parser.add_argument("--max-log2", type=int, default=26, help="largest size, log2 of elements")
    args = parser.parse_args(argv)
    try:
        sizes = noise.sizes(args.min_log2, args.max_log2, args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    device = torch.device(args.device)
    path = harness.result_path("normal", device, args.out, parser.error)
    result = noise.run_noise_bench(
        sizes,
        device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
    )
    harness.report(result, noise.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
