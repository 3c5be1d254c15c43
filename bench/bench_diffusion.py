"""Diffusion benchmarks: the VP training step (perturb + epsilon loss + backward, no model) at
image and latent shapes (64x3x64x64, 16x4x64x64) against the eager diffusers-style code and
torch.compile of it, time and peak memory; and one DDPM / VE scheduler step against diffusers'.

    python bench/bench_diffusion.py [--device cuda] [--quick]

Prints the tables and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere).
"""

import sys

import torch

from scorefast.benchmarks import diffusion, harness


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, quick_help="batches of 2 at a quarter of the size, fewer repeats")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    path = harness.result_path("diffusion", device, args.out, parser.error)
    result = diffusion.run_diffusion_bench(
        shapes=diffusion.shapes(args.quick),
        device=device,
        backends=harness.parse_backends(args.backends),
        compile_reference=not args.no_compile,
        quick=args.quick,
    )
    harness.report(result, diffusion.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
