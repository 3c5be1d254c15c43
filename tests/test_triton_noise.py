"""The Triton backend against Triton's own generator: the contract's Philox words are
``tl.randint4x`` and its normals ``tl.randn4x`` / ``tl.randn`` where the counters coincide
(step 0, group 0, offset = global particle id). Also: results independent of the launch
configuration, and the ops' registration (schema, checks on direct calls)."""

from __future__ import annotations

import pytest
import torch
from conftest import _required, assert_within, backend_device, noise_tolerance

import scorefast
from scorefast import backend_registry
from scorefast.reference.noise import normal_ref, philox_words_ref


def _triton_device() -> torch.device:
    status = backend_registry.status("triton")
    device = backend_device("triton")
    reason = (
        status.reason
        if not status.available
        else (None if device.type in status.devices else f"triton does not run on {device}")
    )
    if reason is not None:
        if "triton" in _required():
            pytest.fail(f"required backend triton is unavailable: {reason}")
        pytest.skip(f"triton: {reason}")
    return device


@pytest.fixture
def device():
    return _triton_device()


try:  # after conftest set TRITON_INTERPRET (no GPU): kernels defined here run on the CPU too
    import triton
    import triton.language as tl
except ImportError:  # the fixtures skip (or fail when triton is required)
    triton = None

