"""Sampler benchmark: whole chains (fused gmm_chain, the generic sampler with fused steps, the
eager PyTorch loop and torch.compile of its step) on the two-mode target (1e3 and 1e5
particles, 2000 steps), the 25-mode grid with annealed Langevin (10 levels x 100 steps), and
random 64-D and 32-D full-covariance mixtures with MALA. Where JAX and BlackJAX are installed
(optional: pip install jax blackjax), BlackJAX runs the ULA and MALA chains too (same target in
float32, N, steps, step size and start; compile not timed); otherwise the table says why not.

    python bench/bench_samplers.py [--quick] [--device cuda] [--no-blackjax]

Prints one table and writes JSON with the machine named to bench/results/ of the source
checkout (``--out`` elsewhere). bench_chain.py times gmm_chain on each backend instead.
"""

import sys

import torch

from scorefast.benchmarks import chain, harness


def main(argv=None) -> int:
    parser = harness.argument_parser(__doc__, backends=False, quick_help="10x fewer particles and steps")
    parser.add_argument("--no-blackjax", action="store_true", help="do not time BlackJAX even where it is installed")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    path = harness.result_path("samplers", device, args.out, parser.error)
    result = chain.run_samplers_bench(
        quick=args.quick, compile_reference=not args.no_compile, device=device, blackjax=not args.no_blackjax
    )
    harness.report(result, chain.format_table(result), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
