"""bench_builds.py on tiny sizes: one build's JSON line, and two runs combined with their
ratios (never the speed)."""

import json

import bench_builds


def test_builds_script_combines_two_runs(tmp_path, capsys):
    assert bench_builds.main(["--quick", "--label", "a"]) == 0
    first = capsys.readouterr().out.strip()
    r = json.loads(first)
    assert r["label"] == "a" and r["machine"] and set(r["gmm_score_ms"]) == {"isotropic", "diagonal", "full"}
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
