"""langevin_step benchmark: eager PyTorch, torch.compile of it, and every scorefast backend.

    python bench/bench_langevin.py [--device cuda] [--min-log2 10] [--max-log2 26]

Prints one table and writes JSON to bench/results/ with the machine named (the same as
``scorefast bench``).
"""
import sys

from scorefast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
