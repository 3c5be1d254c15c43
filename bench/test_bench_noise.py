"""bench_noise.py on tiny sizes: the JSON has every provider and field (never the speed)."""

import json

import bench_noise


def test_noise_script_writes_json(tmp_path, capsys):
    out = tmp_path / "normal.json"
    assert bench_noise.main(["--quick", "--min-log2", "10", "--max-log2", "11", "--no-compile", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["op"] == "normal" and [r["numel"] for r in result["rows"]] == [1024, 2048]
    assert "cpp" in result["providers"] and "eager" in result["providers"]
    for row in result["rows"]:
        for provider in result["providers"]:
            t = row["times"][provider]
            assert t["median"] > 0 and t["normals_per_s"] > 0 and 0 < t["fraction_of_copy_bw"]
    assert "normal (the noise contract)" in capsys.readouterr().out
