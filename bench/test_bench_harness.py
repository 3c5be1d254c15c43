"""The benchmark harness: result paths independent of the working directory, a clear error
outside a source checkout, the providers it times and the table layout."""

import os

import bench_chain
import bench_dsm
import bench_gmm
import bench_langevin
import bench_samplers
import pytest
import torch

from scorefast import backend_registry
from scorefast.benchmarks import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = [bench_langevin, bench_gmm, bench_dsm, bench_chain, bench_samplers]


def test_default_results_dir_is_the_checkouts_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert harness.results_dir() == os.path.join(ROOT, "bench", "results")
    # the recorded files are named by this slug of the machine
    path = harness.default_result_path("gmm_score", "AMD EPYC (2 cores, 2 threads)")
    assert path == os.path.join(ROOT, "bench", "results", "gmm_score-amd-epyc-2-cores-2-threads.json")
    name = "Intel(R) Xeon(R) Processor (family 6 model 207, 2 cores, 2 threads)"
    assert harness.default_result_path("samplers", name).endswith(
        "samplers-intel-r-xeon-r-processor-family-6-model-207-2-cores-2-threads.json"
    )
    assert harness.result_path("x", torch.device("cpu"), str(tmp_path / "a.json")) == str(tmp_path / "a.json")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__)
def test_outside_a_checkout_out_is_required(script, monkeypatch, capsys):
    monkeypatch.setattr(harness, "source_root", lambda: None)
    with pytest.raises(harness.NoResultsDir):
        harness.result_path("gmm_score", torch.device("cpu"))
    with pytest.raises(SystemExit) as exc:  # before anything is timed
        script.main(["--quick", "--no-compile"])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_emulated_backends_and_the_reference_are_never_timed(monkeypatch):
    everywhere = backend_registry.BackendStatus("x", True, ("cpu", "cuda"))
    monkeypatch.setattr(backend_registry, "status", lambda name: everywhere)
    monkeypatch.setattr(backend_registry, "has_op", lambda name, op: True)
    assert harness.timed_backends(torch.device("cpu"), "gmm_score") == ["cpp", "numba"]
    assert harness.timed_backends(torch.device("cuda"), "gmm_score") == ["cpp", "cuda", "triton", "numba"]
    monkeypatch.setattr(backend_registry, "has_op", lambda name, op: name != "numba")
    assert harness.timed_backends(torch.device("cpu"), "gmm_chain_") == ["cpp"]
    assert harness.timed_backends(torch.device("cpu"), "gmm_score", ["triton"]) == ["triton"]
    assert harness.parse_backends("auto-all") is None and harness.parse_backends("cpp,numba") == ["cpp", "numba"]


def test_table_columns_are_aligned_and_space_separated():
    columns = [
        harness.Column("name", 6, lambda r: r["name"], align="<"),
        harness.Column("ms", 8, lambda r: f"{r['ms']:.3f}"),
    ]
    table = harness.format_table("title", columns, [{"name": "ab", "ms": 1.5}, {"name": "abcdefgh", "ms": 12.25}])
    assert table.splitlines() == ["title", "name         ms", "ab        1.500", "abcdefgh   12.250"]


def test_interleaved_timing_in_blocks_calls_each_function_for_its_block_time(monkeypatch):
    # each call "takes" 10 ms of a fake clock; a block of 25 ms is 3 calls a round
    clock = [0.0]
    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock[0])
    calls = []

    def fn(name):
        calls.append(name)
        clock[0] += 0.01

    fns = {name: (lambda name=name: fn(name)) for name in ("a", "b")}
    result = harness.time_fns_interleaved(fns, torch.device("cpu"), min_time=0.05, min_reps=1, block_time=0.025)
    assert calls == ["a", "b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # warm-up, then 2 rounds
    assert all(r["reps"] == 6 and r["min"] == pytest.approx(0.01) for r in result.values())


def test_interleaved_timing_calls_each_function_once_per_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = harness.time_fns_interleaved(fns, torch.device("cpu"), min_time=0.0, min_reps=5)
    assert list(result) == ["a", "b", "c"]
    assert all(r["reps"] == 5 and 0 <= r["min"] <= r["p20"] <= r["median"] <= r["p80"] for r in result.values())
    assert calls == ["a", "b", "c"] * 8  # 3 warm-up rounds, then 5 timed ones, in order
