"""pytest-benchmark entries for whole chains (gmm_chain against the eager loop):
``python -m pytest bench/ --benchmark-only``.

The other tests run bench_chain.py and bench_samplers.py on tiny chains, one per method,
and check their JSON (never the speed).
"""

import json

import bench_chain
import bench_samplers
import pytest
import torch

import scorefast
from scorefast.benchmarks import chain


def _tiny(cases):
    """The first ULA, the annealed and the full-covariance MALA case, 16 particles, a few steps."""
    return [
        dict(c, N=16, **({"steps": 4} if "steps" in c else {"per_level": 2})) for c in (cases[0], cases[2], cases[4])
    ]


TINY_CASES = _tiny(chain.cases(quick=True))


@pytest.mark.parametrize("provider", ["eager loop", "cpp"])
def test_two_mode_chain(benchmark, provider):
    case = dict(chain.cases(quick=True)[0], N=1000, steps=100)
    x0 = 3.0 * torch.randn(case["N"], 2)
    if provider == "eager loop":
        fn = chain.eager_loop(case, x0)
    else:
        fn = lambda: scorefast.gmm_chain(
            x0,
            case["target"],
            steps=case["steps"],
            step_size=case["a"],  # noqa: E731
            seed=1,
            backend=provider,
        )
    benchmark.group = "two-mode ULA, 1000 particles x 100 steps"
    benchmark(fn)


def _check_rows(r, cases, providers):
    assert r["machine"] and {"device", "torch", "threads", "date"} <= set(r)
    assert r["providers"] == providers
    assert [(row["case"], row["N"], row["steps"]) for row in r["rows"]] == [
        (c["name"], 16, len(chain.schedule(c))) for c in cases
    ]
    for row in r["rows"]:
        assert {"D", "K"} <= set(row) and list(row["times"]) == providers
        for t in row["times"].values():
            assert {"median", "p20", "p80", "reps", "particle_steps_per_s", "speedup_vs_eager"} <= set(t)


def test_chain_script_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chain, "cases", lambda quick: TINY_CASES)
    path = tmp_path / "c.json"
    assert bench_chain.main(["--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gmm_chain on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "gmm_chain"
    _check_rows(r, TINY_CASES, ["eager loop", "cpp"])


def test_samplers_script_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chain, "cases", lambda quick: TINY_CASES)
    path = tmp_path / "s.json"
    assert bench_samplers.main(["--no-compile", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Samplers on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "samplers (whole chains)"
    _check_rows(r, TINY_CASES, ["eager loop", "scorefast sampler", "scorefast chain"])
