"""pytest-benchmark entries for gmm_score: ``python -m pytest bench/ --benchmark-only``.

The last test runs bench_gmm.py on one tiny case per covariance kind and checks its JSON
(never the speed).
"""

import json

import bench_gmm
import pytest
import torch

import scorefast
from scorefast.benchmarks import gmm
from scorefast.benchmarks.baselines import gmm_matmul
from scorefast.targets import random_mixture


@pytest.mark.parametrize("provider", ["matmul", "cpp"])
@pytest.mark.parametrize("kind", ["isotropic", "full"])
@pytest.mark.parametrize("size", gmm.SIZES[:3])
def test_gmm_score(benchmark, size, kind, provider):
    N, K, D = size
    mix = random_mixture(K, D, seed=0, kind=kind)
    x = mix.sample(N, seed=1).float()
    p = mix.kernel_params(torch.float32, x.device, None, per_point=False)
    if provider == "matmul":
        fn = lambda: gmm_matmul(x, p["means"], p["inv_var"], p["factor"], p["log_const"])  # noqa: E731
    else:
        fn = lambda: scorefast.gmm_score(x, mix, backend=provider)  # noqa: E731
    benchmark.group = f"gmm_score {kind} {size}"
    benchmark(fn)


def test_gmm_script_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gmm, "SIZES", [(640, 3, 5)])  # --quick: 64 points
    path = tmp_path / "g.json"
    assert bench_gmm.main(["--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gmm_score on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "gmm_score" and r["machine"] and r["dtype"] == "float32"
    assert r["providers"] == ["direct", "matmul", "cpp"]
    assert [(row["kind"], row["N"], row["K"], row["D"]) for row in r["rows"]] == [
        (kind, 64, 3, 5) for kind in gmm.KINDS
    ]
    for row in r["rows"]:
        assert row["best_torch_s"] == min(row["times"][p]["median"] for p in ("direct", "matmul"))
        for t in row["times"].values():
            assert {"median", "p20", "p80", "reps", "points_per_s", "speedup_vs_best_torch"} <= set(t)
