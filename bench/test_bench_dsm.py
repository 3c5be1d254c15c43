"""pytest-benchmark entries for the DSM step (perturb + loss + backward):
``python -m pytest bench/ --benchmark-only``.

The last test runs bench_dsm.py on tiny shapes and checks its JSON (never the speed).
"""

import json

import bench_dsm
import pytest
import torch

import scorefast
from scorefast.benchmarks import dsm
from scorefast.benchmarks.baselines import eager_dsm


@pytest.mark.parametrize("provider", ["eager", "cpp"])
@pytest.mark.parametrize("shape", dsm.SHAPES[:2])
def test_dsm_step(benchmark, shape, provider):
    B, D = shape
    x = torch.randn(B, D)
    pred = torch.randn(B, D, requires_grad=True)
    sigma = 0.1 + torch.rand(B)

    def step():
        pred.grad = None
        if provider == "eager":
            _, loss = eager_dsm(x, pred, sigma)
        else:
            scorefast.dsm_perturb(x, sigma, seed=1, step=2, backend=provider)
            loss = scorefast.dsm_loss(pred, x, sigma, seed=1, step=2, backend=provider)
        loss.backward()

    benchmark.group = f"dsm step {B} x {D}"
    benchmark(step)


def test_dsm_script_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(dsm, "SHAPES", [(64, 2), (16, 40)])  # --quick: batches of 8
    path = tmp_path / "d.json"
    assert bench_dsm.main(["--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DSM step (perturb + loss + backward) on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "dsm_loss (perturb + loss + backward)" and r["machine"]
    assert r["providers"] == ["eager", "reference", "cpp"]
    assert [(row["B"], row["D"]) for row in r["rows"]] == [(8, 2), (8, 40)]
    for row in r["rows"]:
        assert row["input_bytes"] == 4 * row["B"] * row["D"]
        assert set(row["peak_extra_bytes"]) == set(r["providers"])
        assert all(isinstance(m, int) for m in row["peak_extra_bytes"].values())
        for t in row["times"].values():
            assert {"median", "p20", "p80", "reps", "speedup_vs_eager"} <= set(t)
