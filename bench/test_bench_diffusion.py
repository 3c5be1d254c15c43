"""bench_diffusion.py on tiny shapes: its JSON has every provider and case (never the speed)."""

import json

import bench_diffusion


def test_diffusion_script_writes_json(tmp_path, capsys):
    path = tmp_path / "d.json"
    assert bench_diffusion.main(["--quick", "--no-compile", "--backends", "cpp", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("VP training step") and f"results: {path}" in out
    r = json.loads(path.read_text())
    assert r["machine"] and [row["shape"] for row in r["train_step"]] == [[2, 3, 16, 16], [2, 4, 16, 16]]
    for row in r["train_step"]:
        assert list(row["times"]) == ["eager", "reference", "cpp"]
        assert all(v >= 0 for v in row["peak_extra_bytes"].values())
    for row in r["scheduler_step"]:
        assert {"ddpm fused, counter noise", "ve diffusers, generator"} <= set(row["times"])
        assert all(t["speedup_vs_diffusers"] > 0 for t in row["times"].values())