if triton is not None:

    @triton.jit
    def _randint4x_kernel(out_ptr, seed, first_id, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        w0, w1, w2, w3 = tl.randint4x(seed, first_id + i.to(tl.int64))  # 64-bit offsets
        tl.store(out_ptr + i * 4, w0.to(tl.int64), mask=ok)
        tl.store(out_ptr + i * 4 + 1, w1.to(tl.int64), mask=ok)
        tl.store(out_ptr + i * 4 + 2, w2.to(tl.int64), mask=ok)
        tl.store(out_ptr + i * 4 + 3, w3.to(tl.int64), mask=ok)

    @triton.jit
    def _randn4x_kernel(out_ptr, seed, first_id, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        ok = i < n
        offset = first_id + i.to(tl.int64)
        z0, z1, z2, z3 = tl.randn4x(seed, offset)
        tl.store(out_ptr + i * 5, z0, mask=ok)
        tl.store(out_ptr + i * 5 + 1, z1, mask=ok)
        tl.store(out_ptr + i * 5 + 2, z2, mask=ok)
        tl.store(out_ptr + i * 5 + 3, z3, mask=ok)
        tl.store(out_ptr + i * 5 + 4, tl.randn(seed, offset), mask=ok)


# (seed, id of particle 0): seeds whose int64 form is negative, ids that cross 2^32.
TRITON_COUNTERS = [
    (0, 0),
    (1234, 5),
    (2**64 - 1, 2**32 - 3),
    (2**63 + 12345, 2**40 + 7),
    (0x9E3779B97F4A7C15, 2**62),
]


@pytest.mark.parametrize("seed,first_id", TRITON_COUNTERS)
def test_words_equal_triton_randint4x(device, seed, first_id):
    # tl.randint4x(seed, offset) is Philox of (lo32(offset), hi32(offset), 0, 0): the contract's
    # group 0 at step 0 of particle id = offset.
    P = 6
    triton_words = torch.empty(P, 4, dtype=torch.int64, device=device)
    _randint4x_kernel[(1,)](triton_words, seed, first_id, P, BLOCK=8)
    ours = scorefast.philox_words(P, 1, seed=seed, step=0, particle_offset=first_id, device=device, backend="triton")[
        :, 0, :
    ]
    assert torch.equal(ours, triton_words)
    assert torch.equal(ours.cpu(), philox_words_ref(P, 1, seed, 0, first_id)[:, 0, :])


# The same for normals of particles of four elements, whose flat indices 4 p' + d must stay below
# 2^63: the last id is the largest that six such particles may start at.
TRITON_NORMAL_COUNTERS = [*TRITON_COUNTERS[:-1], (0x9E3779B97F4A7C15, 2**61 - 6)]


@pytest.mark.parametrize("seed,first_id", TRITON_NORMAL_COUNTERS)
def test_normals_equal_triton_randn4x(device, seed, first_id):
    # tl.randn4x(seed, offset) is Box-Muller of Philox of (lo32(offset), hi32(offset), 0, 0): for
    # D = 4 the contract's elements d = 0..3 (flat indices 4 offset + d) of particle offset at
    # step 0; tl.randn gives d = 0.
    P = 6
    out = torch.empty(P, 5, dtype=torch.float32, device=device)
    _randn4x_kernel[(1,)](out, seed, first_id, P, BLOCK=8)
    ours = scorefast.normal((P, 4), seed=seed, step=0, particle_offset=first_id, device=device, backend="triton")
    assert torch.equal(ours, out[:, :4])
    assert torch.equal(ours[:, 0], out[:, 4])
    assert_within(
        ours.cpu(),
        normal_ref(P, 4, seed, 0, first_id),
        noise_tolerance(P, 4, seed, 0, first_id),
        "normals vs reference",
    )


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiny tiles: every call launches several programs, with partial last tiles, and the
    norm kernel loops over several column blocks."""
    from scorefast.kernels.triton import langevin, noise

    monkeypatch.setattr(noise, "GROUPS_PER_PROGRAM", 2)
    monkeypatch.setattr(langevin, "NORM_TILE", 4)
    monkeypatch.setattr(langevin, "MAX_BLOCK_D", 2)


def _many_programs_results(device):
    kw = dict(seed=2**63 + 5, step=7, particle_offset=2**32 - 2, device=device, backend="triton")
    words = scorefast.philox_words(5, 3, **kw)
    normals = scorefast.normal((5, 11), **kw)
    g = torch.Generator().manual_seed(3)
    x, s, sc = (torch.randn(5, 11, generator=g).to(device) for _ in range(3))
    step_size = torch.rand(5, generator=g).to(device) * 0.2
    step = scorefast.langevin_step(
        x,
        s,
        score_cond=sc,
        guidance=1.5,
        step_size=step_size,
        noise_scale=0.3,
        max_score_norm=1.0,
        clamp=(-1.5, 1.5),
        seed=11,
        step=2,
        particle_offset=2**32 - 2,
        backend="triton",
    )
    return words, normals, step


def test_results_independent_of_launch_configuration(device, request):
    default = _many_programs_results(device)
    request.getfixturevalue("small_tiles")
    tiled = _many_programs_results(device)
    for a, b in zip(default, tiled):
        assert torch.equal(a, b)
    words, normals, _ = tiled
    assert torch.equal(words.cpu(), philox_words_ref(5, 3, 2**63 + 5, 7, 2**32 - 2))
    assert_within(
        normals.cpu(),
        normal_ref(5, 11, 2**63 + 5, 7, 2**32 - 2),
        noise_tolerance(5, 11, 2**63 + 5, 7, 2**32 - 2),
        "normals, several programs",
    )


def test_op_level_checks_guard_direct_calls(device):
    import scorefast.kernels.triton  # noqa: F401

    op = torch.ops.scorefast_triton.langevin_step
    x = torch.zeros(4, 3, device=device)
    base = [x, x, None, 1.0, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None]
    for i, value, match in [
        (1, torch.zeros(4, 2, device=device), "score must have the shape of x"),
        (5, torch.ones(4, dtype=torch.float64, device=device), "step_size_per_particle must be Float"),
        (10, 2**32, "step must be in"),
        (11, -1, "particle_offset must be >= 0"),
        (14, 0.0, "max_score_norm must be finite and > 0"),
    ]:
        bad = list(base)
        bad[i] = value
        with pytest.raises(RuntimeError, match=match):
            op(*bad)
    with pytest.raises(RuntimeError, match=r"out must have shape \[P, Q, 4\]"):
        torch.ops.scorefast_triton.philox_fill_(torch.empty(2, 3, dtype=torch.int64, device=device), 0, 0, 0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    # Tensors on cuda:1 while cuda:0 is current: the kernels must run on cuda:1, as the C++ ops do.
    g = torch.Generator().manual_seed(0)
    x, s = torch.randn(33, 17, generator=g), torch.randn(33, 17, generator=g)
    kw = dict(step_size=0.1, seed=5, step=2, max_score_norm=1.0, backend="triton")
    on0 = scorefast.langevin_step(x.to("cuda:0"), s.to("cuda:0"), **kw)
    with torch.cuda.device(0):
        on1 = scorefast.langevin_step(x.to("cuda:1"), s.to("cuda:1"), **kw)
        z1 = scorefast.normal((33, 17), seed=5, device="cuda:1", backend="triton")
        torch.cuda.synchronize(1)
    assert torch.equal(on1.cpu(), on0.cpu())
    assert torch.equal(z1.cpu(), scorefast.normal((33, 17), seed=5, device="cuda:0", backend="triton").cpu())
