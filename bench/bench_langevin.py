"""langevin_step benchmark: eager PyTorch, torch.compile of it, and every scorefast backend.

    python bench/bench_langevin.py [--device cuda] [--min-log2 10] [--max-log2 26] [--particle-size 1024]
    python bench/bench_langevin.py --d-sweep [--backends cpp]   # every particle size D at 2^24 elements

Prints one table and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere), as ``scorefast bench`` does.
"""

import sys

import torch

from scorefast.benchmarks import harness, langevin


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="sizes 2^10..2^20 and fewer repeats")
    parser.add_argument("--min-log2", type=int, default=10, help="smallest size, log2 of elements")
    parser.add_argument("--max-log2", type=int, default=26, help="largest size, log2 of elements")
    parser.add_argument(
        "--particle-size", type=int, default=1024, help="elements per particle (the tensor is (n / size, size))"
    )
    parser.add_argument(
        "--d-sweep", action="store_true", help="fused step and normals at D = 1 .. 1024, float32 and bfloat16"
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.d_sweep:
        backend = (harness.parse_backends(args.backends) or ["cuda" if device.type == "cuda" else "cpp"])[0]
        path = harness.result_path("langevin_step-dsweep", device, args.out, parser.error)
        result = langevin.run_d_sweep(
            numel=2**20 if args.quick else 2**24, device=device, backend=backend, quick=args.quick
        )
        harness.report(result, langevin.format_d_sweep(result), path)
        return 0
    try:
        sizes = langevin.sizes(args.min_log2, args.max_log2, args.quick)
    except ValueError as exc:
        parser.error(str(exc))
    path = harness.result_path(langevin.result_name(args.particle_size), device, args.out, parser.error)
    result = langevin.run_langevin_bench(
        sizes,
        device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
        particle_size=args.particle_size,
    )
    harness.report(result, langevin.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
