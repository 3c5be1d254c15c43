"""``scorefast ddpm`` and examples/ddpm_2d.py: the fused VP training loop learns, and the fused
DDPM scheduler gives diffusers' samples on the same model and noise (up to T steps of float32
rounding, as in tests/test_diffusers_schedulers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import diffusers
import torch

from scorefast import cli, targets
from scorefast.cli_ddpm import DATA_SCALE, sample, train
from scorefast.integrations.diffusers import DDPMScheduler

ROOT = Path(__file__).resolve().parents[1]
EPS32 = torch.finfo(torch.float32).eps


def test_training_lowers_the_loss_and_both_schedulers_agree():
    target = targets.two_mode_2d()
    losses = []
    model, config, _ = train(
        target, steps=120, batch=128, timesteps=20, lr=3e-3, seed=0, progress=lambda i, v: losses.append(v)
    )
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.8 * first, (first, last)  # the eps loss starts near E||z - eps_0||^2 ~ 2 + ...
    ours = sample(model, DDPMScheduler.from_config(config), 400, seed=1)
    theirs = sample(model, diffusers.DDPMScheduler.from_config(config), 400, seed=1)
    tol = 20 * 8 * EPS32 * float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) <= tol
    assert float((ours - sample(model, DDPMScheduler.from_config(config), 400, seed=2)).abs().max()) > 0.1


def test_cli_ddpm_writes_statistics(tmp_path, capsys):
    out = tmp_path / "stats.json"
    argv = ["ddpm", "--train-steps", "10", "--timesteps", "10", "--particles", "200", "--json", str(out)]
    assert cli.main(argv + ["--out", str(tmp_path / "pair")]) == 0
    printed = capsys.readouterr().out
    stats = json.loads(out.read_text())
    assert stats["train_steps"] == 10 and len(stats["mode_fraction"]) == 2
    assert stats["max_difference_fused_vs_diffusers"] <= 10 * 8 * EPS32 * 10 * DATA_SCALE
    assert "fused DDPM vs diffusers DDPM" in printed and (tmp_path / "pair.png").exists()


def test_example_runs(tmp_path):
    out = tmp_path / "ddpm.png"
    cmd = [sys.executable, str(ROOT / "examples" / "ddpm_2d.py"), "--train-steps", "5", "--particles", "50"]
    res = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "fused vs diffusers" in res.stdout and out.exists()
