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
    monkeypatch.setattr(gmm, "OVERLAPPING", [(640, 3, 5)])
    path = tmp_path / "g.json"
    assert bench_gmm.main(["--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gmm_score on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "gmm_score" and r["machine"] and r["dtype"] == "float32"
    assert r["statistic"] == "median" and r["providers"] == ["direct", "matmul", "cpp"]
    assert [(row["kind"], row["N"], row["K"], row["D"], row["spread"]) for row in r["rows"]] == [
        (kind, 64, 3, 5, spread)
        for kind in gmm.KINDS
        for spread in (gmm.SPREAD, gmm.OVERLAPPING_SPREAD)
        if kind != "full" or spread == gmm.SPREAD
    ]
    peak = r["fma_peak"]
    assert ("multiply_adds_per_s" in peak and peak["multiply_adds_per_s"] > 0) or "error" in peak
    for row in r["rows"]:
        assert row["best_torch_s"] == min(row["times"][p]["median"] for p in ("direct", "matmul"))
        assert row["multiply_adds"] == gmm.multiply_adds(row["kind"], 64, 3, 5)
        for t in row["times"].values():
            assert {"median", "p20", "p80", "min", "reps", "points_per_s", "speedup_vs_best_torch"} <= set(t)
            if "multiply_adds_per_s" in peak:
                rate = row["multiply_adds"] / t["median"]
                assert t["fma_peak_fraction"] == pytest.approx(rate / peak["multiply_adds_per_s"])


def test_gmm_script_best_of(tmp_path, monkeypatch, capsys):
    # --best-of: the providers' calls interleaved; every figure from each one's fastest call
    monkeypatch.setattr(gmm, "SIZES", [(640, 3, 5)])
    monkeypatch.setattr(gmm, "OVERLAPPING", [])
    path = tmp_path / "b.json"
    argv = ["--best-of", "--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]
    assert bench_gmm.main(argv) == 0
    assert "min of the calls" in capsys.readouterr().out
    r = json.loads(path.read_text())
    assert r["statistic"] == "min" and r["providers"] == ["direct", "matmul", "cpp"]
    assert [row["kind"] for row in r["rows"]] == list(gmm.KINDS)
    for row in r["rows"]:
        times = row["times"]
        assert row["best_torch_s"] == min(times[p]["min"] for p in ("direct", "matmul"))
        for t in times.values():
            assert 0 < t["min"] <= t["p20"] <= t["median"]
            assert t["points_per_s"] == pytest.approx(64 / t["min"])
            assert t["speedup_vs_best_torch"] == pytest.approx(row["best_torch_s"] / t["min"])
        # interleaved rounds of at least one call each (more where a block of 50 ms holds more)
        assert all(t["reps"] >= 3 for t in times.values())


def test_multiply_add_counts():
    # the kernels' inner products per point and component: sub + FMA over d, then an FMA per
    # coordinate (isotropic); precisions in both passes (diagonal); u = P d, d . u and the sum (full)
    assert gmm.multiply_adds("isotropic", 10, 4, 64) == 10 * 4 * 128
    assert gmm.multiply_adds("diagonal", 10, 4, 64) == 10 * 4 * 256
    assert gmm.multiply_adds("full", 1, 8, 32) == 8 * (32 * 32 + 96)


def test_fma_peak_is_measured_with_the_widest_vectors():
    from scorefast.benchmarks import fma_peak

    peak = fma_peak.measure(threads=1, min_time=0.01)
    if "error" in peak:  # no C compiler with OpenMP here: the reason is recorded instead
        assert peak["error"]
        return
    assert peak["threads"] == 1 and peak["lanes"] in (4, 8, 16)
    assert peak["gflops"] == pytest.approx(2 * peak["multiply_adds_per_s"] / 1e9)
    assert fma_peak.fraction(peak["multiply_adds_per_s"], 2.0, peak) == pytest.approx(0.5)
    assert fma_peak.fraction(1.0, 1.0, {"error": "none"}) is None


def test_gmm_script_dsweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gmm, "DSWEEP_DIMS", (3, 10))
    monkeypatch.setattr(gmm, "DSWEEP_POINTS", 640)  # --quick: 64 points
    path = tmp_path / "d.json"
    assert bench_gmm.main(["--d-sweep", "--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    assert f"results: {path}" in capsys.readouterr().out
    r = json.loads(path.read_text())
    assert [(row["kind"], row["N"], row["K"], row["D"]) for row in r["rows"]] == [
        (kind, 64, gmm.DSWEEP_COMPONENTS, d) for kind in gmm.KINDS for d in (3, 10)
    ]
