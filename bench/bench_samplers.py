"""Sampler benchmark: whole chains (fused gmm_chain, the generic sampler with fused steps, the
eager PyTorch loop and torch.compile of its step) on the two-mode target (1e3 and 1e5
particles, 2000 steps), the 25-mode grid with annealed Langevin (10 levels x 100 steps) and a
64-D random mixture with MALA.

    python bench/bench_samplers.py [--quick] [--device cuda]
"""
import sys

from scorefast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--op", "samplers", *sys.argv[1:]]))
