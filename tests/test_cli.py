"""The command line: sample (the main job), verify, bench, backends; and the README/CI contract."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import scorefast
from scorefast import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sample_recovers_the_two_mode_mixture(tmp_path, capsys):
    # ULA with a = 0.05 on unit-variance modes: stationary variance 1/(1 - a/2) ~ 1.026 per
    # mode, so cov ~ [[5.03, 0], [0, 1.03]]. With 4000 particles the Monte Carlo sd is ~0.008
    # for a mode fraction, ~0.035 for the mean of x1, ~0.18 for var(x1), ~0.025 for var(x2);
    # the bounds below are 5-7 sd plus the bias.
    out_png = tmp_path / "s.png"
    out_json = tmp_path / "s.json"
    rc = cli.main(
        [
            "sample",
            "--particles",
            "4000",
            "--steps",
            "400",
            "--step-size",
            "0.05",
            "--seed",
            "3",
            "--out",
            str(out_png),
            "--json",
            str(out_json),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "covariance" in text and "exact" in text
    s = json.loads(out_json.read_text())
    assert s["non_finite_particles"] == 0
    for f in s["mode_fraction"]:
        assert abs(f - 0.5) < 0.05
    assert abs(s["mean"][0]) < 0.25 and abs(s["mean"][1]) < 0.1
    assert abs(s["covariance"][0][0] - 5.03) < 1.0
    assert abs(s["covariance"][1][1] - 1.03) < 0.15
    assert abs(s["covariance"][0][1]) < 0.3
    assert s["covariance_exact"] == [[5.0, 0.0], [0.0, 1.0]]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_is_reproducible_and_backend_independent(tmp_path):
    runs = {}
    for backend in ("reference", "auto"):
        path = tmp_path / f"{backend}.json"
        cli.main(
            [
                "sample",
                "--particles",
                "64",
                "--steps",
                "20",
                "--seed",
                "5",
                "--backend",
                backend,
                "--no-plot",
                "--no-progress",
                "--json",
                str(path),
            ]
        )
        runs[backend] = json.loads(path.read_text())
    flat = lambda v: [u for row in v for u in (row if isinstance(row, list) else [row])]  # noqa: E731
    for key in ("mean", "covariance"):
        for u, v in zip(flat(runs["reference"][key]), flat(runs["auto"][key])):
            assert abs(u - v) < 1e-4, key


def test_help_documents_every_option():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"scorefast {name} {action.option_strings[0]} has no help"
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "--help"])
    assert exc.value.code == 0


def test_verify_passes(capsys):
    # The whole matrix on one backend (tests/test_verify.py covers the rest).
    assert cli.main(["verify", "--backends", "cpp", "--particles", "33", "--dim", "13"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "PASS  cpp" in out


def test_backends_lists_every_backend(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "cpp", "cuda", "triton", "numba"):
        assert re.search(rf"^{name}\s", out, re.M), name


def test_bench_writes_json_with_the_machine(tmp_path, capsys):
    path = tmp_path / "b.json"
    rc = cli.main(["bench", "--min-log2", "8", "--max-log2", "9", "--no-compile", "--quick", "--out", str(path)])
    assert rc == 0
    r = json.loads(path.read_text())
    assert r["machine"] and r["copy_bandwidth_gbps"] > 0
    assert [row["numel"] for row in r["rows"]] == [256, 512]
    for row in r["rows"]:
        assert {"eager", "cpp"} <= set(row["times"])
        for t in row["times"].values():
            assert t["median"] > 0 and t["fraction_of_copy_bw"] > 0


def test_console_script_runs():
    exe = os.path.join(os.path.dirname(sys.executable), "scorefast")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "scorefast.cli"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "sample" in r.stdout


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    tests_cmd = next(b for b in blocks if "pytest" in b and "bench" not in b)
    pytest_part = tests_cmd.split("&&")[-1].strip()
    assert pytest_part in ci.splitlines(), f"{pytest_part!r} not a line of .ci/run"
    main_cmd = next(b for b in blocks if "scorefast sample" in b)
    assert main_cmd.split("&&")[:-1] == tests_cmd.split("&&")[:-1], "both commands share one setup"


def test_gmm_bench_forms_agree_and_write_json(tmp_path):
    # The two PyTorch forms the benchmark times must compute the op.
    from scorefast.benchmarks.baselines import gmm_direct, gmm_matmul
    from scorefast.targets import random_mixture

    for kind in ("isotropic", "diagonal", "full"):
        mix = random_mixture(3, 4, seed=1, kind=kind)
        x = mix.sample(20, seed=2)
        p = mix.kernel_params(torch.float64, x.device, None, per_point=False)
        args = (x, p["means"], p["inv_var"], p["factor"], p["log_const"])
        ref = scorefast.gmm_score(x, mix, backend="reference")
        for form in (gmm_direct, gmm_matmul):
            s, lp = form(*args)
            torch.testing.assert_close(s, ref[0], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(lp, ref[1], rtol=1e-9, atol=1e-9)
    path = tmp_path / "g.json"
    assert cli.main(["bench", "--op", "gmm_score", "--quick", "--no-compile", "--out", str(path)]) == 0
    r = json.loads(path.read_text())
    # 4 sizes x 3 kinds, and the (K, D) = (64, 64) size once more with overlapping isotropic
    # and diagonal components
    assert len(r["rows"]) == 14 and all("cpp" in row["times"] for row in r["rows"])
    overlapping = [(row["kind"], row["K"], row["D"]) for row in r["rows"] if row["spread"] != 4.0]
    assert overlapping == [("isotropic", 64, 64), ("diagonal", 64, 64)]


@pytest.mark.parametrize("sampler", ["annealed", "mala"])
def test_sample_targets_and_samplers(tmp_path, sampler):
    out_json, out_png = tmp_path / "s.json", tmp_path / "s.png"
    rc = cli.main(
        [
            "sample",
            "--target",
            "ring8",
            "--sampler",
            sampler,
            "--particles",
            "800",
            "--steps",
            "300",
            "--step-size",
            "0.02",
            "--seed",
            "2",
            "--json",
            str(out_json),
            "--out",
            str(out_png),
            "--no-progress",
        ]
    )
    assert rc == 0
    s = json.loads(out_json.read_text())
    assert s["target"] == "ring8" and s["sampler"] == sampler and len(s["mode_fraction"]) == 8
    # both start from N(0, 16), which covers the ring: every mode is found near its weight
    assert all(abs(f - 0.125) < 0.06 for f in s["mode_fraction"])
    if sampler == "mala":
        assert 0.3 < s["acceptance_rate"] <= 1.0
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_sampler_bench_runs_every_provider(monkeypatch, tmp_path):
    from scorefast.benchmarks import chain

    small = [dict(c, N=16, **({"steps": 4} if "steps" in c else {"per_level": 2})) for c in chain.cases(quick=True)]
    monkeypatch.setattr(chain, "cases", lambda quick: small)
    path = tmp_path / "s.json"
    assert cli.main(["bench", "--op", "samplers", "--no-compile", "--out", str(path)]) == 0
    r = json.loads(path.read_text())
    assert len(r["rows"]) == len(small)
    for row in r["rows"]:
        assert set(row["times"]) == {"eager loop", "scorefast sampler", "scorefast chain"}


def test_closed_pipe_ends_quietly():
    # `scorefast backends | head -1`: the reader leaves early; no traceback on stderr.
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "scorefast", "backends"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # nobody reads
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
