"""DSM training under DistributedDataParallel (gloo, CPU) equals one process's training.

Runs with 1 and 2 processes train the same network on the same global batches; the loss of
every step and the final parameters must equal one plain process's up to float32 rounding.
The tolerance is earned, not picked: a float64 twin of the single-process run measures that
run's float32 rounding error e (the twin's own error is ~1e-9 times smaller). The data-parallel
run computes the same exact quantities with its float32 sums in another order (per-rank partial
sums, then the all-reduce), so its error is of the same size and the two runs lie within about
2e of each other; 4e leaves room for the other run's worst element being the larger one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from scorefast import cli, targets
from scorefast.distributed import training
from scorefast.nn import DSMLoss, NoiseConditionalScoreNet, geometric_sigmas

ROOT = Path(__file__).resolve().parents[1]
GLOBAL_BATCH = 13  # two ranks get 7 and 6 samples: the unequal-slice weighting is exercised
STEPS = 4
EPS32 = torch.finfo(torch.float32).eps


def _budget(single: torch.Tensor, exact: torch.Tensor) -> float:
    """4e, e the single float32 run's largest distance from its float64 twin (module docstring).

    A twin that is not one (other data, other noise) would give an O(1) "rounding error" and a
    test that cannot fail, so e must look like rounding: at most 2^10 ulps of the largest value.
    """
    e = float((single - exact).abs().max())
    assert 0 < e <= 2**10 * EPS32 * float(exact.abs().max()), f"float64 twin off by {e}: not a twin"
    return 4 * e


# ---------------------------------------------------------------- the slice contract


def test_batch_slices_partition_the_global_batch():
    for world_size in (1, 2, 3, 5):
        for global_batch in (world_size, 7, 13, 64):
            if global_batch < world_size:
                continue
            parts = [training.batch_slice(global_batch, r, world_size) for r in range(world_size)]
            covered = [i for p in parts for i in range(p.start, p.stop)]
            assert covered == list(range(global_batch))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert training.batch_slice(5) == slice(0, 5)  # no process group: the whole batch
    with pytest.raises(ValueError, match="global_batch .* must be >= the number of processes"):
        training.batch_slice(2, 0, 3)
    with pytest.raises(ValueError, match="rank must be"):
        training.batch_slice(8, 2, 2)
    with pytest.raises(ValueError, match="world_size must be"):
        training.batch_slice(8, 0, 0)


def _exact_score(x, sigma):
    # The score of N(0, sigma^2 I) evaluated row by row: no batch-size-dependent GEMM blocking,
    # so any difference between a slice and the whole batch is the noise or the levels.
    return -x / sigma[:, None] ** 2


def test_slices_get_the_noise_and_levels_of_their_global_samples():
    loss_fn = DSMLoss(geometric_sigmas(4.0, 0.1, 6), seed=3)
    x = torch.randn(11, 3, generator=torch.Generator().manual_seed(0))
    whole = loss_fn(_exact_score, x, 5, reduction="none")
    assert torch.equal(loss_fn(_exact_score, x, 5), whole.mean())  # the plain call is unchanged
    parts = [
        loss_fn(_exact_score, x[p], 5, sample_offset=p.start, global_batch=11, reduction="none")
        for p in (training.batch_slice(11, r, 3) for r in range(3))
    ]
    assert torch.equal(torch.cat(parts), whole)
    # Numbering a slice's samples from 0 (a per-rank counter) repeats the first slice's draws.
    local = loss_fn(_exact_score, x[6:], 5, sample_offset=0, global_batch=11, reduction="none")
    assert not torch.equal(local, whole[6:])


def test_dsm_loss_slice_arguments_are_checked():
    loss_fn = DSMLoss(geometric_sigmas(4.0, 0.1, 3), seed=0)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="global_batch is required"):
        loss_fn(_exact_score, x, 0, sample_offset=2)
    with pytest.raises(ValueError, match=r"must lie within global_batch = 5"):
        loss_fn(_exact_score, x, 0, sample_offset=2, global_batch=5)
    with pytest.raises(ValueError, match="sample_offset must be"):
        loss_fn(_exact_score, x, 0, sample_offset=-1, global_batch=5)
    with pytest.raises(ValueError, match="global_batch must be"):
        loss_fn(_exact_score, x, 0, global_batch=0)


# ---------------------------------------------------------------- DDP training, library level


def _fit(dtype: torch.dtype, counter: str = "global") -> dict:
    """STEPS of SGD on the DSM loss, under DDP when a process group is initialised.

    counter='per_rank' is the mistake the global counter exists to avoid: every rank numbers its
    samples from 0, so the ranks share noise and levels instead of drawing the global batch's.
    """
    torch.manual_seed(0)
    net = NoiseConditionalScoreNet(2, hidden=16, layers=2).to(dtype)
    model = DistributedDataParallel(net) if dist.is_initialized() else net
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    loss_fn = DSMLoss(geometric_sigmas(3.0, 0.1, 4), seed=5)
    data = (torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) + torch.tensor([1.5, 0.0])).to(dtype)
    g = torch.Generator().manual_seed(2)
    losses = []
    for step in range(STEPS):
        x = data[torch.randint(0, data.shape[0], (GLOBAL_BATCH,), generator=g)]
        if counter == "global":
            losses.append(training.train_step(model, loss_fn, opt, x, step))
            continue
        part = training.batch_slice(GLOBAL_BATCH)
        objective, loss_sum = training.shard_objective(
            loss_fn, model, x[part], step, sample_offset=0, global_batch=GLOBAL_BATCH
        )
        opt.zero_grad()
        objective.backward()
        opt.step()
        losses.append(float(training.global_mean_loss(loss_sum, GLOBAL_BATCH)))
    params = torch.cat([p.detach().double().flatten() for p in net.parameters()])
    return {"losses": torch.tensor(losses, dtype=torch.float64), "params": params}


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        result = {counter: _fit(torch.float32, counter) for counter in ("global", "per_rank")}
    finally:
        dist.destroy_process_group()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


def _spawn(world_size: int, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"world{world_size}"
    out.mkdir()
    mp.spawn(_worker, args=(world_size, str(out / "init"), str(out)), nprocs=world_size, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2])
def test_ddp_training_equals_one_process(world_size, tmp_path):
    single, exact = _fit(torch.float32), _fit(torch.float64)
    ranks = _spawn(world_size, tmp_path)
    for key in ("losses", "params"):
        tol = _budget(single[key], exact[key])
        got = ranks[0]["global"][key]
        assert float((got - single[key]).abs().max()) <= tol, (key, got, single[key])
        for other in ranks[1:]:  # DDP keeps the replicas identical, and every rank reports the global loss
            assert torch.equal(other["global"][key], got), key
        if world_size > 1:
            # A per-rank noise counter trains on other noise: the runs part by far more than rounding.
            assert float((ranks[0]["per_rank"][key] - single[key]).abs().max()) > 100 * tol, key


# ---------------------------------------------------------------- scorefast train under torchrun

TRAIN = ["train", "--steps", "3", "--batch", "9", "--hidden", "8", "--levels", "3", "--lr", "0.01"]
TRAIN += ["--samples", "4", "--steps-per-level", "1", "--seed", "3", "--no-plot", "--no-progress"]


def _replay_train(state: dict, dtype: torch.dtype) -> dict:
    """`scorefast train TRAIN` retraced step by step (its data, batches, initialisation and Adam)
    in ``dtype``: the float32 replay must equal the command's own run, the float64 one is its twin."""
    seed, steps, batch, hidden, lr = 3, 3, 9, 8, 0.01
    torch.manual_seed(seed)
    data = targets.PRESETS["two_mode"]().sample(20000, seed=seed).float().to(dtype)
    model = NoiseConditionalScoreNet(2, hidden=hidden).to(dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = DSMLoss(state["sigmas"], seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for it in range(steps):
        x = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        losses.append(training.train_step(model, loss_fn, opt, x, it))
    return {"losses": torch.tensor(losses, dtype=torch.float64), "params": _params(model.state_dict())}


def _params(state_dict: dict) -> torch.Tensor:
    return torch.cat([v.double().flatten() for k, v in sorted(state_dict.items()) if k != "freqs"])


def test_torchrun_train_rank0_alone_prints_and_saves_the_one_process_model(tmp_path, capsys):
    one = tmp_path / "one.pt"
    assert cli.main(TRAIN + ["--save", str(one)]) == 0
    single_out = capsys.readouterr().out
    single = torch.load(one, weights_only=True)
    single = {"losses": torch.tensor(single["losses"], dtype=torch.float64), "params": _params(single["model"])}

    two, logs = tmp_path / "two.pt", tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["--log-dir", str(logs), "--redirects", "3", "-m", "scorefast", *TRAIN, "--save", str(two)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    # Each rank's output goes to <log-dir>/<run>/attempt_0/<rank>/std{out,err}.log.
    out = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    err = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert sorted(out) == [0, 1], out
    assert out[1] == "" and err[1] == "", (out[1], err[1])
    assert out[0].count("DSM loss:") == 1 and single_out.count("DSM loss:") == 1, out[0]

    state = torch.load(two, weights_only=True)
    assert state["step"] == 3 and len(state["losses"]) == 3
    ddp = {"losses": torch.tensor(state["losses"], dtype=torch.float64), "params": _params(state["model"])}
    replay = _replay_train(state, torch.float32)
    exact = _replay_train(state, torch.float64)
    for key in ("losses", "params"):
        assert torch.equal(replay[key], single[key]), f"the replay no longer follows scorefast train ({key})"
        tol = _budget(single[key], exact[key])
        assert float((ddp[key] - single[key]).abs().max()) <= tol, (key, ddp[key], single[key])


def test_train_drops_the_ddp_wrapper_before_destroying_the_group(tmp_path, monkeypatch):
    """DDP's reducer holds the group; as its last holder it frees the group holding the GIL while
    gloo's workers may need the GIL to release a finished collective's tensors, and the process
    hangs at exit (now and then: a race). So ``train`` must drop the wrapper before ``shutdown``."""
    from torch.nn import parallel

    from scorefast.distributed import _runtime

    wrappers = []

    class Recorded(DistributedDataParallel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            wrappers.append(weakref.ref(self))

    alive_at_shutdown = []
    real_shutdown = _runtime.shutdown

    def shutdown():
        alive_at_shutdown.extend(w() is not None for w in wrappers)
        real_shutdown()

    with socket.socket() as s:  # a free port for this process's one-rank group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setattr(parallel, "DistributedDataParallel", Recorded)
    monkeypatch.setattr(_runtime, "shutdown", shutdown)
    try:
        assert cli.main(TRAIN + ["--save", str(tmp_path / "one.pt")]) == 0
    finally:
        real_shutdown()
    assert len(wrappers) == 1 and alive_at_shutdown == [False]
