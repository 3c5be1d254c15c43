"""Score matching objectives and drop-in training: implicit score matching (exact and sliced),
the score network and DSM module, fused-vs-reference training curves, and `scorefast train`."""

from __future__ import annotations

import json

import pytest
import torch

from scorefast import cli
from scorefast.losses import implicit_score_matching
from scorefast.nn import DSMLoss, NoiseConditionalScoreNet, geometric_sigmas


def _gaussian(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    L = torch.tensor([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 0.6]], dtype=torch.float64)
    x = mu + torch.randn(n, 3, generator=g, dtype=torch.float64) @ L.T
    return x, mu, torch.linalg.inv(L @ L.T)


def test_exact_ism_is_minimised_by_the_true_score():
    x, mu, prec = _gaussian()
    # For s(x) = -A (x - b) the objective is -tr(A) + 1/2 E||A (x - b)||^2; with the sample
    # mean and covariance (mu_hat, C_hat) its minimiser is A = C_hat^-1, b = mu_hat.
    mu_hat, prec_hat = x.mean(0), torch.linalg.inv(torch.cov(x.T, correction=0))
    J = lambda A, b: implicit_score_matching(lambda y: -(y - b) @ A.T, x)  # noqa: E731
    best = J(prec_hat, mu_hat)
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        dA = 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        db = 0.05 * torch.randn(3, generator=g, dtype=torch.float64)
        assert J(prec_hat + (dA + dA.T) / 2, mu_hat + db) > best
    # the population optimum is the true score: the sample optimum is near it
    assert torch.allclose(prec_hat, prec, atol=0.15)
    # and the minimum value is -tr(A)/2 for the exact minimiser
    assert torch.isclose(best, -0.5 * torch.trace(prec_hat), rtol=1e-9)


@pytest.mark.parametrize("projections", ["rademacher", "gaussian"])
def test_sliced_ism_is_unbiased(projections):
    x, mu, prec = _gaussian(n=256)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    exact = implicit_score_matching(net, x).item()
    g = torch.Generator().manual_seed(3)
    draws = torch.tensor(
        [
            implicit_score_matching(net, x, method="sliced", projections=projections, generator=g).item()
            for _ in range(400)
        ]
    )
    se = draws.std() / len(draws) ** 0.5
    assert abs(draws.mean().item() - exact) < 5 * se.item() + 1e-12


def test_ism_errors():
    with pytest.raises(ValueError, match="method"):
        implicit_score_matching(lambda y: y, torch.zeros(2, 2), method="nope")
    with pytest.raises(ValueError, match="shape"):
        implicit_score_matching(lambda y: y[:, :1], torch.zeros(2, 2))


def test_score_net_and_dsm_module():
    net = NoiseConditionalScoreNet(2, hidden=32)
    x = torch.randn(10, 2)
    assert net(x, 0.5).shape == (10, 2) and net(x, torch.rand(10) + 0.1).shape == (10, 2)
    sig = geometric_sigmas(5.0, 0.01, 8)
    assert sig.shape == (8,) and abs(float(sig[0]) - 5.0) < 1e-12 and abs(float(sig[-1]) - 0.01) < 1e-12
    loss_fn = DSMLoss(sig, seed=4)
    a, b = loss_fn.draw_sigmas(16, 3, "cpu", torch.float32), loss_fn.draw_sigmas(16, 3, "cpu", torch.float32)
    assert torch.equal(a, b) and not torch.equal(a, loss_fn.draw_sigmas(16, 4, "cpu", torch.float32))
    loss = loss_fn(net, x, step=0)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("parametrization", ["score", "eps"])
