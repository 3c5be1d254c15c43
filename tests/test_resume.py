"""Resumable chains: a run killed after some steps and restarted with resume=True gives the uninterrupted
run's particles bit for bit (fused gmm_chain and stepwise samplers, eagerly and under the CUDA-graph
protocol, and the command line); broken, foreign or mismatched checkpoints are refused with a clear
error, and a failed write keeps the previous checkpoint."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from scorefast import cli, samplers, targets
from scorefast.chain import gmm_chain
from scorefast.checkpoint import ChainCheckpoint, CheckpointError
from scorefast.diagnostics import ChainDiagnostics


class Preempted(Exception):
    """The job is killed."""


def _mix():
    return targets.PRESETS["two_mode"]()


def _start(n=10, seed=0):
    return 2.0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


def _kill_after_checkpoint(monkeypatch, step: int):
    """The run is killed right after writing its checkpoint of ``step``."""
    save = ChainCheckpoint.save

    def save_then_die(self, t, *args, **kwargs):
        save(self, t, *args, **kwargs)
        if t == step:
            raise Preempted

    monkeypatch.setattr(ChainCheckpoint, "save", save_then_die)


def _diagnostics():
    return ChainDiagnostics(max_chains=6, max_draws=8, every=2)  # thins within the test chains


FUSED = {
    "ula": dict(method="ula", steps=23, step_size=0.05),
    "schedule": dict(method="ula", step_size=torch.linspace(0.08, 0.02, 23, dtype=torch.float64)),
    "mala": dict(method="mala", steps=23, step_size=0.3),
    "annealed": dict(method="annealed", sigmas=[2.0, 1.0, 0.5], steps_per_level=8, final_denoise=True),
}


@pytest.mark.parametrize("backend", ["reference", "cpp"])
@pytest.mark.parametrize("case", list(FUSED))
def test_gmm_chain_resumed_equals_the_uninterrupted_chain(case, backend, tmp_path, monkeypatch):
    mix, x, kw = _mix(), _start(), FUSED[case]
    whole_diag = _diagnostics()
    whole = gmm_chain(x, mix, seed=5, backend=backend, chain_diagnostics=whole_diag, **kw)
    path = tmp_path / "chain.pt"
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 10)
        with pytest.raises(Preempted):
            gmm_chain(x, mix, seed=5, backend=backend, chain_diagnostics=_diagnostics(), checkpoint=path,
                      checkpoint_every=5, **kw)  # fmt: skip
    saved = torch.load(path, weights_only=True)
    assert saved["step"] == 10 and saved["sampler"] == kw["method"]
    if case == "annealed":
        assert saved["position"] == {"level": 1}
    diag = _diagnostics()
    # the same command again, plus resume (a seed of None takes the checkpoint's)
    resumed = gmm_chain(x, mix, seed=None, backend=backend, chain_diagnostics=diag, checkpoint=path,
                        checkpoint_every=5, resume=True, **kw)  # fmt: skip
    assert torch.equal(resumed.x, whole.x)
    assert (whole.accepted is None and resumed.accepted is None) or torch.equal(resumed.accepted, whole.accepted)
    assert diag.thin == whole_diag.thin and torch.equal(diag.record(), whole_diag.record())
    final = torch.load(path, weights_only=True)  # the final checkpoint stays
    assert final["step"] == (23 if case != "annealed" else 24)


@pytest.mark.parametrize("method", ["mala", "annealed"])
def test_every_kernel_resumes_to_its_uninterrupted_chain(kernel_backend, method, tmp_path, monkeypatch):
    kb = kernel_backend
    mix, x = _mix(), _start(n=3).to(kb.device)
    kw = dict(FUSED[method], seed=5, backend=kb.name)
    kw.update({"steps": 9} if method == "mala" else {"steps_per_level": 3})  # tiny: interpreted kernels
    whole = gmm_chain(x, mix, **kw)
    path = tmp_path / "kernel.pt"
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 4)
        with pytest.raises(Preempted):
            gmm_chain(x, mix, checkpoint=path, checkpoint_every=4, **kw)
    resumed = gmm_chain(x, mix, checkpoint=path, checkpoint_every=4, resume=True, **kw)
    assert torch.equal(resumed.x, whole.x)
    assert method != "mala" or torch.equal(resumed.accepted, whole.accepted)


def test_checkpoint_cuts_leave_the_trajectory_and_the_chain_unchanged(tmp_path):
    mix, x = _mix(), _start()
    kw = dict(method="mala", steps=17, step_size=0.3, seed=2, trajectory_every=3, backend="cpp")
    plain = gmm_chain(x, mix, **kw)
    cut = gmm_chain(x, mix, checkpoint=tmp_path / "c.pt", checkpoint_every=5, **kw)  # calls end at 5, 10, 15
    assert torch.equal(cut.x, plain.x) and torch.equal(cut.trajectory, plain.trajectory)
    assert torch.equal(cut.accepted, plain.accepted)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 17


def _net_score():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    return lambda y: net(y)


def _stepwise(name, score):
    """A stepwise run of sampler ``name`` with ``score(y, sigma)`` (sigma None: unconditional) from x;
    keywords are passed through."""
    mix = _mix()
    if name in ("ula", "ula_nn"):
        return lambda x, **kw: samplers.langevin(lambda y: score(y, None), x, steps=21, step_size=0.05, **kw)
    if name == "annealed":
        return lambda x, **kw: samplers.annealed_langevin(score, x, [2.0, 1.0, 0.5], steps_per_level=7, **kw)
    if name == "mala":
        return lambda x, **kw: samplers.mala(
            lambda y: score(y, None), lambda y: mix.log_prob(y), x, steps=21, step_size=0.3, **kw
        )
    return lambda x, **kw: samplers.predictor_corrector(score, x, [2.0, 1.0, 0.5], corrector_steps=6, **kw)


class _KilledScore:
    """The mixture's score (``ula_nn``: a small network's), raising Preempted at its ``kill_at``-th
    call (None: never)."""

    def __init__(self, name):
        mix = _mix()
        net = _net_score() if name == "ula_nn" else None
        self.fn = (lambda y, sigma: net(y)) if net else (lambda y, sigma: mix.score(y, sigma))
        self.calls, self.kill_at = 0, None

    def __call__(self, y, sigma):
        self.calls += 1
        if self.calls == self.kill_at:
            raise Preempted
        return self.fn(y, sigma)


def _same_output(got, want):
    if isinstance(want, tuple):
        (got, d_got), (want, d_want) = got, want
        assert d_got.keys() == d_want.keys()
        for k, v in d_want.items():
            same = torch.equal(d_got[k], v) if isinstance(v, torch.Tensor) else d_got[k] == v
            assert same, k
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["ula", "ula_nn", "annealed", "mala", "predictor_corrector"])
def test_stepwise_sampler_killed_between_checkpoints_resumes_to_the_same_chain(name, tmp_path):
    x0 = _start(seed=3)
    score = _KilledScore(name)
    run = _stepwise(name, score)
    whole_diag = _diagnostics()
    whole = run(x0.clone(), seed=11, chain_diagnostics=whole_diag)
    path = tmp_path / f"{name}.pt"
    score.calls, score.kill_at = 0, 14  # killed at step 13 (MALA: the start's score is call 1)
    with pytest.raises(Preempted):
        run(x0.clone(), seed=11, chain_diagnostics=_diagnostics(), checkpoint=path, checkpoint_every=4)
    assert torch.load(path, weights_only=True)["step"] in (8, 12)  # the last checkpoint before the kill
    score.kill_at = None
    diag = _diagnostics()
    resumed = run(x0.clone(), seed=11, chain_diagnostics=diag, checkpoint=path, checkpoint_every=4, resume=True)
    _same_output(resumed, whole)
    assert diag.thin == whole_diag.thin and torch.equal(diag.record(), whole_diag.record())


GRAPHED = {  # Gaussian targets: score functions without host syncs, so the step can be captured
    "mala": lambda x, **kw: samplers.mala(
        lambda y: -y, lambda y: -0.5 * (y * y).sum(1), x, steps=9, step_size=0.2, seed=5, **kw
    ),
    "pc": lambda x, **kw: samplers.predictor_corrector(
        lambda y, s: -y / (1 + s * s), x, [2.0, 1.0, 0.5], corrector_steps=4, seed=6, **kw
    ),
}


@pytest.mark.parametrize("name", list(GRAPHED))
def test_graph_protocol_run_resumes_to_the_eager_chain(name, monkeypatch, tmp_path):
    from test_step_graphs import ReplayingRunner

    monkeypatch.setattr(samplers, "StepRunner", ReplayingRunner)
    monkeypatch.setattr(ReplayingRunner, "replays", 0)
    x0 = _start(seed=4)
    eager = GRAPHED[name](x0.clone(), backend="cpp")
    path = tmp_path / "graphed.pt"
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 6)  # mala: during the replays (after 2 warm-up steps); pc: in level 2
        with pytest.raises(Preempted):
            GRAPHED[name](x0.clone(), backend="cpp", cuda_graph=True, checkpoint=path, checkpoint_every=3)
    resumed = GRAPHED[name](
        x0.clone(), backend="cpp", cuda_graph=True, checkpoint=path, checkpoint_every=3, resume=True
    )
    _same_output(resumed, eager)
    assert ReplayingRunner.replays > 0


def test_a_finished_run_resumes_to_its_result(tmp_path):
    score = _KilledScore("annealed")
    run = _stepwise("annealed", score)
    path = tmp_path / "done.pt"
    done = run(_start(), seed=2, checkpoint=path)  # checkpoint_every=0: only the final state
    assert torch.load(path, weights_only=True)["step"] == 21
    score.calls = 0
    again = run(_start(), seed=2, checkpoint=path, resume=True)
    assert torch.equal(again, done) and score.calls == 1  # only the final denoising ran


def _chain_checkpoint(tmp_path):
    path = tmp_path / "ula.pt"
    gmm_chain(_start(), _mix(), steps=6, step_size=0.1, seed=1, checkpoint=path, checkpoint_every=3, backend="cpp")
    return path


def _resume(path, **kw):
    args = dict(steps=6, step_size=0.1, seed=1, backend="cpp")
    args.update(kw)
    x = args.pop("x", _start())
    return gmm_chain(x, _mix(), checkpoint=path, resume=True, **args)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load on the plain pickle
def test_damaged_and_foreign_files_are_refused(tmp_path):
    path = _chain_checkpoint(tmp_path)
    good = path.read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "random bytes": os.urandom(4096),
        "empty": b"",
    }
    for data in cases.values():
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="not a readable scorefast chain checkpoint|is empty"):
            _resume(path)
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)  # a torch file of something else
    with pytest.raises(CheckpointError, match="not a scorefast chain checkpoint"):
        _resume(path)
    torch.save({"format": "scorefast train"}, path)
    with pytest.raises(CheckpointError, match="its format is 'scorefast train'"):
        _resume(path)
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(_RunsCode(str(marker))))  # loading must not execute it
    with pytest.raises(CheckpointError, match="not a readable"):
        _resume(path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        _resume(tmp_path / "missing.pt")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_of_other_chains_are_refused_naming_the_difference(tmp_path):
    path = _chain_checkpoint(tmp_path)
    mismatches = [
        (dict(step_size=0.2), "step_size=0.1, but this run has step_size=0.2"),
        (dict(steps=7), "steps=6, but this run has steps=7"),
        (dict(seed=2), "seed=1, but this run has seed=2"),
        (dict(x=_start(n=11)), r"shape=\[10, 2\], but this run has shape=\[11, 2\]"),
        (dict(x=_start().double()), "dtype='float32', but this run has dtype='float64'"),
        (dict(method="mala"), "holds a 'ula' chain, not a 'mala' one"),
    ]
    for kw, message in mismatches:
        with pytest.raises(CheckpointError, match=message):
            _resume(path, **kw)
    with pytest.raises(CheckpointError, match="without chain diagnostics"):
        _resume(path, chain_diagnostics=ChainDiagnostics())
    state = torch.load(path, weights_only=True)
    torch.save(dict(state, version=99), path)
    with pytest.raises(CheckpointError, match="format version 99"):
        _resume(path)
    torch.save(dict(state, step=60), path)
    with pytest.raises(CheckpointError, match="outside the chain"):
        _resume(path)
    torch.save(dict(state, tensors={"x": torch.zeros(3)}), path)
    with pytest.raises(CheckpointError, match="state 'x' must be a torch.float32 tensor of shape"):
        _resume(path)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = _chain_checkpoint(tmp_path)
    before = path.read_bytes()
    real_save = torch.save

    def half_written(obj, f, *args, **kwargs):  # the disk fills up mid-write
        f.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        gmm_chain(_start(), _mix(), steps=6, step_size=0.1, seed=1, checkpoint=path, checkpoint_every=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ula.pt"]  # no temporary file left
    assert torch.equal(_resume(path).x, gmm_chain(_start(), _mix(), steps=6, step_size=0.1, seed=1).x)


def test_bad_checkpoint_arguments_are_named(tmp_path):
    x, mix = _start(), _mix()
    for kw, error, message in [
        (dict(checkpoint_every=5), ValueError, "checkpoint_every needs checkpoint"),
        (dict(resume=True), ValueError, "resume=True needs checkpoint"),
        (dict(checkpoint=tmp_path / "c.pt", checkpoint_every=-1), ValueError, "checkpoint_every must be an int >= 0"),
        (dict(checkpoint=tmp_path / "c.pt", resume="yes"), TypeError, "resume must be a bool"),
        (dict(checkpoint=3), TypeError, "checkpoint must be a file path"),
        (dict(checkpoint=tmp_path / "c.pt", resume=True, trajectory_every=2), ValueError, "trajectory_every"),
    ]:
        with pytest.raises(error, match=message):
            gmm_chain(x, mix, steps=4, step_size=0.1, **kw)
    with pytest.raises(ValueError, match="checkpoint_every needs checkpoint"):
        samplers.langevin(lambda y: -y, x, steps=3, step_size=0.1, checkpoint_every=2)
    with pytest.raises(TypeError, match="chain_diagnostics must be a ChainDiagnostics"):
        samplers.langevin(lambda y: -y, x, steps=3, step_size=0.1, chain_diagnostics=[])
    with pytest.raises(TypeError, match="chain_diagnostics must be a ChainDiagnostics"):
        gmm_chain(x, mix, steps=4, step_size=0.1, chain_diagnostics="yes")
    with pytest.raises(ValueError, match="multiple of trajectory_every"):
        gmm_chain(x, mix, steps=4, step_size=0.1, trajectory_every=2, chain_diagnostics=ChainDiagnostics(every=3))


def _cli(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    argv = ["sample", "--particles", "40", "--steps", "30", "--no-plot", "--no-progress", "--json", str(out), *extra]
    assert cli.main(argv) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("sampler", ["ula", "mala"])
def test_cli_resume_equals_the_uninterrupted_run(sampler, tmp_path, monkeypatch, capsys):
    flags = ["--sampler", sampler, "--checkpoint-every", "7"]
    whole = _cli(tmp_path, "whole", *flags, "--checkpoint", str(tmp_path / "whole.pt"))
    ckpt = str(tmp_path / "run.pt")
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 14)
        with pytest.raises(Preempted):
            cli.main(["sample", "--particles", "40", "--steps", "30", "--no-plot", "--no-progress", *flags,
                      "--checkpoint", ckpt])  # fmt: skip
    resumed = _cli(tmp_path, "resumed", *flags, "--checkpoint", ckpt, "--resume")
    a, b = torch.load(tmp_path / "whole.pt", weights_only=True), torch.load(ckpt, weights_only=True)
    assert a["step"] == b["step"] == 30 and torch.equal(a["tensors"]["x"], b["tensors"]["x"])
    for key in ("mean", "covariance", "mode_fraction", "chain_diagnostics"):
        assert resumed[key] == whole[key], key
    d = whole["chain_diagnostics"]
    assert d["chains"] == 40 and d["draws"] == 15 and d["rhat_max"] > 0 and d["ess_bulk_min"] > 0
    assert "R-hat" in capsys.readouterr().out


def test_cli_ula_runs_the_langevin_step_loop(tmp_path):
    import scorefast

    _cli(tmp_path, "ula", "--checkpoint", str(tmp_path / "ula.pt"), "--seed", "3")
    target = targets.PRESETS["two_mode"]()
    x = 4.0 * torch.randn(40, 2, generator=torch.Generator().manual_seed(3))
    for t in range(30):
        scorefast.langevin_step_(x, target.score(x), step_size=0.02, seed=3, step=t)
    assert torch.equal(torch.load(tmp_path / "ula.pt", weights_only=True)["tensors"]["x"], x)


def test_cli_refuses_a_checkpoint_of_other_settings(tmp_path, capsys):
    ckpt = str(tmp_path / "c.pt")
    _cli(tmp_path, "first", "--checkpoint", ckpt)
    with pytest.raises(SystemExit) as exc:
        _cli(tmp_path, "second", "--checkpoint", ckpt, "--resume", "--step-size", "0.03")
    assert exc.value.code == 2
    assert "argument --checkpoint" in capsys.readouterr().err


def test_cli_refuses_a_damaged_checkpoint_and_leaves_it(tmp_path, capsys):
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(SystemExit) as exc:
        _cli(tmp_path, "run", "--checkpoint", str(ckpt), "--resume")
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --checkpoint" in last and "not a readable scorefast chain checkpoint" in last
    assert ckpt.read_bytes() == b"\x00garbage" * 64


def test_sgld_replay_buffer_resumes_bit_for_bit(tmp_path):
    def energy(y):
        return 0.5 * (y * y).sum(1)

    kw = dict(size=64, steps=3, step_size=0.1, noise_scale=0.05, seed=4)
    whole = samplers.SGLDReplayBuffer((2,), **kw)
    for _ in range(4):
        expected = whole.sample(energy, 16)
    first = samplers.SGLDReplayBuffer((2,), **kw)
    for _ in range(2):
        first.sample(energy, 16)
    path = tmp_path / "buffer.pt"
    torch.save(first.state_dict(), path)
    resumed = samplers.SGLDReplayBuffer((2,), **kw)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(2):
        got = resumed.sample(energy, 16)
    assert torch.equal(got, expected) and torch.equal(resumed.buffer, whole.buffer)
    with pytest.raises(ValueError, match="seed"):
        samplers.SGLDReplayBuffer((2,), **{**kw, "seed": 5}).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="shape"):
        samplers.SGLDReplayBuffer((3,), **kw).load_state_dict(first.state_dict())
