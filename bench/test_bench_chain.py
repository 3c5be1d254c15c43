"""pytest-benchmark entries for whole chains (gmm_chain against the eager loop):
``python -m pytest bench/ --benchmark-only``.

The other tests run bench_chain.py and bench_samplers.py on tiny chains, one per method,
and check their JSON (never the speed); and the optional BlackJAX provider: its reason when
JAX is missing, and where JAX is installed its density, tiny chains and the laws of its
chains on Gaussian targets.
"""

import json
import math
import sys

import bench_chain
import bench_samplers
import numpy as np
import pytest
import torch

import scorefast
from scorefast import targets
from scorefast.benchmarks import blackjax_provider, chain

# JAX and BlackJAX are optional (not in requirements-dev.txt): their tests skip without them.
JAX_MISSING = blackjax_provider.unavailable_reason()
requires_jax = pytest.mark.skipif(JAX_MISSING is not None, reason=JAX_MISSING or "")


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
    assert "multiply_adds_per_s" in r["fma_peak"] or "error" in r["fma_peak"]
    for row in r["rows"]:
        assert {"D", "K"} <= set(row) and list(row["times"]) == providers
        assert row["multiply_adds_per_step"] == chain.multiply_adds_per_step(
            next(c for c in cases if c["name"] == row["case"])
        )
        for t in row["times"].values():
            assert {"median", "p20", "p80", "reps", "particle_steps_per_s", "speedup_vs_eager"} <= set(t)
            if "multiply_adds_per_s" in r["fma_peak"]:
                rate = row["multiply_adds_per_step"] * t["particle_steps_per_s"]
                assert t["fma_peak_fraction"] == pytest.approx(rate / r["fma_peak"]["multiply_adds_per_s"])


