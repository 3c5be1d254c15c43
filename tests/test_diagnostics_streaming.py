"""ChainDiagnostics: the bounded-memory record of running chains, its R-hat and bulk/tail ESS against
ArviZ (nothing thinned) and against the batch functions on the kept draws (thinned), its memory bound,
state round trip, the records of several processes, and the samplers feeding it."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch

from scorefast import samplers, targets
from scorefast.chain import gmm_chain
from scorefast.diagnostics import ChainDiagnostics, ess_bulk, ess_tail, split_rhat, summarize

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23 announces its 1.0 refactor on import
    import arviz as az

RTOL = 1e-6


def _ar1_states(seed: int, steps: int, particles: int, phis) -> torch.Tensor:
    """States (steps, particles, D) of AR(1) chains, one coefficient per coordinate, float64."""
    rng = np.random.default_rng(seed)
    phis = np.asarray(phis, dtype=float)
    x = np.empty((steps, particles, len(phis)))
    x[0] = rng.standard_normal((particles, len(phis)))
    for t in range(1, steps):
        x[t] = phis * x[t - 1] + np.sqrt(1 - phis**2) * rng.standard_normal((particles, len(phis)))
    return torch.from_numpy(x)


def _feed(acc: ChainDiagnostics, states: torch.Tensor, first_step: int = 1) -> None:
    for i, x in enumerate(states):
        acc.update(x, first_step + i)


def _close(got: float, want: float, what: str) -> None:
    assert abs(got - want) <= RTOL * abs(want), (what, got, want)


@pytest.mark.parametrize("steps, phis", [(200, [0.9, 0.0, -0.4]), (301, [0.5, 0.97, 0.2])])
def test_unthinned_record_matches_arviz(steps, phis):
    states = _ar1_states(1, steps, 10, phis)  # 10 particles, the first 6 tracked
    acc = ChainDiagnostics(max_chains=6, max_coords=8, max_draws=512)
    _feed(acc, states)
    assert acc.thin == 1 and acc.count == steps
    record = acc.record()
    assert torch.equal(record, states[:, :6].permute(1, 0, 2))
    s = acc.summary()
    assert (s.chains, s.draws) == (6, steps)
    for j in range(len(phis)):
        draws = record[:, :, j].numpy()
        _close(float(s.rhat[j]), float(az.rhat(draws, method="rank")), f"rhat {j}")
        _close(float(s.ess_bulk[j]), float(az.ess(draws, method="bulk")), f"bulk {j}")
        _close(float(s.ess_tail[j]), float(az.ess(draws, method="tail")), f"tail {j}")


def test_thinned_record_is_the_chain_at_a_regular_stride_and_memory_stays_bounded():
    steps, M = 1000, 16
    states = _ar1_states(2, steps, 4, [0.95, 0.3])
    acc = ChainDiagnostics(max_chains=4, max_draws=M, every=3)
    for i, x in enumerate(states):
        acc.update(x, i + 1)
        assert acc.count <= M and (acc._buf is None or acc._buf.shape == (4, M, 2))
    # 333 draws at stride 3 do not fit in 16: the stride doubled to 3 * 2^5 = 96 (10 draws kept).
    assert acc.thin == 96 and acc.count == steps // 96
    kept = states[acc.thin - 1 :: acc.thin][: acc.count].permute(1, 0, 2)
    assert torch.equal(acc.record(), kept)
    s = acc.summary()
    assert torch.equal(s.rhat, split_rhat(kept)) and torch.equal(s.ess_bulk, ess_bulk(kept))
    assert torch.equal(s.ess_tail, ess_tail(kept))


def test_burn_in_and_the_coordinate_cap():
    states = _ar1_states(3, 40, 3, [0.5] * 5)
    acc = ChainDiagnostics(max_chains=8, max_coords=2, max_draws=64, every=2, burn_in=10)
    _feed(acc, states)
    # the states after steps 12, 14, ..., 40 of the 3 particles (fewer than max_chains), coordinates 0 and 1
    assert torch.equal(acc.record(), states[11::2, :, :2].permute(1, 0, 2))


@pytest.mark.parametrize("every, burn_in, max_draws", [(1, 0, 4), (1, 2, 4), (3, 7, 6), (2, 33, 8), (5, 0, 10)])
def test_the_record_is_every_multiple_of_the_stride_past_the_burn_in(every, burn_in, max_draws):
    states = _ar1_states(7, 157, 2, [0.6])
    acc = ChainDiagnostics(max_draws=max_draws, every=every, burn_in=burn_in)
    for i, x in enumerate(states):
        acc.update(x, i + 1)
        kept = [s for s in range(burn_in + 1, i + 2) if s % acc.thin == 0]
        assert acc.count == len(kept) <= max_draws
        assert torch.equal(acc.record(), states[[s - 1 for s in kept]].permute(1, 0, 2)), i + 1
    assert acc.thin > every  # it thinned


def test_event_shaped_particles_are_flattened():
    x = torch.arange(24.0).reshape(2, 3, 4)
    acc = ChainDiagnostics(max_coords=5, max_draws=4)
    acc.update(x)
    assert torch.equal(acc.record()[:, 0], x.reshape(2, -1)[:, :5].double())


def test_state_dict_round_trip_continues_the_same_record():
    states = _ar1_states(4, 300, 5, [0.8, 0.1])
    whole = ChainDiagnostics(max_chains=5, max_draws=32)
    _feed(whole, states)
    first = ChainDiagnostics(max_chains=5, max_draws=32)
    _feed(first, states[:137])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    second = ChainDiagnostics(max_chains=5, max_draws=32)
    second.load_state_dict(torch.load(buf, weights_only=True))
    _feed(second, states[137:], first_step=138)
    assert second.thin == whole.thin and torch.equal(second.record(), whole.record())


def test_load_state_dict_refuses_other_settings():
    acc = ChainDiagnostics(max_draws=8)
    acc.update(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="max_draws=8"):
        ChainDiagnostics(max_draws=16).load_state_dict(acc.state_dict())
    with pytest.raises(ValueError, match="not a ChainDiagnostics"):
        ChainDiagnostics().load_state_dict({"weight": torch.zeros(2)})


def test_records_of_several_processes_concatenate_to_the_whole():
    states = _ar1_states(5, 120, 8, [0.7, -0.2])
    ranks = [ChainDiagnostics(max_chains=4, max_draws=32) for _ in range(2)]
    for r, acc in enumerate(ranks):
        _feed(acc, states[:, 4 * r : 4 * r + 4])
    whole = ChainDiagnostics(max_chains=8, max_draws=32)
    _feed(whole, states)
    combined = summarize(torch.cat([acc.record() for acc in ranks]))
    expected = whole.summary()
    for name in ("rhat", "ess_bulk", "ess_tail"):
        assert torch.equal(getattr(combined, name), getattr(expected, name)), name


def test_too_few_draws_give_nan_and_bad_arguments_are_named():
    acc = ChainDiagnostics()
    s = acc.summary()
    assert s.draws == 0 and s.rhat.numel() == 0
    for _ in range(3):
        acc.update(torch.randn(4, 2))
    s = acc.summary()
    assert s.draws == 3 and bool(s.rhat.isnan().all()) and bool(s.ess_bulk.isnan().all())
    assert s.as_dict()["rhat_max"] is None
    one_chain = ChainDiagnostics()
    for _ in range(8):
        one_chain.update(torch.randn(1, 2))
    s = one_chain.summary()
    assert bool(s.rhat.isnan().all()) and bool(s.ess_bulk.isfinite().all())
    with pytest.raises(ValueError, match="max_draws must be even"):
        ChainDiagnostics(max_draws=7)
    with pytest.raises(TypeError, match="every"):
        ChainDiagnostics(every=1.5)
    with pytest.raises(ValueError, match="max_chains"):
        ChainDiagnostics(max_chains=0)
    with pytest.raises(ValueError, match="step must increase"):
        acc.update(torch.zeros(4, 2), step=2)


def test_nan_states_give_nan_diagnostics():
    states = _ar1_states(6, 20, 3, [0.5, 0.5])
    states[7, 1, 0] = math.nan
    acc = ChainDiagnostics()
    _feed(acc, states)
    s = acc.summary()
    assert bool(s.rhat[0].isnan()) and bool(s.rhat[1].isfinite())


def test_the_fused_chain_feeds_the_record_its_trajectory_holds(monkeypatch):
    import scorefast.chain

    mix = targets.PRESETS["two_mode"]()
    x = mix.sample(12, seed=0).float()
    kw = dict(method="ula", steps=50, step_size=0.05, seed=4, backend="cpp")
    traj = gmm_chain(x, mix, trajectory_every=1, **kw).trajectory
    # frames handed over in calls of at most 3 frames; the buffer thins twice
    monkeypatch.setattr(scorefast.chain, "DIAGNOSTIC_FRAME_BYTES", 3 * 12 * 2 * 4)
    acc = ChainDiagnostics(max_chains=10, max_draws=8, every=2)
    res = gmm_chain(x, mix, chain_diagnostics=acc, **kw)
    assert torch.equal(res.x, traj[-1])
    assert acc.thin == 8 and acc.count == 50 // 8
    assert torch.equal(acc.record(), traj[7::8, :10].permute(1, 0, 2).double())
    late = ChainDiagnostics(max_chains=10, max_draws=8, every=3, burn_in=11)  # no frames before step 12
    assert torch.equal(gmm_chain(x, mix, chain_diagnostics=late, **kw).x, traj[-1])
    kept = [s for s in range(12, 51) if s % late.thin == 0]
    assert late.thin == 6 and torch.equal(late.record(), traj[[s - 1 for s in kept], :10].permute(1, 0, 2).double())


def test_stepwise_samplers_feed_the_states_after_their_steps():
    mix = targets.PRESETS["two_mode"]()
    seen = []

    def score(x):  # called with the state after each step (and the start)
        seen.append(x.clone())
        return mix.score(x)

    x = mix.sample(6, seed=1).float()
    acc = ChainDiagnostics(max_draws=64)
    samplers.langevin(score, x, steps=20, step_size=0.05, seed=2, chain_diagnostics=acc)
    want = torch.stack(seen[1:] + [x]).permute(1, 0, 2).double()
    assert torch.equal(acc.record(), want)


def test_mala_reports_rhat_and_ess():
    mix = targets.PRESETS["two_mode"]()
    x = mix.sample(8, seed=1).float()
    acc = ChainDiagnostics(max_draws=64)
    _, diag = samplers.mala(mix, None, x, steps=30, step_size=0.3, seed=1, chain_diagnostics=acc, backend="cpp")
    s = acc.summary()
    assert s.draws == 30 and s.chains == 8
    for name in ("rhat", "ess_bulk", "ess_tail"):
        assert torch.equal(diag[name], getattr(s, name)) and diag[name].shape == (2,)
