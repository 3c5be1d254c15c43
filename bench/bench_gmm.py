"""gmm_score benchmark: the direct and the matmul PyTorch forms, torch.compile of each, and
every scorefast backend, for (N, K, D) in {(1e5, 2, 2), (1e5, 25, 2), (1e4, 64, 64),
(4096, 16, 784)} and each covariance kind.

    python bench/bench_gmm.py [--device cuda] [--quick]

Prints one table and writes JSON to bench/results/ with the machine named.
"""
import sys

from scorefast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--op", "gmm_score", *sys.argv[1:]]))
