"""Long chains: split into calls of CHUNK_STEPS steps (bit for bit one call), with memory bounded
by the particles and the mixture, never by the number of steps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import require_or_skip

import scorefast
import scorefast.chain
from scorefast import backend_registry
from scorefast.targets import ring

METHODS = {
    "ula": dict(method="ula", steps=17, step_size=0.05),
    "schedule": dict(method="ula", step_size=torch.linspace(0.08, 0.02, 17, dtype=torch.float64)),
    "annealed": dict(method="annealed", sigmas=[3.0, 1.0, 0.5, 0.3], steps_per_level=4, epsilon=0.004),
    "mala": dict(method="mala", steps=17, step_size=0.1),
}


def _run(x, mix, kw, every, backend):
    return scorefast.gmm_chain(x, mix, seed=7, step_offset=3, trajectory_every=every, backend=backend, **kw)


@pytest.mark.parametrize("every", [0, 2, 3, 7, 16, 40])
@pytest.mark.parametrize("case", list(METHODS))
def test_a_chain_cut_into_calls_equals_one_call(kernel_backend, case, every, monkeypatch):
    kb = kernel_backend
    if kb.interpreted and every not in (0, 3, 7):
        pytest.skip("the interpreter runs every lane in Python: three trajectory settings")
    mix = ring()
    x = mix.sample(5 if kb.interpreted else 40, seed=1).float().to(kb.device)
    whole = _run(x, mix, METHODS[case], every, kb.name)
    # Cuts inside levels, between frames, and (every = 7 > 5) at frames only.
    monkeypatch.setattr(scorefast.chain, "CHUNK_STEPS", 5)
    cut = _run(x, mix, METHODS[case], every, kb.name)
    assert torch.equal(cut.x, whole.x)
    for got, want in ((cut.accepted, whole.accepted), (cut.trajectory, whole.trajectory)):
        assert (got is None and want is None) or torch.equal(got, want)
    if every:
        assert whole.trajectory.shape == (17 // every, *x.shape)


@pytest.mark.parametrize("case", list(METHODS))
def test_the_reference_cut_into_calls_equals_one_call(case, monkeypatch):
    mix = ring()
    x = mix.sample(6, seed=1)
    whole = _run(x, mix, METHODS[case], 3, "reference")
    monkeypatch.setattr(scorefast.chain, "CHUNK_STEPS", 4)
    cut = _run(x, mix, METHODS[case], 3, "reference")
    assert torch.equal(cut.x, whole.x) and torch.equal(cut.trajectory, whole.trajectory)
    assert (cut.accepted is None) == (case != "mala")
    if case == "mala":
        assert torch.equal(cut.accepted, whole.accepted)


def test_trajectory_every_beyond_the_steps_is_empty(kernel_backend):
    for backend in (kernel_backend.name, "reference"):
        x = torch.zeros(3, 2, device=kernel_backend.device)
        res = scorefast.gmm_chain(x, ring(), steps=4, step_size=0.1, trajectory_every=5, backend=backend)
        assert res.trajectory.shape == (0, 3, 2)


_PEAK = textwrap.dedent(
    """
    import resource, sys, torch, scorefast
    from scorefast.targets import random_mixture
    backend, steps = sys.argv[1], int(sys.argv[2])
    mix = random_mixture(64, 2, seed=0)  # 64 components, D = 2
    x = torch.zeros(1, 2)
    run = lambda levels: scorefast.gmm_chain(
        x, mix, method="annealed", sigmas=[1 - 0.05 * i for i in range(10)], steps_per_level=levels,
        epsilon=2e-3, seed=1, backend=backend)
    run(10)  # loads and compiles everything
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = run(steps // 10).x
    assert bool(torch.isfinite(out).all())
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)  # MiB
    """
)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_a_million_steps_take_no_memory_per_step(backend):
    if not backend_registry.status(backend).available:
        require_or_skip(backend, f"{backend} is unavailable")
    # A per-step schedule or per-step tables would take about 8 B * 10^6 * 3 (lists, tensors)
    # plus 4 B * 10^6 * 64 * 2 (precisions, log-constants): over 500 MiB.
    steps = 1_000_000
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, backend, str(steps)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    grown_mib = float(proc.stdout.split()[-1])
    assert grown_mib < 40, f"peak memory grew by {grown_mib:.0f} MiB over a {steps}-step chain"
