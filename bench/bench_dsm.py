"""DSM step benchmark (perturb + loss + backward, no model): time and peak extra memory of
eager PyTorch, torch.compile of it, the reference and every scorefast backend, for (B, D) in
{(4096, 2), (256, 3x32x32), (64, 3x64x64)}.

    python bench/bench_dsm.py [--device cuda] [--quick]

Prints one table and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere), as ``scorefast bench --op dsm_loss`` does.
"""

import sys

import torch

from scorefast.benchmarks import dsm, harness


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="8x smaller batches and fewer repeats")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    path = harness.result_path("dsm_loss", device, args.out, parser.error)
    result = dsm.run_dsm_bench(
        shapes=dsm.shapes(args.quick),
        device=device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
    )
    harness.report(result, dsm.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
