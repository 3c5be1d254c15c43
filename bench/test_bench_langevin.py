"""pytest-benchmark entries for langevin_step: ``python -m pytest bench/ --benchmark-only``.

Each size is timed for eager PyTorch, torch.compile of it and the scorefast backends
available on the CPU; compare the rows of one run (``--benchmark-group-by=param:numel``).
The last test runs bench_langevin.py at tiny sizes and checks its JSON (never the speed).
"""

import functools
import json

import bench_langevin
import pytest
import torch

import scorefast
from scorefast import backend_registry
from scorefast.benchmarks.baselines import eager_langevin

SIZES = [2**14, 2**20, 2**24]
PROVIDERS = ["eager", "torch.compile"] + [n for n in ("cpp", "numba") if backend_registry.status(n).available]
_compiled = torch.compile(eager_langevin, dynamic=False)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("numel", SIZES)
def test_langevin_step(benchmark, numel, provider):
    x = torch.randn(numel)
    s = torch.randn(numel)
    a, b = 0.01, 0.02**0.5
    if provider == "eager":
        fn = lambda: eager_langevin(x, s, a, b)  # noqa: E731
    elif provider == "torch.compile":
        fn = lambda: _compiled(x, s, a, b)  # noqa: E731
    else:
        fn = lambda: scorefast.langevin_step(
            x,
            s,
            step_size=a,
            noise_scale=b,
            seed=1,
            step=3,  # noqa: E731
            backend=provider,
        )
    fn()
    benchmark.group = f"langevin_step numel={numel}"
    benchmark(fn)


def test_langevin_script_writes_json(tmp_path, capsys):
    path = tmp_path / "l.json"
    assert (
        bench_langevin.main(
            [
                "--min-log2",
                "8",
                "--max-log2",
                "9",
                "--particle-size",
                "64",
                "--quick",
                "--no-compile",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("langevin_step on ") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["op"] == "langevin_step" and r["machine"] and r["copy_bandwidth_gbps"] > 0
    assert r["particle_size"] == 64 and r["bytes_per_element"].startswith("12")
    assert {"device", "torch", "threads", "date"} <= set(r)
    assert r["providers"][0] == "eager" and "torch.compile" not in r["providers"]
    assert [row["numel"] for row in r["rows"]] == [256, 512]
    for row in r["rows"]:
        assert row["bytes"] == 12 * row["numel"] and list(row["times"]) == r["providers"]
        for t in row["times"].values():
            assert {
                "median",
                "p20",
                "p80",
                "reps",
                "gbps",
                "elements_per_s",
                "fraction_of_copy_bw",
                "speedup_vs_eager",
            } <= set(t)


def test_d_sweep_writes_every_size_and_ratio(tmp_path, monkeypatch, capsys):
    from scorefast.benchmarks import langevin

    monkeypatch.setattr(
        langevin, "run_d_sweep", functools.partial(langevin.run_d_sweep, numel=4096, particle_sizes=(2, 17))
    )
    path = tmp_path / "d.json"
    assert bench_langevin.main(["--d-sweep", "--quick", "--out", str(path)]) == 0
    assert capsys.readouterr().out.startswith("langevin_step (cpp) by particle size D")
    r = json.loads(path.read_text())
    assert [(row["dtype"], row["D"]) for row in r["rows"]] == [
        ("float32", 2),
        ("float32", 17),
        ("bfloat16", 2),
        ("bfloat16", 17),
    ]
    for row in r["rows"]:
        assert set(row["times"]) == {"eager", "out_of_place", "in_place", "in_place_no_noise", "normal", "torch.randn"}
        assert row["in_place_vs_no_noise"] > 0 and row["speedup_vs_eager"] > 0