def test_fused_and_reference_losses_train_the_same(parametrization):
    # Same initialisation, data, noise and levels: the fused op and the reference give the
    # same loss curve (float32 rounding only; Adam makes small differences grow slowly).
    curves = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(0)
        net = NoiseConditionalScoreNet(2, hidden=32)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = DSMLoss(geometric_sigmas(4.0, 0.05, 5), seed=7, parametrization=parametrization, backend=backend)
        data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1)) + torch.tensor([2.0, 0.0])
        curve = []
        for step in range(40):
            loss = loss_fn(net, data, step=step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        curves[backend] = torch.tensor(curve)
    torch.testing.assert_close(curves["cpp"], curves["reference"], rtol=1e-4, atol=1e-6)


def test_train_cli_with_checkpoint(tmp_path):
    ck, js = tmp_path / "m.pt", tmp_path / "t.json"
    base = [
        "train",
        "--levels",
        "4",
        "--samples",
        "200",
        "--steps-per-level",
        "5",
        "--batch",
        "64",
        "--hidden",
        "32",
        "--no-plot",
        "--no-progress",
    ]
    assert cli.main(base + ["--steps", "40", "--save", str(ck), "--json", str(js)]) == 0
    first = json.loads(js.read_text())
    assert first["training_steps"] == 40 and len(first["sigmas"]) == 4
    state = torch.load(ck, weights_only=True)  # tensors and containers only
    assert state["step"] == 40 and len(state["losses"]) == 40
    assert cli.main(base + ["--load", str(ck), "--steps", "10", "--json", str(js), "--save", str(ck)]) == 0
    assert json.loads(js.read_text())["training_steps"] == 50
    assert cli.main(base + ["--load", str(ck), "--steps", "0", "--json", str(js)]) == 0
    with pytest.raises(SystemExit):
        cli.main(base + ["--steps", "0"])


class _RunsCode:
    """Unpickling this object runs code (here: writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_train_load_refuses_hostile_and_broken_checkpoints(tmp_path, capsys):
    base = [
        "train",
        "--levels",
        "4",
        "--samples",
        "50",
        "--steps-per-level",
        "2",
        "--batch",
        "16",
        "--hidden",
        "8",
        "--no-plot",
        "--no-progress",
        "--steps",
        "0",
        "--load",
    ]
    good = tmp_path / "good.pt"
    assert cli.main(base[:-3] + ["--steps", "2", "--save", str(good)]) == 0
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    state = torch.load(good, weights_only=True)
    torch.save({**state, "payload": _RunsCode(marker)}, hostile)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    wrong_target = tmp_path / "wrong_target.pt"
    torch.save({**state, "config": {**state["config"], "target": "nowhere"}}, wrong_target)
    bad_sigmas = tmp_path / "bad_sigmas.pt"
    torch.save({**state, "sigmas": torch.tensor([1.0, -1.0])}, bad_sigmas)
    cases = {
        hostile: "not a readable",
        truncated: "not a readable",
        empty: "is empty",
        tmp_path / "missing.pt": "does not exist",
        foreign: "no 'model' entry",
        wrong_target: "invalid config",
        bad_sigmas: "invalid noise levels",
    }
    for path, message in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            cli.main(base + [str(path)])
        assert exit_info.value.code == 2, path
        assert message in capsys.readouterr().err, path
    assert not marker.exists(), "loading a checkpoint ran code from it"
    with pytest.raises(SystemExit):
        cli.main(base + [str(good), "--target", "ring8"])  # trained on two_mode
    assert "trained on --target two_mode" in capsys.readouterr().err


def test_ebm_example_learns_the_mixture_with_replay_buffer_sgld():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
    import ebm_2d

    model, buffer, data, losses = ebm_2d.train(150, batch=128, seed=0)
    neg = buffer.sample(model, 1000)
    # Data (scaled): std(x2) = 0.2, mean|x1| = 0.4; the uniform start: 0.58 and 0.5. After a
    # short run the negatives have left the uniform start (x2 concentrated, mean|x1| nearer the
    # data's than the start's: the standard error of 1000 negatives is about 0.006) without
    # collapsing onto one point between the modes (x1 still spread).
    assert neg[:, 1].std() < 0.35
    assert 0.25 < neg[:, 0].abs().mean() < 0.45
    assert buffer.buffer.device == data.device and neg.abs().max() <= 1.0


def test_replay_buffer_reinitialises_and_is_reproducible():
    from scorefast.samplers import SGLDReplayBuffer

    def energy(x):
        return (x**2).sum(1)

    a = SGLDReplayBuffer((2,), size=100, steps=3, step_size=0.1, noise_scale=0.01, seed=3)
    b = SGLDReplayBuffer((2,), size=100, steps=3, step_size=0.1, noise_scale=0.01, seed=3)
    assert torch.equal(a.sample(energy, 10), b.sample(energy, 10))
    with pytest.raises(ValueError, match="reinit_prob"):
        SGLDReplayBuffer((2,), reinit_prob=1.5)
