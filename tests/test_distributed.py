"""scorefast.distributed on gloo (CPU): sharded samplers equal the one-process run bit for bit.

Every case runs through the sharded API on 1 process (a group of one, in this process) and on 2
and 3 processes (one spawn of 3 child processes: the default group, and a group of ranks 0 and 1,
so the start-up is paid once), and each rank saves its results; the tests compare them with the
plain one-process calls: torch.equal on particles, exact counts, float64 statistics to the
rounding of their summation order. 13 particles, so shards are uneven (7 + 6, 5 + 4 + 4).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from scorefast import cli, diagnostics, distributed, samplers, targets
from scorefast.chain import gmm_chain

N, SEED = 13, 11
SIGMAS = [1.5, 0.6, 0.2]
ROOT = Path(__file__).resolve().parents[1]


class TanhEnergy(torch.nn.Module):
    """A neural-score stand-in with fixed weights: E(x, sigma) = |x|^2 / (2 (1 + sigma^2)) +
    sum_h w_h tanh(W_h . x + b_h + u_h log sigma), score -grad E in closed form. The layers are
    products summed per row (not a matrix multiply, whose library may pick other kernels for
    other batch sizes), so each particle's score is independent of the batch it is in."""

    def __init__(self, dim: int = 2, hidden: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.register_buffer("W", torch.randn(hidden, dim, generator=g))
        self.register_buffer("b", torch.randn(hidden, generator=g))
        self.register_buffer("u", 0.3 * torch.randn(hidden, generator=g))
        self.register_buffer("w", 0.5 * torch.randn(hidden, generator=g))

    def _hidden(self, x, sigma):
        pre = (x[:, None, :] * self.W).sum(-1) + self.b
        return torch.tanh(pre if sigma is None else pre + self.u * math.log(sigma))

    def forward(self, x, sigma=None):
        c = 1.0 / (1.0 + (0.0 if sigma is None else sigma**2))
        t = self._hidden(x, sigma)
        return -c * x - ((self.w * (1 - t * t))[:, :, None] * self.W).sum(1)

    def log_prob(self, x):
        return -0.5 * (x * x).sum(-1) - (self.w * self._hidden(x, None)).sum(-1)


def _start() -> torch.Tensor:
    return 2.0 * torch.randn(N, 2, generator=torch.Generator().manual_seed(3))


# Each case: (sampler, positional args, keyword args); run_sharded adds x and particle_offset.
def _cases():
    mix, net = targets.two_mode_2d(), TanhEnergy()
    return {
        "mixture ula": (samplers.langevin, (mix.score,), dict(steps=6, step_size=0.05)),
        "mixture annealed": (
            samplers.annealed_langevin,
            (mix.score,),
            dict(sigmas=SIGMAS, steps_per_level=2, epsilon=1e-2),
        ),
        "mixture mala": (samplers.mala, (mix.score, mix.log_prob), dict(steps=6, step_size=0.3)),
        "mixture gmm_chain": (gmm_chain, (), dict(mixture=mix, method="ula", steps=8, step_size=0.1)),
        "net ula": (samplers.langevin, (net,), dict(steps=6, step_size=0.05)),
        "net annealed": (samplers.annealed_langevin, (net,), dict(sigmas=SIGMAS, steps_per_level=2, epsilon=1e-2)),
        "net mala": (samplers.mala, (net, net.log_prob), dict(steps=6, step_size=0.3)),
        "net pc": (samplers.predictor_corrector, (net,), dict(sigmas=SIGMAS, corrector_steps=2)),
        "net pc batch rule": (
            samplers.predictor_corrector,
            (net,),
            dict(sigmas=SIGMAS, corrector_steps=2, batch_mean_rule=True),
        ),
    }


def _sharded_results(out_dir: str, group=None) -> None:
    """Every case through scorefast.distributed on this rank of ``group``; saved to out_dir/rank<r>.pt."""
    x0, mix, results = _start(), targets.two_mode_2d(), {}
    for name, (sampler, args, kwargs) in _cases().items():
        kw = dict(kwargs, trajectory_every=1) if sampler is gmm_chain else kwargs
        run = distributed.run_sharded(sampler, *args, x=x0, seed=SEED, group=group, **kw)
        res = {"start": run.start, "local": run.x, "rank0": distributed.gather(run.x, group=group)}
        res["everyone"] = distributed.gather(run.x, dst=None, group=group)
        if isinstance(run.output, tuple) and isinstance(run.output[1], dict):
            res["diagnostics"] = distributed.reduce_diagnostics(run.output[1], run.x.shape[0], group=group)
            if "acceptance_rate" in run.output[1]:
                res["mean_acceptance"] = distributed.mean_acceptance_rate(run.output[1]["acceptance_rate"], group)
        if sampler is gmm_chain:  # chains along dim 1 of the trajectory (draws, chains, D)
            draws = run.output.trajectory
            res["convergence"] = distributed.rhat_and_ess(draws, chain_dim=1, group=group)
            res["convergence0"] = distributed.rhat_and_ess(draws, chain_dim=1, dst=0, group=group)
        res["fractions"] = distributed.mode_fractions(run.x, mix, group)
        res["moments"] = distributed.mean_and_covariance(run.x, group)
        path = os.path.join(out_dir, f"{name.replace(' ', '_')}.pt")
        res["shard_file"] = distributed.write_shard(run.x, path, start=run.start, total=run.total, group=group)
        results[name] = res
    torch.save(results, os.path.join(out_dir, f"rank{distributed.rank(group)}.pt"))


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    """Rank ``rank`` of ``world``: the cases on the whole group, then (world 3) on ranks 0 and 1."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        pair = dist.new_group([0, 1]) if world == 3 else None  # every rank takes part in creating it
        _sharded_results(os.path.join(out_dir, str(world)))
        if pair is not None and rank < 2:
            _sharded_results(os.path.join(out_dir, "2"), group=pair)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    """The folder of every rank's results: 1/ from a group of one in this process, 3/ and 2/ from
    one spawn of 3 processes."""
    out = tmp_path_factory.mktemp("sharded")
    for world in (1, 2, 3):
        (out / str(world)).mkdir()
    threads = torch.get_num_threads()
    try:
        _worker(0, 1, str(out / "store1"), str(out))
    finally:
        torch.set_num_threads(threads)  # the group of one ran in this process
    mp.spawn(_worker, args=(3, str(out / "store3"), str(out)), nprocs=3, join=True)
    return out


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda w: f"{w}-process")
def sharded(request, spawned):
    """Every rank's results (a list in rank order) of the run on ``world`` processes."""
    return [torch.load(spawned / str(request.param) / f"rank{r}.pt", weights_only=False) for r in range(request.param)]


@pytest.fixture(scope="module")
def single():
    """The plain one-process calls of every case (no process group, no scorefast.distributed)."""
    out = {}
    for name, (sampler, args, kwargs) in _cases().items():
        kw = dict(kwargs, trajectory_every=1) if sampler is gmm_chain else kwargs
        res = sampler(*args, x=_start(), seed=SEED, **kw)
        out[name] = (res[0] if isinstance(res, tuple) else res, res)
    return out


def test_shard_range_tiles_the_particles():
    for n in (0, 1, 5, 13):
        for world in (1, 2, 3, 7):
            rows = [distributed.shard_range(n, r, world) for r in range(world)]
            assert [s.start for s in rows] == [0] + [s.stop for s in rows[:-1]] and rows[-1].stop == n
            assert max(s.stop - s.start for s in rows) - min(s.stop - s.start for s in rows) <= 1
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_range(5, 3, 3)
    with pytest.raises(ValueError, match="world_size"):
        distributed.shard_range(5, 0, 0)


@pytest.mark.parametrize("case", list(_cases()))
def test_particles_equal_the_single_process_run(sharded, single, case):
    x_single = single[case][0]
    world = len(sharded)
    for r, res in enumerate(sharded):
        rows = distributed.shard_range(N, r, world)
        assert res[case]["start"] == rows.start
        assert torch.equal(res[case]["local"], x_single[rows]), (case, r)
        assert torch.equal(res[case]["everyone"], x_single), (case, r)
        assert (res[case]["rank0"] is None) == (r != 0)
    assert torch.equal(sharded[0][case]["rank0"], x_single)
    shard_files = [res[case]["shard_file"] for res in sharded]
    assert torch.equal(distributed.read_shards(reversed(shard_files)), x_single)


@pytest.mark.parametrize("case", list(_cases()))
def test_reduced_statistics_equal_the_single_process_ones(sharded, single, case):
    x = single[case][0].double()
    k = targets.two_mode_2d().responsibilities(x).argmax(1)
    fractions = torch.bincount(k, minlength=2).double() / N
    for res in sharded:
        assert torch.equal(res[case]["fractions"], fractions)
        mean, cov = res[case]["moments"]
        # float64 means of 101 terms of size <= 100: the summation order moves them by < 1e-12
        torch.testing.assert_close(mean, x.mean(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(cov, torch.cov(x.T), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["mixture mala", "net mala", "net pc", "net pc batch rule"])
def test_reduced_sampler_diagnostics(sharded, single, case):
    expected = single[case][1][1]
    for res in sharded:
        got = res[case]["diagnostics"]
        assert got["nan_particles"] == expected["nan_particles"] and got["diverged"] == expected["diverged"]
        if "acceptance_rate" in expected:
            assert torch.equal(got["acceptance_rate"], expected["acceptance_rate"])
            # float64 means of 13 rates in [0, 1]
            assert abs(res[case]["mean_acceptance"] - float(expected["acceptance_rate"].mean())) < 1e-15
        if expected["score_norm"] is None:
            assert got["score_norm"] is None
        else:
            # each rank's per-step mean is a float32 sum of <= 13 norms (relative error <= 13 * 2^-24
            # in either run), combined in float64
            torch.testing.assert_close(
                torch.tensor(got["score_norm"]), torch.tensor(expected["score_norm"]), rtol=2e-6, atol=0
            )


def test_rhat_and_ess_over_all_ranks_chains(sharded, single):
    draws = single["mixture gmm_chain"][1].trajectory.transpose(0, 1)  # (chains, draws, D)
    expected = {
        "split_rhat": diagnostics.split_rhat(draws),
        "ess_bulk": diagnostics.ess_bulk(draws),
        "ess_tail": diagnostics.ess_tail(draws),
    }
    for r, res in enumerate(sharded):
        for key in ("convergence", "convergence0"):
            got = res["mixture gmm_chain"][key]
            if key == "convergence0" and r != 0:
                assert got is None
                continue
            for name, value in expected.items():
                assert torch.equal(got[name], value), (r, key, name)


def test_predictor_corrector_refuses_a_batch_mean_that_is_not_callable():
    with pytest.raises(TypeError, match="batch_mean"):
        samplers.predictor_corrector(TanhEnergy(), _start(), SIGMAS, batch_mean_rule=True, batch_mean=1.0)


def test_run_sharded_names_a_misplaced_argument():
    with pytest.raises(TypeError, match="by keyword"):
        distributed.run_sharded(gmm_chain, targets.two_mode_2d(), x=_start(), steps=2, step_size=0.1, seed=0)
    with pytest.raises(TypeError, match="particle_offset"):
        distributed.run_sharded(samplers.langevin, TanhEnergy(), x=_start(), steps=2, step_size=0.1, particle_offset=3)


def test_run_sharded_checkpoints_one_file_per_rank(tmp_path, monkeypatch):
    kw = dict(x=_start(), steps=4, step_size=0.1, seed=1, checkpoint_every=2)
    distributed.run_sharded(samplers.langevin, TanhEnergy(), checkpoint=str(tmp_path / "c{rank}.pt"), **kw)
    assert (tmp_path / "c0.pt").exists()
    from scorefast.distributed import _runtime

    monkeypatch.setattr(_runtime, "world_size", lambda group=None: 2)  # as if launched with two ranks
    with pytest.raises(ValueError, match="rank"):
        distributed.run_sharded(samplers.langevin, TanhEnergy(), checkpoint=str(tmp_path / "c.pt"), **kw)


def test_read_shards_refuses_a_missing_shard(tmp_path):
    x = _start()
    first = distributed.write_shard(x[:5], tmp_path / "p{rank}.pt", start=0, total=N)
    with pytest.raises(ValueError, match="hold 5 of the 13"):
        distributed.read_shards([first])


def test_cli_under_torchrun_prints_once_and_reports_the_single_process_statistics(tmp_path, capsys):
    # 101 particles: more than the 64 chains the diagnostics track, split 51 / 50 over the ranks
    argv = ["sample", "--sampler", "mala", "--particles", "101", "--steps", "20", "--no-plot", "--no-progress"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert cli.main([*argv, "--json", str(one)]) == 0
    single = capsys.readouterr().out
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        + ["-m", "scorefast", *argv, "--json", str(two)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr
    # rank 0's report only, line for line the one-process report (but for the timing line)
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("time ")]  # noqa: E731
    assert strip(launched.stdout) == strip(single)
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert set(a) == set(b)
    rounded = {"mean", "covariance", "seconds", "particle_steps_per_second", "acceptance_rate", "chain_diagnostics"}
    for key in set(a) - rounded:
        assert a[key] == b[key], key
    # R-hat and ESS of the gathered chains: float64 arithmetic on the same draws, in another
    # order of summation (FFT, reductions) across processes and thread counts
    for key, value in a.get("chain_diagnostics", {}).items():
        if isinstance(value, (float, list)) and value:
            torch.testing.assert_close(
                torch.tensor(b["chain_diagnostics"][key]), torch.tensor(value), rtol=1e-12, atol=0
            )
        else:
            assert b["chain_diagnostics"][key] == value, key
    # float64 means of 101 terms of size <= 100: the summation order moves them by < 1e-12
    torch.testing.assert_close(torch.tensor(b["mean"]), torch.tensor(a["mean"]), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.tensor(b["covariance"]), torch.tensor(a["covariance"]), rtol=0, atol=1e-12)
    assert abs(a["acceptance_rate"] - b["acceptance_rate"]) < 1e-15


def test_cli_without_torchrun_runs_one_process(tmp_path, capsys):
    assert not distributed.launched()
    assert cli.main(["sample", "--particles", "5", "--steps", "3", "--no-plot", "--no-progress"]) == 0
    assert not dist.is_initialized()
    assert "mode            fraction" in capsys.readouterr().out
