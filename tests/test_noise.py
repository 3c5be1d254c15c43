"""The noise contract: Philox words bit-exact on every backend, normals equal to float
rounding, good statistics, and independence from chunking, threads and offsets."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_within, noise_tolerance, require_or_skip

import scorefast
from scorefast.reference.noise import philox4x32_10, philox_words_ref, uniform_ref

# Random123's known-answer vectors for Philox4x32-10: (counter, key) -> words.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

# (seed, step, particle_offset) choices that exercise every bit of the 64-bit inputs.
COUNTERS = [
    (0, 0, 0),
    (1234, 17, 5),
    (2**64 - 1, 2**32 - 1, 0),
    (2**63 + 12345, 3, 2**32 - 3),  # particle ids cross 2^32: hi word changes mid-batch
    (0x9E3779B97F4A7C15, 2**31, 2**40 + 7),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_reference_philox_known_answers(counter, key, expected):
    words = philox4x32_10(*(torch.tensor([c]) for c in counter), key[0] | (key[1] << 32))
    assert tuple(int(w) for w in words) == expected


def test_reference_words_follow_the_counter_layout():
    # Entry [p, q] is Philox of (lo32(p'), hi32(p'), step, q) with key (lo32, hi32) of the seed.
    seed, step, offset = 2**63 + 99, 12, 2**32 - 1
    words = philox_words_ref(3, 2, seed, step, offset)
    for p in range(3):
        pid = offset + p
        for q in range(2):
            c = [torch.tensor([v]) for v in (pid & 0xFFFFFFFF, pid >> 32, step, q)]
            assert [int(w) for w in philox4x32_10(*c, seed)] == words[p, q].tolist()


def test_uniform_map_edges():
    words = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32 - 2])
    u = uniform_ref(words)
    assert u.dtype == torch.float32
    assert float(u.max()) < 1.0 and float(u.min()) >= 0.0
    # 0x80000000 folds to 0x7FFFFFFF and 0xFFFFFFFF to 0: the map is symmetric.
    assert u[3] == u[2] and u[4] == u[0] and u[5] == u[1]


@pytest.mark.parametrize("seed,step,offset", COUNTERS)
def test_words_bit_exact(kernel_backend, seed, step, offset):
    P, Q = (5, 3) if kernel_backend.interpreted else (37, 9)
    expected = philox_words_ref(P, Q, seed, step, offset)
    got = scorefast.philox_words(
        P, Q, seed=seed, step=step, particle_offset=offset, device=kernel_backend.device, backend=kernel_backend.name
    )
    assert got.dtype == torch.int64
    assert torch.equal(got.cpu(), expected)


# counters of the flat view split across rows, at every start inside a counter (p' D mod 4), and
# partial tails
@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 7, 8, 9, 31, 33, 64, 100, 255])
@pytest.mark.parametrize("seed,step,offset", COUNTERS[:4])
def test_normals_match_reference(kernel_backend, D, seed, step, offset):
    P = 3 if kernel_backend.interpreted else 29
    expected = scorefast.normal((P, D), seed=seed, step=step, particle_offset=offset, backend="reference")
    got = scorefast.normal(
        (P, D), seed=seed, step=step, particle_offset=offset, device=kernel_backend.device, backend=kernel_backend.name
    )
    assert got.shape == (P, D) and got.dtype == torch.float32
    assert_within(got.cpu(), expected, noise_tolerance(P, D, seed, step, offset), f"normals D={D}")


@pytest.mark.parametrize("D", [1, 2, 3, 5, 6, 12, 28, 100])
def test_normals_long_runs_of_small_particles(kernel_backend, D):
    # Runs of thousands of elements take the batched paths (numba: vectorised batches of
    # (particle, group) pairs from 1024 elements on; cpp: lanes of (particle, group) pairs for
    # D = 28 and 100, their counters formed in vectors), here across the 2^32 carry of the ids.
    P = 3 if kernel_backend.interpreted else 1500
    seed, step, offset = 2**63 + 5, 9, 2**32 - 700
    expected = scorefast.normal((P, D), seed=seed, step=step, particle_offset=offset, backend="reference")
    got = scorefast.normal(
        (P, D), seed=seed, step=step, particle_offset=offset, device=kernel_backend.device, backend=kernel_backend.name
    )
    assert_within(got.cpu(), expected, noise_tolerance(P, D, seed, step, offset), f"normals D={D}")


def test_normals_large_run_matches_reference(kernel_backend):
    # Long rows exercise the vector paths' full-width blocks and remainders (and, for Triton,
    # a grid of several programs: ~1 s under the interpreter).
    P, D, seed = 6, 4099, 77
    expected = scorefast.normal((P, D), seed=seed, step=5, backend="reference")
    got = scorefast.normal((P, D), seed=seed, step=5, device=kernel_backend.device, backend=kernel_backend.name)
    assert_within(got.cpu(), expected, noise_tolerance(P, D, seed, 5), "normals")


@pytest.mark.parametrize("D, offset", [(1, 0), (1, 7), (2, 0), (2, 5), (3, 0), (3, 5), (5, 2), (8, 3), (17, 1)])
def test_particles_draw_the_noise_of_the_flat_four_element_view(kernel_backend, D, offset):
    # Element d of particle p' is element p' D + d of the [P D / 4, 4] view's stream (every word
    # of a Philox call used at any D), and an offset with p' D not a multiple of 4 starts inside
    # a counter.
    P = 10 if kernel_backend.interpreted else 1001
    kw = dict(seed=2**40 + 3, step=6, device=kernel_backend.device, backend=kernel_backend.name)
    got = scorefast.normal((P, D), particle_offset=offset, **kw).cpu()
    first, start = offset * D // 4, offset * D % 4
    view = scorefast.normal(((start + P * D + 3) // 4, 4), particle_offset=first, **kw).cpu()
    assert torch.equal(got.reshape(-1), view.reshape(-1)[start : start + P * D])


def test_normals_independent_of_chunking(kernel_backend):
    # Particles computed in two calls with particle_offset equal one call.
    P, D = (6, 5) if kernel_backend.interpreted else (101, 13)
    kw = dict(seed=31, step=4, device=kernel_backend.device, backend=kernel_backend.name)
    whole = scorefast.normal((P, D), particle_offset=1000, **kw)
    k = P // 3
    first = scorefast.normal((k, D), particle_offset=1000, **kw)
    rest = scorefast.normal((P - k, D), particle_offset=1000 + k, **kw)
    assert torch.equal(whole, torch.cat([first, rest]))


@pytest.mark.parametrize("D", [8, 6])
def test_fill_ops_on_unaligned_out(kernel_backend, D):
    # Outputs that start one element into their storage cannot take 16-byte stores.
    name, dev = kernel_backend.name, kernel_backend.device
    ns = scorefast.backend_registry.op_namespace(scorefast.backend_registry.resolve(name, dev))
    P, Q = 5, 3
    buf = torch.zeros(P * D + 1, device=dev)
    out = buf[1:].view(P, D)
    ns.normal_fill_(out, 9, 2, 3)
    expected = scorefast.normal((P, D), seed=9, step=2, particle_offset=3, device=dev, backend=name)
    assert torch.equal(out, expected) and buf[0] == 0
    wbuf = torch.zeros(P * Q * 4 + 1, dtype=torch.int64, device=dev)
    words = wbuf[1:].view(P, Q, 4)
    ns.philox_fill_(words, 9, 2, 3)
    assert torch.equal(words.cpu(), philox_words_ref(P, Q, 9, 2, 3)) and wbuf[0] == 0


@pytest.mark.parametrize("D", [1, 5, 8, 19])
def test_normals_rounded_to_every_storage_dtype(kernel_backend, D):
    # The kernels store float32 normals in out's dtype: exactly the float32 normals rounded
    # to nearest even (D = 5 and 19 take the one-particle-per-lane path on the CPU).
    P = 3 if kernel_backend.interpreted else 41
    kw = dict(seed=12, step=5, particle_offset=2**32 - 7, device=kernel_backend.device, backend=kernel_backend.name)
    z32 = scorefast.normal((P, D), **kw)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        got = scorefast.normal((P, D), dtype=dtype, **kw)
        assert got.dtype == dtype and got.shape == (P, D)
        assert torch.equal(got, z32.to(dtype)), dtype


def test_large_normals_overwrite_a_reused_output():
    # On the CPU, outputs of 8 MB and more come from a cache of released outputs: every element
    # of a reused one is written.
    if not scorefast.backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
    kw = dict(seed=4, step=2, backend="cpp")
    for shape, dtype in (((2**20, 3), torch.float32), ((2**21, 5), torch.bfloat16)):
        first = scorefast.normal(shape, dtype=dtype, **kw)
        kept = first.clone()
        first.fill_(float("nan"))
        del first
        again = scorefast.normal(shape, dtype=dtype, **kw)
        assert torch.equal(again, kept)


def test_fill_op_on_unaligned_16bit_out(kernel_backend):
    name, dev = kernel_backend.name, kernel_backend.device
    ns = scorefast.backend_registry.op_namespace(scorefast.backend_registry.resolve(name, dev))
    P, D = 5, 6
    buf = torch.zeros(P * D + 1, dtype=torch.bfloat16, device=dev)
    ns.normal_fill_(buf[1:].view(P, D), 9, 2, 3)
    expected = scorefast.normal((P, D), seed=9, step=2, particle_offset=3, device=dev, backend=name)
    assert torch.equal(buf[1:].view(P, D), expected.to(torch.bfloat16)) and buf[0] == 0
    with pytest.raises(RuntimeError, match="out must be float32, float64, float16 or bfloat16, got"):
        ns.normal_fill_(torch.zeros(P, D, dtype=torch.int32, device=dev), 9, 2, 3)


def test_normals_independent_of_shape_beyond_dim0(kernel_backend):
    # Only (P, D) matters: [P, 2, 3, 4] gives the noise of [P, 24].
    kw = dict(seed=8, step=1, device=kernel_backend.device, backend=kernel_backend.name)
    a = scorefast.normal((3, 2, 3, 4), **kw)
    b = scorefast.normal((3, 24), **kw)
    assert torch.equal(a.reshape(3, 24), b)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_normals_independent_of_thread_count(backend):
    # The CPU kernels split work across threads; the numbers must not depend on it.
    if scorefast.backend_registry.status(backend).available is False:
        require_or_skip(backend, f"{backend} backend unavailable")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scorefast.normal((300, 777), seed=5, step=2, backend=backend)
        assert torch.get_num_threads() == 1  # a backend's thread pool leaves torch's setting alone
        torch.set_num_threads(max(2, previous))
        many = scorefast.normal((300, 777), seed=5, step=2, backend=backend)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, many)


def test_normal_dtype_and_shape_options():
    z = scorefast.normal((4, 3), seed=1, dtype=torch.float64)
    assert z.dtype == torch.float64 and z.shape == (4, 3)
    assert torch.equal(z, scorefast.normal((4, 3), seed=1).double())
    x = torch.zeros(5, 2, dtype=torch.bfloat16)
    assert scorefast.normal_like(x, seed=2).dtype == torch.bfloat16
    assert scorefast.normal((0, 3), seed=1).shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=2**64), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=1, step=2**32), ValueError, "step"),
        (dict(seed=1, step=-1), ValueError, "step"),
        (dict(seed=1, particle_offset=-1), ValueError, "particle_offset"),
        (dict(seed=1, particle_offset=2**63 - 2), ValueError, "particle_offset"),
        (dict(seed=1, particle_offset=2**62), ValueError, r"\* elements per particle must be <= 2\^63"),
        (dict(seed=1, backend="gpu"), ValueError, "backend"),
    ],
)
def test_noise_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        scorefast.normal((4, 3), **kwargs)


def test_counter_check_bounds_the_particle_size():
    # ceil(D / 4) is MALA's uniform's 32-bit counter word: D <= 2^34, checked with the counter
    # by every op's contract (no tensor that large is allocated here).
    from scorefast.ops._common import check_counter

    check_counter(0, 0, 1, 2**34)
    with pytest.raises(RuntimeError, match=r"elements per particle must be <= 2\^34"):
        check_counter(0, 0, 1, 2**34 + 1)


def test_fill_op_refuses_flat_indices_past_2_63(kernel_backend):
    # The flat index (particle_offset + p) D + d of the last element must stay below 2^63, on
    # every backend's op called directly; the largest offset that keeps it there is accepted.
    name, dev = kernel_backend.name, kernel_backend.device
    ns = scorefast.backend_registry.op_namespace(scorefast.backend_registry.resolve(name, dev))
    P, D = 2, 3
    out = torch.zeros(P, D, device=dev)
    with pytest.raises(RuntimeError, match=r"\(particle_offset \+ number of particles\) \* elements per particle"):
        ns.normal_fill_(out, 9, 2, 2**63 // D - P + 1)
    last = 2**63 // D - P
    ns.normal_fill_(out, 9, 2, last)
    expected = scorefast.normal((P, D), seed=9, step=2, particle_offset=last, backend="reference")
    assert_within(out.cpu(), expected, noise_tolerance(P, D, 9, 2, last), "normals at the last offset")


# ---------------------------------------------------------------------------------------
# Statistics of the contract's normals (fixed seeds: deterministic, thresholds at ~5 sigma).


def _normals(P, D, seed=2024, step=0, offset=0):
    backend = "cpp" if scorefast.backend_registry.status("cpp").available else "reference"
    return scorefast.normal((P, D), seed=seed, step=step, particle_offset=offset, backend=backend).double()


def test_moments():
    z = _normals(4096, 256).flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)  # skewness
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)  # kurtosis


def test_kolmogorov_smirnov():
    from scipy import stats  # a dev requirement: a missing scipy must fail, not skip

    z = _normals(1000, 200, seed=99).flatten().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-4


def test_tails_match_the_normal():
    from scipy import stats  # a dev requirement: a missing scipy must fail, not skip

    z = _normals(2000, 500, seed=5).flatten()
    n = z.numel()
    for k in (2.0, 3.0, 4.0):
        p = 2 * stats.norm.sf(k)
        frac = float((z.abs() > k).double().mean())
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n) + 1 / n, f"P(|z| > {k})"


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize(
    "pair",
    ["neighbour particles", "neighbour steps", "neighbour dims", "dims 4 apart", "cos/sin pair", "seeds"],
)
def test_independence(pair):
    P, D = 20000, 16
    z = _normals(P, D, seed=7, step=3)
    if pair == "neighbour particles":
        a, b = z[:-1], z[1:]
    elif pair == "neighbour steps":
        a, b = z, _normals(P, D, seed=7, step=4)
    elif pair == "neighbour dims":
        a, b = z[:, 1:-1:2], z[:, 2::2]  # (1,2), (3,4), ...: across pairs and quads
    elif pair == "dims 4 apart":
        a, b = z[:, :-4], z[:, 4:]  # same word slot, next Philox group
    elif pair == "cos/sin pair":
        a, b = z[:, 0::2], z[:, 1::2]  # r cos, r sin of one pair: uncorrelated
    else:
        a, b = z, _normals(P, D, seed=8, step=3)
    n = a.numel()
    assert abs(_corr(a, b)) < 5 / math.sqrt(n), pair
    # Squares too: catches dependence that keeps the correlation at zero.
    assert abs(_corr(a**2, b**2)) < 5 / math.sqrt(n) * 2, f"{pair} (squares)"


@pytest.mark.parametrize("D", [1, 2, 3, 4, 5, 6, 7, 12, 17, 101])
@pytest.mark.parametrize("counter", [0, 2**32 - 13, 2**40 - 1])
def test_small_particles_across_the_32bit_carry(kernel_backend, D, counter):
    # The fills vectorise across counters of the flat view: the particles start near counter
    # `counter`, so the counters of one vector straddle 2^32 (the carry into the high word).
    offset = counter * 4 // D
    P = 5 if kernel_backend.interpreted else 67
    seed, step = 2**63 + 9, 3
    expected = scorefast.normal((P, D), seed=seed, step=step, particle_offset=offset, backend="reference")
    got = scorefast.normal(
        (P, D), seed=seed, step=step, particle_offset=offset, device=kernel_backend.device, backend=kernel_backend.name
    )
    assert_within(got.cpu(), expected, noise_tolerance(P, D, seed, step, offset), f"normals D={D}")
    # the same ids reached through chunked calls
    parts = [
        scorefast.normal(
            (n, D),
            seed=seed,
            step=step,
            particle_offset=offset + s,
            device=kernel_backend.device,
            backend=kernel_backend.name,
        )
        for s, n in ((0, P // 2 + 3), (P // 2 + 3, P - P // 2 - 3))
    ]
    assert torch.equal(torch.cat(parts).cpu(), got.cpu())
