"""langevin_step: every backend against the float64 reference, within the error budget,
for every feature, dtype and awkward shape; plus in-place, strides, NaN, errors, opcheck,
torch.compile and autograd."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_within, langevin_tolerance, on_each_cpu_isa, require_or_skip

import scorefast
from scorefast import backend_registry
from scorefast.reference import langevin_step_ref, normal_like_ref

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

# Shapes chosen to break kernels: one element, D = 1, 2, 3 (partial Philox groups),
# primes, rows that straddle vector widths and tiles, more than two dims.
SHAPES = [(1,), (1, 1), (7,), (5, 2), (3, 3), (4, 5, 3), (2, 33), (3, 1, 17)]
LARGE_SHAPES = [(3, 4099), (257, 31), (1, 2**15 + 3)]  # vector paths, tiles and remainders


def _inputs(shape, dtype, device, seed=0, guided=False, noise=False):
    g = torch.Generator().manual_seed(seed)
    mk = lambda: torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device)  # noqa: E731
    x, s = mk(), mk()
    sc = mk() if guided else None
    z = mk() if noise else None
    return x, s, sc, z


# Each case switches features on; (name, kwargs for the public API).
CASES = {
    "plain": dict(step_size=0.05),
    "epsilon": dict(epsilon=0.02),
    "noise_scale": dict(step_size=0.1, noise_scale=0.3),
    "no_noise": dict(step_size=0.1, noise_scale=0.0),
    "guided": dict(step_size=0.05, guidance=2.5),
    "clamp": dict(step_size=0.5, clamp=(-0.3, 0.4)),
    "clamp_open": dict(step_size=0.5, clamp=(None, 0.2)),
    "clip": dict(step_size=0.1, max_score_norm=0.5),
    "guided_clip_clamp": dict(step_size=0.3, guidance=-0.7, max_score_norm=1.0, clamp=(-1.0, 1.0)),
    "per_particle": dict(step_size="pp", noise_scale="pp"),
    "per_particle_a": dict(step_size="pp"),
    "explicit_noise": dict(step_size=0.2, noise="x"),
    "offset": dict(step_size=0.05, particle_offset=2**32 - 2, step=2**32 - 1, seed=2**64 - 5),
}


def _resolve_case(case, x):
    """Public kwargs and matching reference kwargs for one case."""
    kw = dict(CASES[case])
    P = x.shape[0]
    gen = torch.Generator().manual_seed(11)
    if kw.get("step_size") == "pp":
        kw["step_size"] = (torch.rand(P, generator=gen, dtype=torch.float64) * 0.2).to(x.device)
    if kw.get("noise_scale") == "pp":
        kw["noise_scale"] = (torch.rand(P, generator=gen, dtype=torch.float64) * 0.5).to(x.device)
    kw.setdefault("seed", 123) if "noise" not in kw else None
    kw.setdefault("step", 9)
    return kw


def _reference(x, s, sc, z, kw):
    """langevin_step_ref in float64 for the public kwargs."""
    a = kw.get("step_size")
    if a is None:
        a = kw["epsilon"] / 2
    b = kw.get("noise_scale")
    if b is None:
        b = torch.sqrt(2 * a) if isinstance(a, torch.Tensor) else math.sqrt(2 * a)
    clamp = kw.get("clamp") or (None, None)
    return (
        langevin_step_ref(
            x.double(),
            s.double(),
            step_size=a,
            noise_scale=b,
            score_cond=None if sc is None else sc.double(),
            guidance=kw.get("guidance", 1.0),
            noise=None if z is None else z.double(),
            seed=kw.get("seed", 0),
            step=kw.get("step", 0),
            particle_offset=kw.get("particle_offset", 0),
            clamp_min=clamp[0],
            clamp_max=clamp[1],
            max_score_norm=kw.get("max_score_norm"),
            compute_dtype=torch.float64,
        ),
        a,
        b,
    )


def _check_case(kb, case, shape, dtype, seed=0):
    x, s, sc, z = _inputs(
        shape, dtype, kb.device, seed, guided="guidance" in CASES[case], noise=CASES[case].get("noise") == "x"
    )
    kw = _resolve_case(case, x)
    if z is not None:
        kw["noise"] = z
    if sc is not None:
        kw["score_cond"] = sc
    out = scorefast.langevin_step(x, s, backend=kb.name, **kw)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    ref, a, b = _reference(
        x.cpu(),
        s.cpu(),
        None if sc is None else sc.cpu(),
        None if z is None else z.cpu(),
        {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()},
    )
    tol = langevin_tolerance(
        x.cpu(),
        s.cpu(),
        None if sc is None else sc.cpu(),
        kw.get("guidance", 1.0),
        a.cpu() if isinstance(a, torch.Tensor) else a,
        b.cpu() if isinstance(b, torch.Tensor) else b,
        ref,
        dtype,
        noise_from_contract=z is None,
    )
    assert_within(out.cpu(), ref, tol, f"{kb} {case} {shape} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(kernel_backend, case, dtype):
    shapes = SHAPES[:4] if kernel_backend.interpreted else SHAPES
    for i, shape in enumerate(shapes):
        _check_case(kernel_backend, case, shape, dtype, seed=i)


@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=str)
@pytest.mark.parametrize("case", ["plain", "per_particle", "guided_clip_clamp", "explicit_noise"])
def test_matches_reference_large(kernel_backend, case, shape):
    # Also under the interpreter: these are the shapes that launch several programs (~2 s each).
    _check_case(kernel_backend, case, shape, torch.float32)


def test_inplace_equals_out_of_place(kernel_backend):
    x, s, _, _ = _inputs((6, 7), torch.float32, kernel_backend.device)
    out = scorefast.langevin_step(x, s, step_size=0.1, seed=4, step=2, backend=kernel_backend.name)
    y = x.clone()
    ret = scorefast.langevin_step_(y, s, step_size=0.1, seed=4, step=2, backend=kernel_backend.name)
    assert ret is y
    assert torch.equal(y, out)


@pytest.mark.parametrize("log2_n, D", [(20, 33), (20, 100), (20, 1024), (22, 5), (22, 64)])
def test_large_calls_match_reference_on_cpu(log2_n, D):
    # Over 2^20 float32 elements the CPU kernels write a fresh output with streaming stores,
    # whole 64-byte lines only, each tile's result a few lines at a time while the next tile's
    # noise is drawn (the last tile's after the loop); tiles end on particle boundaries, so with
    # D = 33 and 5 they start off the line grid (plain stores up to it and after the last whole
    # line). In place nothing is streamed. Each build streams its own way (16-lane stores with
    # AVX-512, two 8-lane ones per line with AVX2, none in the generic build). From 16 MB per
    # tensor (2^22) the next tile's x and score are also requested while the noise is drawn. A
    # small call on the last particles gives the same bits.
    if not scorefast.backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
    P = 2**log2_n // D + 3
    x, s, _, _ = _inputs((P, D), torch.float32, "cpu", seed=3)
    kw = dict(step_size=0.05, noise_scale=0.4, seed=8, step=5, backend="cpp")
    expected = langevin_step_ref(x, s, step_size=0.05, noise_scale=0.4, seed=8, step=5, compute_dtype=torch.float64)
    tol = langevin_tolerance(x, s, None, 1.0, 0.05, 0.4, expected, torch.float32, noise_from_contract=True)

    def check(isa):
        out = scorefast.langevin_step(x, s, **kw)
        y = x.clone()
        scorefast.langevin_step_(y, s, **kw)
        assert torch.equal(out, y), isa
        assert_within(out, expected, tol, f"{isa}: 2^{log2_n} elements, D={D}")
        small = scorefast.langevin_step(x[-1000:].clone(), s[-1000:].clone(), particle_offset=P - 1000, **kw)
        assert torch.equal(out[-1000:], small), isa

    on_each_cpu_isa(check)


def test_large_outputs_reuse_released_buffers_on_cpu():
    # Outputs of 8 MB and more come from a cache of released outputs (csrc/cpu/output_cache.h):
    # live outputs never share a buffer, a reused one is fully overwritten, and the storages
    # behave as torch's own (resizable, picklable).
    if not scorefast.backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
    x, s, _, _ = _inputs((2**19, 5), torch.float32, "cpu", seed=4)  # 10 MB
    kw = dict(step_size=0.05, noise_scale=0.4, seed=8, backend="cpp")
    first = scorefast.langevin_step(x, s, step=1, **kw)
    kept = first.clone()
    second = scorefast.langevin_step(x, s, step=2, **kw)
    assert second.data_ptr() != first.data_ptr() and torch.equal(first, kept)
    second.fill_(float("nan"))
    del second  # released with NaN in it: the next output must overwrite every element
    third = scorefast.langevin_step(x, s, step=2, **kw)
    y = x.clone()
    scorefast.langevin_step_(y, s, step=2, **kw)
    assert torch.equal(third, y)
    junk = scorefast.langevin_step(x, s, step=3, **kw)
    junk.fill_(float("nan"))
    del junk
    rs = scorefast.reverse_step(x, s, score_coef=0.1, noise_scale=0.2, seed=3, backend="cpp")
    assert not rs.isnan().any()
    buf = io.BytesIO()
    torch.save(third, buf)
    assert torch.equal(torch.load(io.BytesIO(buf.getvalue())), y)
    third.resize_(3, 2)
    third.resize_(2**20, 3)  # grows through the same allocator
    assert third.shape == (2**20, 3)


def _run_on_cached_outputs(body, **env):
    """Runs `body` in a fresh Python process (environment variables `env` added) after
    `import torch, scorefast` and x, s = ones of (2^21, 2): float32 inputs whose outputs (16 MB)
    come from the output cache. A failed assertion or exit status fails the test."""
    if not scorefast.backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
    code = "import torch, scorefast\nx = torch.ones(2**21, 2); s = torch.ones(2**21, 2)\n" + body
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), check=True, timeout=300)


def test_output_cache_can_be_turned_off():
    _run_on_cached_outputs(
        "kw = dict(step_size=0.1, noise_scale=0.0, backend='cpp')\n"
        "for _ in range(3): out = scorefast.langevin_step(x, s, **kw)\n"
        "assert torch.equal(out, torch.full_like(x, 1.1))\n",
        SCOREFAST_OUTPUT_CACHE="0",
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_output_cache_works_in_processes_forked_while_a_thread_uses_it():
    # fork() copies the cache's lock as it is; the cache takes it around fork so that a child
    # forked while another thread holds it does not wait on it forever. (A smoke test: the
    # window is short, so a missing handler shows only now and then.)
    _run_on_cached_outputs(
        "import os, threading, time\n"
        "kw = dict(step_size=0.05, noise_scale=0.0, backend='cpp')\n"
        "stop = threading.Event()\n"
        "def churn():\n"
        "    while not stop.is_set(): scorefast.langevin_step(x, s, **kw)\n"
        "t = threading.Thread(target=churn, daemon=True); t.start()\n"
        "for _ in range(8):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        torch.set_num_threads(1)  # OpenMP's threads are not forked (as in DataLoader workers)\n"
        "        out = scorefast.langevin_step(x, s, **kw)\n"
        "        os._exit(0 if torch.equal(out, torch.full_like(x, 1.05)) else 3)\n"
        "    deadline = time.monotonic() + 60\n"
        "    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0, done\n"
        "stop.set(); t.join()\n"
    )


def test_noncontiguous_inputs(kernel_backend):
    # Transposed x, strided score: the noise follows the logical [P, D] index, not memory.
    base = torch.randn(9, 6, generator=torch.Generator().manual_seed(1)).to(kernel_backend.device)
    x = base.t()  # (6, 9), column-major
    s = torch.randn(6, 18, generator=torch.Generator().manual_seed(2)).to(kernel_backend.device)[:, ::2]
    assert not x.is_contiguous() and not s.is_contiguous()
    kw = dict(step_size=0.1, seed=6, step=1, backend=kernel_backend.name)
    out = scorefast.langevin_step(x, s, **kw)
    expected = scorefast.langevin_step(x.contiguous(), s.contiguous(), **kw)
    assert torch.equal(out, expected)
    # In place into a non-contiguous x writes through its strides and leaves base's other views intact.
    y_base = base.clone()
    y = y_base.t()
    scorefast.langevin_step_(y, s, **kw)
    assert torch.equal(y, expected)


def _unaligned_copy(t):
    """A contiguous copy of ``t`` that starts one element into its storage (no vector loads)."""
    if t is None:
        return None
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    return view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_unaligned_storage_equals_aligned(kernel_backend, dtype):
    # Kernels may use vector loads when D % 4 == 0 and the buffers are aligned; views that
    # start one element into their storage take the scalar path, which must agree exactly.
    x, s, sc, z = _inputs((6, 8), dtype, kernel_backend.device, guided=True, noise=True)
    features = [
        dict(seed=3, step=1),
        dict(seed=3, score_cond=sc, guidance=1.5, max_score_norm=0.7, clamp=(-1.0, 1.0)),
        dict(noise=z),
    ]
    for extra in features:
        kw = dict(step_size=0.1, backend=kernel_backend.name, **extra)
        aligned = scorefast.langevin_step(x, s, **kw)
        kw_u = {k: _unaligned_copy(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        assert torch.equal(scorefast.langevin_step(_unaligned_copy(x), _unaligned_copy(s), **kw_u), aligned), extra
        y = _unaligned_copy(x)
        scorefast.langevin_step_(y, _unaligned_copy(s), **kw_u)
        assert torch.equal(y, aligned), extra


def test_explicit_noise_equals_fused_noise(kernel_backend):
    x, s, _, _ = _inputs((5, 11), torch.float32, kernel_backend.device)
    kw = dict(step_size=0.1, backend=kernel_backend.name)
    fused = scorefast.langevin_step(x, s, seed=77, step=3, **kw)
    z = scorefast.normal_like(x, seed=77, step=3, backend=kernel_backend.name)
    explicit = scorefast.langevin_step(x, s, noise=z, **kw)
    assert torch.equal(fused, explicit)


def test_chunked_particles_equal_whole_batch(kernel_backend):
    x, s, _, _ = _inputs((10, 6), torch.float32, kernel_backend.device)
    kw = dict(step_size=0.1, seed=5, step=8, backend=kernel_backend.name)
    whole = scorefast.langevin_step(x, s, **kw)
    parts = [scorefast.langevin_step(x[i : i + 3], s[i : i + 3], particle_offset=i, **kw) for i in range(0, 10, 3)]
    assert torch.equal(whole, torch.cat(parts))


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_independent_of_thread_count(backend):
    if not scorefast.backend_registry.status(backend).available:
        require_or_skip(backend, f"{backend} backend unavailable")
    x, s, _, _ = _inputs((64, 3001), torch.float32, "cpu")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = scorefast.langevin_step(x, s, step_size=0.1, seed=1, max_score_norm=10.0, backend=backend)
        torch.set_num_threads(max(2, previous))
        many = scorefast.langevin_step(x, s, step_size=0.1, seed=1, max_score_norm=10.0, backend=backend)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, many)


def test_nan_stays_in_its_particle(kernel_backend):
    x, s, _, _ = _inputs((4, 5), torch.float32, kernel_backend.device)
    x[1, 2] = float("nan")
    s[2, 0] = float("nan")
    for kw in (dict(), dict(clamp=(-1.0, 1.0)), dict(max_score_norm=1.0)):
        out = scorefast.langevin_step(x, s, step_size=0.1, seed=1, backend=kernel_backend.name, **kw)
        assert torch.isnan(out[1, 2]) and torch.isnan(out[2, 0])
        if "max_score_norm" in kw:  # the NaN score poisons its particle's norm, only that particle
            assert torch.isnan(out[2]).all()
        finite_rows = [0, 3]
        assert torch.isfinite(out[finite_rows]).all(), kw


def test_inf_score_with_clipping_gives_nan_not_crash(kernel_backend):
    x, s, _, _ = _inputs((3, 4), torch.float32, kernel_backend.device)
    s[0, 1] = float("inf")
    out = scorefast.langevin_step(x, s, step_size=0.1, seed=1, max_score_norm=1.0, backend=kernel_backend.name)
    assert not torch.isfinite(out[0]).all() and torch.isfinite(out[1:]).all()


def test_empty_batch(kernel_backend):
    x = torch.empty(0, 3, device=kernel_backend.device)
    out = scorefast.langevin_step(x, x, step_size=0.1, seed=1, backend=kernel_backend.name)
    assert out.shape == (0, 3)


def test_default_seed_is_fresh_and_follows_manual_seed():
    x = torch.zeros(4, 3)
    a = scorefast.langevin_step(x, x, step_size=0.5)
    b = scorefast.langevin_step(x, x, step_size=0.5)
    assert not torch.equal(a, b)
    torch.manual_seed(3)
    c = scorefast.langevin_step(x, x, step_size=0.5)
    torch.manual_seed(3)
    d = scorefast.langevin_step(x, x, step_size=0.5)
    assert torch.equal(c, d)


def test_reference_backend_matches_reference_function():
    x, s, _, _ = _inputs((4, 3), torch.float32, "cpu")
    out = scorefast.langevin_step(x, s, step_size=0.1, seed=9, step=2, backend="reference")
    ref = langevin_step_ref(x, s, step_size=0.1, noise_scale=math.sqrt(0.2), seed=9, step=2)
    assert torch.equal(out, ref)
    z = normal_like_ref(x, 9, 2)
    assert torch.allclose(out, x + 0.1 * s + math.sqrt(0.2) * z, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Errors: each names the argument and what was expected.


def _err_cases():
    x = torch.zeros(4, 3)
    s = torch.zeros(4, 3)
    return (
        [
            (dict(x=torch.zeros(4, 3, dtype=torch.int64)), TypeError, "x must be float32"),
            (dict(x=torch.tensor(1.0)), ValueError, "x must have at least 1 dimension"),
            (dict(score=torch.zeros(4, 2)), ValueError, r"score must have the shape of x \[4, 3\]"),
            (dict(score=torch.zeros(4, 3, device="meta")), ValueError, "score must be on the device of x"),
            (dict(step_size=float("nan")), ValueError, "step_size must be finite"),
            (dict(step_size=-0.1), ValueError, "step_size must be >= 0"),
            (dict(step_size=None), TypeError, "exactly one of step_size"),
            (dict(epsilon=0.1), TypeError, "exactly one of step_size"),
            (dict(noise_scale=float("inf")), ValueError, "noise_scale must be finite"),
            (dict(noise_scale=-1.0), ValueError, "noise_scale must be >= 0"),
            (dict(step_size=torch.ones(3)), ValueError, r"step_size tensor must have shape \[P\] = \[4\]"),
            (dict(step_size=torch.tensor([0.1, float("nan"), 0.1, 0.1])), ValueError, "at particle 1"),
            (dict(noise_scale=torch.tensor([0.1, 0.1, -1.0, 0.1])), ValueError, "noise_scale must be finite and >= 0"),
            (dict(clamp=(1.0, -1.0)), ValueError, r"clamp min \(1.0\) must be <= clamp max"),
            (dict(clamp=(float("nan"), 1.0)), ValueError, "clamp min must be finite"),
            (dict(clamp=1.0), TypeError, "clamp must be a"),
            (dict(max_score_norm=0.0), ValueError, "max_score_norm must be > 0"),
            (dict(guidance=2.0), ValueError, "guidance needs score_cond"),
            (dict(score_cond=torch.zeros(4, 3), guidance=float("nan")), ValueError, "guidance must be finite"),
            (dict(noise=torch.zeros(4, 3), seed=1), ValueError, "either noise= .* or seed="),
            (dict(noise=torch.zeros(3, 3)), ValueError, "noise must have the shape of x"),
            (dict(seed=-5), ValueError, "seed must be in"),
            (dict(step=2**32), ValueError, "step must be in"),
            (dict(backend="cuda"), (RuntimeError, ValueError), "backend 'cuda'"),
            (dict(backend="fast"), ValueError, "backend must be"),
        ],
        x,
        s,
    )


@pytest.mark.parametrize("i", range(25))
def test_errors_name_the_argument(i, monkeypatch):
    cases, x, s = _err_cases()
    overrides, error, match = cases[i]
    if overrides.get("backend") == "cuda":
        monkeypatch.delenv("SCOREFAST_CUDA_EMULATOR", raising=False)  # the real cuda backend, on CPU tensors
    kw = dict(x=x, score=s, step_size=0.1, seed=1)
    kw.update(overrides)
    if kw.get("epsilon") is not None and "step_size" not in overrides:
        pass  # both given: the error under test
    if kw.get("noise") is not None and "seed" not in overrides:
        kw.pop("seed")
    with pytest.raises(error, match=match):
        scorefast.langevin_step(kw.pop("x"), kw.pop("score"), **kw)


def test_error_leaves_x_untouched():
    x = torch.randn(4, 3)
    before = x.clone()
    with pytest.raises(ValueError):
        scorefast.langevin_step_(x, torch.zeros(4, 3), step_size=0.1, clamp=(1.0, 0.0))
    assert torch.equal(x, before)


def test_op_level_checks_guard_direct_calls():
    # torch.ops.scorefast.* called directly still gets named errors, not crashes.
    if not scorefast.backend_registry.status("cpp").available:
        require_or_skip("cpp", "cpp backend unavailable")
    op = torch.ops.scorefast.langevin_step
    x = torch.zeros(4, 3)
    base = [x, x, None, 1.0, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None]
    bad = list(base)
    bad[1] = torch.zeros(4, 2)
    with pytest.raises(RuntimeError, match="score must have the shape of x"):
        op(*bad)
    bad = list(base)
    bad[5] = torch.ones(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="step_size_per_particle must be Float"):
        op(*bad)
    bad = list(base)
    bad[10] = 2**32
    with pytest.raises(RuntimeError, match="step must be in"):
        op(*bad)


# ---------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile, autograd.


def _op_samples(device):
    g = torch.Generator().manual_seed(0)
    mk = lambda *sh: torch.randn(*sh, generator=g).to(device)  # noqa: E731
    pp = lambda: (torch.rand(5, generator=g) * 0.1).to(device)  # noqa: E731
    return [
        [mk(5, 3), mk(5, 3), None, 1.0, 0.1, None, 0.2, None, None, 7, 3, 0, None, None, None],
        [mk(5, 2, 2), mk(5, 2, 2), mk(5, 2, 2), 2.0, 0.1, pp(), 0.0, pp(), None, -3, 1, 10, -1.0, 1.0, 2.0],
        [mk(5, 3), mk(5, 3), None, 1.0, 0.1, None, 0.3, None, mk(5, 3), 0, 0, 0, None, 0.5, None],
        [
            mk(5, 3).requires_grad_(),
            mk(5, 3).requires_grad_(),
            None,
            1.0,
            0.1,
            None,
            0.2,
            None,
            None,
            1,
            2,
            0,
            None,
            None,
            None,
        ],
    ]


def _ops(kb):
    ns = scorefast.backend_registry.op_namespace(kb.name)
    return ns.langevin_step.default, ns.langevin_step_.default


def test_opcheck(kernel_backend):
    op, op_ = _ops(kernel_backend)
    for args in _op_samples(kernel_backend.device):
        torch.library.opcheck(op, args)
        inplace_args = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args]
        torch.library.opcheck(op_, inplace_args)


def test_compile_fullgraph(kernel_backend):
    if kernel_backend.name == "triton" and kernel_backend.interpreted:
        pytest.skip("torch.compile does not lower Triton kernels under the CPU interpreter")
    x, s, _, _ = _inputs((6, 4), torch.float32, kernel_backend.device)

    def chain(x, s):
        for t in range(3):
            x = scorefast.langevin_step(x, s, step_size=0.05, seed=11, step=t, backend=kernel_backend.name)
        return x

    torch._dynamo.reset()
    compiled = torch.compile(chain, fullgraph=True)
    assert torch.equal(compiled(x, s), chain(x, s))


@pytest.mark.parametrize("features", ["plain", "guided_clamp", "noise_pp"])
def test_autograd_matches_reference(kernel_backend, features):
    x, s, sc, z = _inputs(
        (4, 5),
        torch.float64 if kernel_backend.name != "triton" else torch.float32,
        kernel_backend.device,
        guided=True,
        noise=True,
    )
    kw = dict(step_size=0.3, noise=z)
    if features == "guided_clamp":
        kw.update(score_cond=sc, guidance=1.7, clamp=(-0.5, 0.5))
    if features == "noise_pp":
        kw.update(noise_scale=torch.rand(4, dtype=x.dtype, device=x.device))
    leaves = {k: v.detach().clone().requires_grad_() for k, v in dict(x=x, s=s, sc=sc, z=z).items()}

    def run(backend):
        ins = {k: v.detach().clone().requires_grad_() for k, v in leaves.items()}
        kw2 = dict(kw, noise=ins["z"])
        if "score_cond" in kw2:
            kw2["score_cond"] = ins["sc"]
        out = scorefast.langevin_step(ins["x"], ins["s"], backend=backend, **kw2)
        (
            out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape)
        ).sum().backward()
        return {k: v.grad for k, v in ins.items()}

    got, expected = run(kernel_backend.name), run("reference")
    for k in expected:
        if expected[k] is None:
            assert got[k] is None or torch.count_nonzero(got[k]) == 0, k
        else:
            assert torch.allclose(got[k], expected[k], rtol=1e-5, atol=1e-6), k


def test_autograd_refuses_unsupported_gradients(kernel_backend):
    x, s, _, _ = _inputs((4, 5), torch.float32, kernel_backend.device)
    a = torch.full((4,), 0.1, device=x.device, requires_grad=True)
    out = scorefast.langevin_step(x, s, step_size=a, noise_scale=0.1, seed=1, backend=kernel_backend.name)
    with pytest.raises(RuntimeError, match="per-particle step_size"):
        out.sum().backward()
    s2 = s.clone().requires_grad_()
    out = scorefast.langevin_step(x, s2, step_size=0.1, seed=1, max_score_norm=0.5, backend=kernel_backend.name)
    with pytest.raises(RuntimeError, match="max_score_norm"):
        out.sum().backward()
    with pytest.raises(RuntimeError, match="does not track gradients"):
        scorefast.langevin_step_(x.clone().requires_grad_(), s, step_size=0.1, seed=1, backend=kernel_backend.name)


def test_inplace_with_partially_overlapping_inputs_raises(kernel_backend):
    # score = x shifted by one element: an in-place kernel would read elements it already wrote.
    buf = torch.randn(2002, 1, device=kernel_backend.device)
    kw = dict(step_size=0.1, seed=1, backend=kernel_backend.name)
    for name in ("score", "noise", "score_cond"):
        x, other = buf[:-1], buf[1:]
        args = dict(kw, noise=other, score=x.clone()) if name == "noise" else dict(kw, score=other)
        if name == "noise":
            args.pop("seed")
        if name == "score_cond":
            args.update(score=x.clone(), score_cond=other)
        score = args.pop("score")
        with pytest.raises(ValueError, match=f"{name} partially overlaps x"):
            scorefast.langevin_step_(x, score, **args)
    # The op itself refuses it too (direct torch.ops calls).
    op = backend_registry.op_namespace(kernel_backend.name).langevin_step_
    with pytest.raises(RuntimeError, match="score partially overlaps x"):
        op(buf[:-1], buf[1:], None, 1.0, 0.1, None, 0.1, None, None, 0, 0, 0, None, None, None)


def test_inplace_with_the_score_aliasing_x(kernel_backend):
    # Full aliasing is an elementwise read-then-write: allowed, and correct.
    x = torch.randn(9, 5, device=kernel_backend.device)
    want = scorefast.langevin_step(x.clone(), x.clone(), step_size=0.1, seed=3, max_score_norm=2.0, backend="reference")
    got = scorefast.langevin_step_(x, x, step_size=0.1, seed=3, max_score_norm=2.0, backend=kernel_backend.name)
    assert got is x
    torch.testing.assert_close(x.cpu(), want.cpu(), rtol=1e-6, atol=1e-6)
