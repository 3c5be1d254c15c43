"""Bad command lines: each gets an argparse-style message naming the flag and exit status 2,
before any work starts; a failure outside the user's control exits 1 with one line."""

from __future__ import annotations

import pytest
import torch

from scorefast import cli

NOT_A_DIR = "/etc/hostname/sub/out"  # the parent is a file: nothing can be written there

BAD = [
    # sample
    (["sample", "--steps", "0"], "--steps"),
    (["sample", "--steps", "-1"], "--steps"),
    (["sample", "--steps", "1.5"], "--steps"),
    (["sample", "--steps", "4294967296"], "--steps"),
    (["sample", "--sampler", "annealed", "--steps", "4294967297"], "--steps"),
    (["sample", "--step-size", "nan"], "--step-size"),
    (["sample", "--step-size", "inf"], "--step-size"),
    (["sample", "--step-size", "0"], "--step-size"),
    (["sample", "--step-size", "-1"], "--step-size"),
    (["sample", "--step-size", "big"], "--step-size"),
    (["sample", "--particles", "-3"], "--particles"),
    (["sample", "--particles", "0"], "--particles"),
    (["sample", "--particles", "1e12"], "--particles"),
    (["sample", "--particles", "1000000000000"], "--particles"),
    (["sample", "--levels", "1"], "--levels"),
    (["sample", "--levels", "0"], "--levels"),
    (["sample", "--epsilon", "0"], "--epsilon"),
    (["sample", "--init-scale", "-1"], "--init-scale"),
    (["sample", "--seed", "-1"], "--seed"),
    (["sample", "--seed", str(2**64)], "--seed"),
    (["sample", "--seed", "1.5"], "--seed"),
    (["sample", "--backend", "bogus"], "--backend"),
    (["sample", "--device", "meta"], "--device"),
    (["sample", "--device", "bogus"], "--device"),
    (["sample", "--device", "cuda:99"], "--device"),
    (["sample", "--dtype", "float16"], "--dtype"),
    (["sample", "--target", "nope"], "--target"),
    (["sample", "--sampler", "hmc"], "--sampler"),
    (["sample", "--out", "{tmp}"], "--out"),
    (["sample", "--out", NOT_A_DIR + ".png"], "--out"),
    (["sample", "--out", "{tmp}/plot.txt"], "--out"),
    (["sample", "--out", ""], "--out"),
    (["sample", "--json", "{tmp}"], "--json"),
    (["sample", "--json", NOT_A_DIR + ".json"], "--json"),
    (["sample", "--checkpoint", "{tmp}"], "--checkpoint"),
    (["sample", "--checkpoint", NOT_A_DIR + ".pt"], "--checkpoint"),
    (["sample", "--checkpoint", ""], "--checkpoint"),
    (["sample", "--checkpoint", "{tmp}/c.pt", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["sample", "--checkpoint", "{tmp}/c.pt", "--checkpoint-every", "-5"], "--checkpoint-every"),
    (["sample", "--checkpoint", "{tmp}/c.pt", "--checkpoint-every", "2.5"], "--checkpoint-every"),
    (["sample", "--checkpoint", "{tmp}/c.pt", "--checkpoint-every", "4294967296"], "--checkpoint-every"),
    (["sample", "--checkpoint-every", "5"], "--checkpoint-every"),
    (["sample", "--resume"], "--resume"),
    (["sample", "--checkpoint", "{tmp}/missing.pt", "--resume"], "--resume"),
    (["sample", "--checkpoint", "{tmp}/plot", "--resume"], "--checkpoint"),
    # train
    (["train", "--steps", "-1"], "--steps"),
    (["train", "--steps", "0"], "--steps"),
    (["train", "--batch", "0"], "--batch"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--levels", "1"], "--levels"),
    (["train", "--sigma-min", "0"], "--sigma-min"),
    (["train", "--sigma-max", "0"], "--sigma-max"),
    (["train", "--sigma-max", "0.01"], "--sigma-max"),
    (["train", "--sigma-min", "1000"], "--sigma-min"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--samples", "0"], "--samples"),
    (["train", "--steps-per-level", "0"], "--steps-per-level"),
    (["train", "--epsilon", "-1"], "--epsilon"),
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--backend", "bogus"], "--backend"),
    (["train", "--parametrization", "v"], "--parametrization"),
    (["train", "--load", "{tmp}/missing.pt"], "--load"),
    (["train", "--load", "{tmp}"], "--load"),
    (["train", "--save", "{tmp}"], "--save"),
    (["train", "--save", NOT_A_DIR + ".pt"], "--save"),
    (["train", "--out", "{tmp}"], "--out"),
    (["train", "--json", "{tmp}"], "--json"),
    # bench
    (["bench", "--particle-size", "0"], "--particle-size"),
    (["bench", "--device", "meta"], "--device"),
    (["bench", "--min-log2", "12", "--max-log2", "4"], "log2"),
    (["bench", "--min-log2", "-1"], "--min-log2"),
    (["bench", "--max-log2", "99"], "--max-log2"),
    (["bench", "--backends", "bogus"], "--backends"),
    (["bench", "--op", "nope"], "--op"),
    (["bench", "--out", "{tmp}"], "--out"),
    # verify
    (["verify", "--particles", "0"], "--particles"),
    (["verify", "--dim", "0"], "--dim"),
    (["verify", "--backends", "bogus"], "--backends"),
    (["verify", "--ops", "bogus"], "--ops"),
    (["verify", "--dtypes", "int8"], "--dtypes"),
    (["verify", "--require", "bogus"], "--require"),
    (["verify", "--json", "{tmp}"], "--json"),
    (["verify", "--junit", NOT_A_DIR + ".xml"], "--junit"),
    # the command itself
    (["nosuchcommand"], "invalid choice"),
    ([], "COMMAND"),
    (["sample", "--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize("argv, flag", BAD, ids=[" ".join(a) or "(none)" for a, _ in BAD])
def test_bad_command_line_is_a_usage_error_naming_the_flag(argv, flag, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "plot").mkdir()  # so that no run could write its outputs where a test looks
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scorefast") and "error:" in last and flag in last, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["sample", "--backend", "cuda"], ["sample", "--device", "cuda"]])
def test_cuda_without_a_gpu_is_a_usage_error(argv, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: these command lines are valid here")
    monkeypatch.delenv("SCOREFAST_CUDA_EMULATOR", raising=False)  # the real CUDA backend
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert argv[1] in capsys.readouterr().err


def test_a_failure_outside_the_command_line_exits_1_with_one_line(monkeypatch, tmp_path, capsys):
    from scorefast import samplers

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(samplers, "mala", out_of_memory)
    rc = cli.main(["sample", "--sampler", "mala", "--particles", "10", "--steps", "2", "--no-plot"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err == ["scorefast sample: error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"]


def test_a_plot_path_without_suffix_gets_png_and_is_printed_as_written(tmp_path, capsys):
    out = tmp_path / "figures" / "samples"
    assert cli.main(["sample", "--particles", "50", "--steps", "5", "--out", str(out), "--no-progress"]) == 0
    assert (tmp_path / "figures" / "samples.png").is_file()
    assert f"plot: {out}.png" in capsys.readouterr().out
