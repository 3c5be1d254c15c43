"""bench_builds.py on tiny sizes: one build's JSON line, and two runs combined with their
ratios (never the speed)."""

import json

import bench_builds
import pytest


def test_builds_script_combines_two_runs(tmp_path, capsys):
    assert bench_builds.main(["--quick", "--label", "a"]) == 0
    first = capsys.readouterr().out.strip()
    r = json.loads(first)
    assert r["label"] == "a" and r["machine"] and set(r["gmm_score_ms"]) == {"isotropic", "diagonal", "full"}
    assert r["statistic"] == "median"
    assert set(r["chains"]) == set(bench_builds.CHAIN_CASES) | {w[0] for w in bench_builds.WIDE_CHAINS}
    for name, *_ in bench_builds.WIDE_CHAINS:
        assert 0.0 < r["chains"][name]["acceptance"] <= 1.0
    before = tmp_path / "a.json"
    before.write_text(first + "\n")
    out = tmp_path / "ab.json"
    assert bench_builds.main(["--quick", "--label", "b", "--before", str(before), "--out", str(out)]) == 0
    c = json.loads(out.read_text())
    a, b = c["runs"]
    assert a["label"] == "a" and b["label"] == "b"
    for kind, ms in b["gmm_score_ms"].items():
        assert c["speedup"][f"gmm_score {kind}"] == a["gmm_score_ms"][kind] / ms
    for name, ch in b["chains"].items():
        assert c["speedup"][name] == ch["particle_steps_per_s"] / a["chains"][name]["particle_steps_per_s"]
    if "error" not in c["fma_peak"]:
        share = c["after_fma_peak_fraction"]
        assert set(share) == set(c["speedup"]) and all(v > 0 for v in share.values())
        # 64-D isotropic: 2 K D multiply-adds per particle-step
        name = bench_builds.WIDE_CHAINS[0][0]
        rate = b["chains"][name]["particle_steps_per_s"]
        assert share[name] == 2 * 16 * 64 * rate / c["fma_peak"]["multiply_adds_per_s"]


def test_builds_script_times_gmm_score_at_a_given_size(tmp_path, capsys):
    assert bench_builds.main(["--quick", "--label", "a", "--gmm-size", "70,3,9"]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert r["gmm_size"] == [70, 3, 9] and all(ms > 0 for ms in r["gmm_score_ms"].values())
    # both runs at one size, or no ratios
    before = tmp_path / "a.json"
    before.write_text(json.dumps(r) + "\n")
    with pytest.raises(ValueError, match="gmm_score timed at"):
        bench_builds.main(["--quick", "--before", str(before)])


@pytest.mark.parametrize("size", ["70,3", "70,3,0", "a,b,c"])
def test_builds_script_rejects_a_bad_gmm_size(size, capsys):
    with pytest.raises(SystemExit):
        bench_builds.main(["--quick", "--gmm-size", size])
    assert "--gmm-size: expected three positive integers" in capsys.readouterr().err


def test_builds_script_best_of_runs_compare_only_with_best_of_runs(tmp_path, capsys):
    assert bench_builds.main(["--quick", "--best-of", "--label", "a"]) == 0
    r = json.loads(capsys.readouterr().out.strip())
    assert r["statistic"] == "min" and all(ms > 0 for ms in r["gmm_score_ms"].values())
    before = tmp_path / "a.json"
    before.write_text(json.dumps(r) + "\n")
    with pytest.raises(ValueError, match="the min call before, the median after"):
        bench_builds.main(["--quick", "--before", str(before)])


def test_builds_script_alternates_two_builds_and_keeps_each_ones_best_round(tmp_path, monkeypatch):
    # Both "builds" are this checkout here; the runs alternate and each case keeps its best round.
    calls = []
    real_run = bench_builds.subprocess.run

    def run(cmd, env, **kw):
        calls.append((env["PYTHONPATH"].split(bench_builds.os.pathsep)[0], cmd[cmd.index("--label") + 1]))
        return real_run(cmd, env=env, **kw)

    monkeypatch.setattr(bench_builds.subprocess, "run", run)
    out = tmp_path / "ab.json"
    argv = ["--quick", "--alternate", "/old", "/new", "--rounds", "2", "--gmm-size", "70,3,9", "--out", str(out)]
    assert bench_builds.main(argv) == 0
    assert calls == [("/old", "before"), ("/new", "after")] * 2
    c = json.loads(out.read_text())
    before, after = c["runs"]
    assert before["label"] == "before" and after["label"] == "after"
    assert before["rounds"] == after["rounds"] == 2 and after["statistic"] == "min"
    assert after["gmm_size"] == [70, 3, 9]


def test_best_of_runs_takes_each_cases_best():
    run = {"gmm_score_ms": {"isotropic": 2.0, "full": 1.0}, "chains": {"c": {"particle_steps_per_s": 5.0, "K": 3}}}
    other = {"gmm_score_ms": {"isotropic": 1.5, "full": 3.0}, "chains": {"c": {"particle_steps_per_s": 7.0, "K": 3}}}
    best = bench_builds.best_of_runs([run, other])
    assert best["gmm_score_ms"] == {"isotropic": 1.5, "full": 1.0}
    assert best["chains"]["c"] == {"particle_steps_per_s": 7.0, "K": 3} and best["rounds"] == 2
    assert run["gmm_score_ms"]["isotropic"] == 2.0  # the runs are left as they were


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--alternate", "/a", "/b", "--before", "x.json"], "exclude each other"),
        (["--alternate", "/a", "/b", "--rounds", "0"], "--rounds: expected a positive count"),
        (["--out", "x.json"], "--out needs --before or --alternate"),
    ],
)
def test_builds_script_rejects_conflicting_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench_builds.main(["--quick", *argv])
    assert message in capsys.readouterr().err