def test_chain_script_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chain, "cases", lambda quick: TINY_CASES)
    path = tmp_path / "c.json"
    assert bench_chain.main(["--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gmm_chain on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "gmm_chain"
    _check_rows(r, TINY_CASES, ["eager loop", "cpp"])


def test_chain_script_dsweep(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chain, "DSWEEP_DIMS", (3, 10))
    tiny = [dict(c, N=16) for c in chain.dsweep_cases(quick=True)]
    assert [c["name"] for c in tiny] == [
        f"{D}-D {kind}" for D in (3, 10) for kind in ("isotropic ULA", "full ULA", "full annealed 10x10")
    ]
    monkeypatch.setattr(chain, "dsweep_cases", lambda quick: tiny)
    path = tmp_path / "d.json"
    assert bench_chain.main(["--d-sweep", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    assert f"results: {path}" in capsys.readouterr().out
    _check_rows(json.loads(path.read_text()), tiny, ["eager loop", "cpp"])


def _samplers_json(tmp_path, monkeypatch, capsys, *args):
    monkeypatch.setattr(chain, "cases", lambda quick: TINY_CASES)
    path = tmp_path / "s.json"
    assert bench_samplers.main(["--no-compile", "--out", str(path), *args]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Samplers on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "samplers (whole chains)"
    _check_rows(r, TINY_CASES, ["eager loop", "scorefast sampler", "scorefast chain"])
    return r, out


def test_samplers_script_writes_json(tmp_path, monkeypatch, capsys):
    r, out = _samplers_json(tmp_path, monkeypatch, capsys)
    assert "blackjax" in r and all("blackjax" in row for row in r["rows"])
    assert "BlackJAX" in out.splitlines()[1]
    r, out = _samplers_json(tmp_path, monkeypatch, capsys, "--no-blackjax")
    assert "blackjax" not in r and not any("blackjax" in row for row in r["rows"])
    assert "BlackJAX" not in out


@pytest.mark.parametrize(
    "missing, reason", [(("jax", "blackjax"), "JAX is not installed"), (("blackjax",), "BlackJAX is not installed")]
)
def test_samplers_without_jax_say_why_and_keep_the_other_providers(tmp_path, monkeypatch, capsys, missing, reason):
    if missing == ("blackjax",) and JAX_MISSING == "JAX is not installed":
        reason = JAX_MISSING  # jax itself is missing here: that is the reason given first
    for name in missing:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` now raises ImportError
    r, out = _samplers_json(tmp_path, monkeypatch, capsys)
    assert r["blackjax"] == {"skipped": reason}
    assert [row["blackjax"] for row in r["rows"]] == [{"skipped": reason}] * len(TINY_CASES)
    for row in r["rows"]:
        assert all(t["particle_steps_per_s"] > 0 for t in row["times"].values())
    assert f"BlackJAX: skipped ({reason})" in out


@requires_jax
def test_blackjax_tiny_chains_give_finite_numbers(tmp_path, monkeypatch, capsys):
    r, out = _samplers_json(tmp_path, monkeypatch, capsys)
    assert set(r["blackjax"]) == {"jax", "blackjax", "backend"}
    ula, annealed, mala = (row["blackjax"] for row in r["rows"])
    assert annealed == {"skipped": "no annealed Langevin in BlackJAX"}
    assert ula["algorithm"].startswith("blackjax.sgld") and mala["algorithm"] == "blackjax.mala"
    for b in (ula, mala):
        for key in ("median", "particle_steps_per_s", "speedup_vs_eager", "compile_s", "scorefast_chain_vs_blackjax"):
            assert math.isfinite(b[key]) and b[key] > 0
    assert "acceptance" not in ula
    assert 0.0 <= mala["acceptance"] <= 1.0 and 0.0 <= mala["scorefast_acceptance"] <= 1.0
    assert "grid25 annealed 10x100: no annealed Langevin in BlackJAX" in out


@requires_jax
@pytest.mark.parametrize("kind", ["isotropic", "diagonal", "full"])
def test_blackjax_log_density_is_the_mixtures(kind):
    import jax

    mix = targets.random_mixture(4, 6, seed=3, kind=kind, spread=2.0)
    x = 2.0 * torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    logp = blackjax_provider.log_density(mix)
    got = torch.tensor(np.asarray(jax.vmap(logp)(x.numpy())), dtype=torch.float64)
    grad = torch.tensor(np.asarray(jax.vmap(jax.grad(logp))(x.numpy())), dtype=torch.float64)
    torch.testing.assert_close(got, mix.log_prob(x.double()), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, mix.score(x.double()), rtol=1e-4, atol=1e-4)


def _gaussian_chain(method, mean, var, a, N, steps):
    """BlackJAX's chain on N(mean, diag(var)) from N(0, 9 I); (final x (N, D) float64, acceptance)."""
    mix = targets.GaussianMixture(torch.tensor([mean], dtype=torch.float64), diagonal=torch.tensor([var]))
    case = dict(target=mix, method=method, N=N, steps=steps, a=a)
    x0 = 3.0 * torch.randn(N, len(mean), generator=torch.Generator().manual_seed(0))
    bj = blackjax_provider.Chain(case, x0)
    x = torch.tensor(np.asarray(bj.run()), dtype=torch.float64)
    return x, bj.acceptance, case, x0


@requires_jax
def test_blackjax_mala_keeps_the_gaussian_targets_mean_and_variance():
    mean, var, N = [1.0, -2.0], [0.5, 2.0], 20_000
    x, acc, case, x0 = _gaussian_chain("mala", mean, var, 0.2, N, 200)
    m, v = torch.tensor(mean, dtype=torch.float64), torch.tensor(var, dtype=torch.float64)
    # 5 standard errors of the sample mean and variance of N independent chains.
    assert ((x.mean(0) - m).abs() < 5 * (v / N).sqrt()).all()
    assert ((x.var(0) / v - 1).abs() < 5 * math.sqrt(2 / N)).all()
    # Same step-size convention as scorefast's MALA: the same acceptance on the same chain.
    sf = scorefast.gmm_chain(x0, case["target"], method="mala", steps=200, step_size=0.2, seed=1).accepted
    assert 0.5 < acc < 0.99 and abs(acc - float(sf.sum()) / (N * 200)) < 0.01


@requires_jax
def test_blackjax_ula_has_the_law_of_scorefasts_ula_step():
    # ULA x + a s + sqrt(2a) z on N(mu, v) is stationary at N(mu, v / (1 - a / (2v))): 0.625
    # here, against 0.5 for the exact law and 0.556 for a step of a/2.
    N, a, v = 20_000, 0.2, 0.5
    x, acc, _, _ = _gaussian_chain("ula", [1.0], [v], a, N, 100)
    assert acc is None
    law = v / (1 - a / (2 * v))
    assert abs(float(x.mean()) - 1.0) < 5 * math.sqrt(law / N)
    assert abs(float(x.var()) / law - 1) < 5 * math.sqrt(2 / N)


def test_dtype_sweep_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(chain, "cases", lambda quick: TINY_CASES)
    path = tmp_path / "d.json"
    assert bench_chain.main(["--dtypes", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gmm_chain (cpp) by storage type on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "gmm_chain by storage type" and r["backend"] == "cpp" and r["machine"]
    assert r["dtypes"] == ["float32", "bfloat16", "float16", "float64"]
    assert [(row["case"], row["N"], row["steps"]) for row in r["rows"]] == [
        (c["name"], 16, len(chain.schedule(c))) for c in TINY_CASES
    ]
    for row in r["rows"]:
        assert list(row["times"]) == r["dtypes"] and row["times"]["float32"]["vs_float32"] == 1.0
        for t in row["times"].values():
            assert t["particle_steps_per_s"] > 0 and t["vs_float32"] > 0
    with pytest.raises(SystemExit):  # one backend at a time
        bench_chain.main(["--dtypes", "--backends", "cpp,numba", "--out", str(path)])
    assert "--dtypes times one backend" in capsys.readouterr().err
