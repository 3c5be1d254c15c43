"""The noise contract in numba: ``scorefast_numba::philox_fill_`` and ``normal_fill_``.

    z[p, d] = BoxMuller(Philox4x32-10(key = seed, counter = (lo32(g >> 2), hi32(g >> 2), t, 0)))[g & 3]
    g = (particle_offset + p) D + d,  the element's flat index (< 2^63)

(every tensor draws the noise of its flat [P D / 4, 4] view, every word used; the fills walk
its counters, see flat_start).

32-bit words are held in uint64 values below 2^32: Philox's mulhilo is then one uint64
product, and nothing mixes signed with unsigned integers (numba would type that as
float64). Floats are float32 throughout, with fastmath off; log, sin and cos are vmath's
polynomials (the C++ kernels' Cephes forms, ~1 ulp), so the results equal the reference up to
libm rounding, and the scalar and the vectorised fills give the same bits. Runs of 1024
elements or more are filled in batches of 64 counters whose Philox rounds and Box-Muller pairs
are loops LLVM vectorises. The helpers here are shared with the other kernels.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from ...ops import noise as contract
from .vmath import vlog, vsincos

# Integer constants as uint64 scalars: a plain Python int is typed int64, and
# int64 op uint64 would give float64.
_M32 = np.uint64(0xFFFFFFFF)
_SIGN32 = np.uint64(0x80000000)
_S32 = np.uint64(32)
_ROUND_A = np.uint64(0xD2511F53)
_ROUND_B = np.uint64(0xCD9E8D57)
_KEY_A = np.uint64(0x9E3779B9)
_KEY_B = np.uint64(0xBB67AE85)

# float32 constants, rounded from the same decimals as the reference (via float64).
_UNIFORM_SCALE = np.float32(4.6566127342e-10)
_MIN_UNIFORM = np.float32(1.0e-7)
_TWO_PI = np.float32(6.283185307179586)
_NEG_TWO = np.float32(-2.0)

# Elements per parallel work item: results never depend on it (each element is a pure
# function of its index), it only sets the load balance.
CHUNK = 8192


# Caching skips the JIT compile (seconds per kernel) after the first process. Numba
# caches next to this file, or in a per-user directory (or NUMBA_CACHE_DIR) when that is
# not writable; SCOREFAST_NUMBA_CACHE=0 compiles in every process instead.
_CACHE = os.environ.get("SCOREFAST_NUMBA_CACHE", "1") != "0"


def kernel_sources() -> list[Path]:
    """The sources a kernel's machine code depends on: this backend's modules (a kernel's
    cached code holds the helpers it calls, from other files) and the op contracts (their
    constants are compiled in)."""
    files = sorted(Path(__file__).resolve().parent.glob("*.py"))
    return files + sorted(Path(contract.__file__).resolve().parent.glob("*.py"))


def digest(files) -> str:
    """sha256 of the files' names and contents, in the order given."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def sources_digest() -> str:
    """digest(kernel_sources()), once per process."""
    return digest(kernel_sources())


def stamp_cache_with_sources(dispatcher) -> bool:
    """Make the on-disk cache of ``dispatcher`` stale when any source of sources_digest()
    changes. Numba checks only the file that defines a function, so a kernel would keep the
    machine code of a helper changed since. Returns whether the stamp was set (False: no
    cache, or a numba whose cache keeps its stamp elsewhere)."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is None or not hasattr(cache_file, "_source_stamp"):
        return False
    cache_file._source_stamp = (cache_file._source_stamp, sources_digest())
    return True


def jit(parallel: bool = False, helper: bool = False, ieee_division: bool = False, reassoc: bool = False):
    """``numba.njit`` with the package's settings: no fastmath (float32 results must match
    the reference to libm rounding), on-disk cache when possible. ``helper``: called only
    from other kernels, so no Python wrapper is built (less compile time).
    ``ieee_division``: x / 0 gives inf or NaN as in C++ instead of raising
    ZeroDivisionError (numba's ``error_model="numpy"``). ``reassoc``: sums may be
    reassociated (only that fast-math flag), so a sum over a loop vectorises; its order is
    then fixed by the compiled loop, the same for every call."""
    opts = dict(parallel=parallel, fastmath={"reassoc"} if reassoc else False)
    if ieee_division:
        opts.update(error_model="numpy")
    if helper:
        opts.update(no_cpython_wrapper=True, no_cfunc_wrapper=True)

    def wrap(fn):
        try:
            dispatcher = njit(cache=_CACHE, **opts)(fn)
            stamp_cache_with_sources(dispatcher)
            return dispatcher
        except RuntimeError:  # no writable cache location at all: compile in each process
            return njit(cache=False, **opts)(fn)

    return wrap


_threads_launched = False


def sync_threads() -> None:
    """Use torch's thread count (torch.set_num_threads governs both CPU backends)."""
    global _threads_launched
    import numba

    want = torch.get_num_threads()
    if not _threads_launched:
        # Starting numba's OpenMP layer resets the process-wide OpenMP thread count that
        # torch reads back; put torch's setting back.
        numba.get_num_threads()
        _threads_launched = True
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
    n = max(1, min(want, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def key_words(seed64: int) -> tuple[np.uint64, np.uint64]:
    """(lo32, hi32) of a seed given as the int64 bit pattern of a uint64."""
    seed = seed64 & 0xFFFFFFFFFFFFFFFF
    return np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)


# ---------------------------------------------------------------------------------------
# Device functions (inlined into the parallel kernels by LLVM).


@jit(helper=True)
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0..c3) and key (k0, k1); all uint64 below 2^32."""
    for _ in range(10):
        prod_b = _ROUND_B * c2  # < 2^64: hi and lo words of the 32x32 product
        prod_a = _ROUND_A * c0
        c0, c1, c2, c3 = (prod_b >> _S32) ^ c1 ^ k0, prod_b & _M32, (prod_a >> _S32) ^ c3 ^ k1, prod_a & _M32
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    return c0, c1, c2, c3


@jit(helper=True)
def particle_words(k0, k1, step, pid, q):
    """The four Philox words of group q of global particle id pid at ``step`` (uint64 values)."""
    return philox4x32_10(pid & _M32, pid >> _S32, step, np.uint64(q), k0, k1)


@jit(helper=True)
def uniform(word):
    """uint32 word -> float32 in [0, 1), as Triton's uint_to_uniform_float."""
    if word >= _SIGN32:  # negative as int32: -i - 1 == ~word (low 32 bits)
        word = word ^ _M32
    return np.float32(word) * _UNIFORM_SCALE


@jit(helper=True)
def box_muller(word_a, word_b):
    """(r cos th, r sin th) of two words, in float32, as Triton's pair_uniform_to_normal."""
    u1 = uniform(word_a)
    u2 = uniform(word_b)
    if u1 < _MIN_UNIFORM:
        u1 = _MIN_UNIFORM
    radius = math.sqrt(_NEG_TWO * vlog(u1))
    s, c = vsincos(_TWO_PI * u2)  # vmath's polynomials, as the vectorised fill: bit for bit the same
    return radius * c, radius * s


@jit(helper=True)
def flat_start(D, offset, begin):
    """(counter, word) of element ``begin`` of a fill of flattened [P, D] elements from particle
    ``offset``: its flat index g = offset D + begin (< 2^63, the ops check) draws word g & 3 of
    counter g >> 2."""
    g = offset * np.uint64(D) + np.uint64(begin)
    return g >> np.uint64(2), np.int64(g & np.uint64(3))


@jit(helper=True)
def _store_pair(dst, dst0, i, n, zc, zs, skip_first):
    """A Box-Muller pair's outputs into dst[dst0 + i ...]: zc unless ``skip_first`` (the run
    starts at zs), then zs if i < n still; returns the new i."""
    if not skip_first:
        dst[dst0 + i] = zc
        i += 1
    if i < n:
        dst[dst0 + i] = zs
        i += 1
    return i


@jit(helper=True)
def fill_normals_scalar(dst, dst0, D, k0, k1, step, offset, begin, n):
    """z of the flattened [P, D] elements [begin, begin + n) into dst[dst0 : dst0 + n], one
    counter at a time; Box-Muller runs only for the word pairs that are used."""
    ctr, w = flat_start(D, offset, begin)
    i = 0
    while i < n:
        w0, w1, w2, w3 = philox4x32_10(ctr & _M32, ctr >> _S32, step, np.uint64(0), k0, k1)
        if w < 2:
            zc, zs = box_muller(w0, w1)
            i = _store_pair(dst, dst0, i, n, zc, zs, w == 1)
        if i < n:
            zc, zs = box_muller(w2, w3)
            i = _store_pair(dst, dst0, i, n, zc, zs, w == 3)
        w = 0
        ctr += np.uint64(1)


# Counters per batch of the vectorised fill: the lanes of its loops.
_LANES = 64
# Below this many elements the scalar fill is used: a batch allocates its lane arrays (a chain
# fills one particle of D elements per call).
_VECTOR_MIN = 1024


@jit(helper=True)
def _philox_lanes(c0, c1, c2, c3, m, k0, k1):
    """philox4x32_10 of lanes 0 .. m - 1 of uint32 word arrays, in place: the rounds outside,
    the lanes inside, so each round is one loop LLVM vectorises. (Its rounds repeat
    philox4x32_10's: a call to that njit function in the lane loop is not inlined and keeps
    the loop scalar, about 8 ns per normal against 2.4.)"""
    for _ in range(10):
        for i in range(m):
            prod_b = _ROUND_B * np.uint64(c2[i])
            prod_a = _ROUND_A * np.uint64(c0[i])
            w0 = (prod_b >> _S32) ^ np.uint64(c1[i]) ^ k0
            w2 = (prod_a >> _S32) ^ np.uint64(c3[i]) ^ k1
            c0[i] = np.uint32(w0)
            c1[i] = np.uint32(prod_b & _M32)
            c2[i] = np.uint32(w2)
            c3[i] = np.uint32(prod_a & _M32)
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32


@jit(helper=True)
def _box_muller_lanes(wa, wb, zc, zs, m):
    """box_muller of lanes 0 .. m - 1, with the vectorisable log, sin and cos of vmath, spelled
    out for the reason _philox_lanes gives (the same operations, so the same bits)."""
    for i in range(m):
        a = np.uint64(wa[i])
        b = np.uint64(wb[i])
        a = a ^ _M32 if a >= _SIGN32 else a
        b = b ^ _M32 if b >= _SIGN32 else b
        u1 = np.float32(a) * _UNIFORM_SCALE
        u2 = np.float32(b) * _UNIFORM_SCALE
        u1 = _MIN_UNIFORM if u1 < _MIN_UNIFORM else u1
        radius = math.sqrt(_NEG_TWO * vlog(u1))
        s, c = vsincos(_TWO_PI * u2)
        zc[i] = radius * c
        zs[i] = radius * s


@jit(helper=True)
def fill_normals(dst, dst0, D, k0, k1, step, offset, begin, n):
    """z of the flattened [P, D] elements [begin, begin + n) into dst[dst0 : dst0 + n].

    The whole counters in batches of up to _LANES consecutive ones: their Philox words and
    Box-Muller pairs in vectorised loops, all four normals of each used. A partial counter at
    either end, and runs under _VECTOR_MIN elements, take fill_normals_scalar.
    """
    if n < _VECTOR_MIN:
        fill_normals_scalar(dst, dst0, D, k0, k1, step, offset, begin, n)
        return
    ctr, w = flat_start(D, offset, begin)
    i = 0
    if w != 0:  # the rest of a counter begun before this run
        i = 4 - w
        fill_normals_scalar(dst, dst0, 4, k0, k1, step, ctr, w, i)
        ctr += np.uint64(1)
    c0 = np.empty(_LANES, np.uint32)
    c1 = np.empty(_LANES, np.uint32)
    c2 = np.empty(_LANES, np.uint32)
    c3 = np.empty(_LANES, np.uint32)
    z = np.empty((4, _LANES), np.float32)
    while n - i >= 4:
        m = min(_LANES, (n - i) // 4)
        for lane in range(m):
            c = ctr + np.uint64(lane)
            c0[lane] = np.uint32(c & _M32)
            c1[lane] = np.uint32(c >> _S32)
            c2[lane] = np.uint32(step)
            c3[lane] = np.uint32(0)
        _philox_lanes(c0, c1, c2, c3, m, k0, k1)
        _box_muller_lanes(c0, c1, z[0], z[1], m)
        _box_muller_lanes(c2, c3, z[2], z[3], m)
        for lane in range(m):
            for e in range(4):
                dst[dst0 + i + 4 * lane + e] = z[e, lane]
        i += 4 * m
        ctr += np.uint64(m)
    if i < n:  # a counter the run ends inside
        fill_normals_scalar(dst, dst0 + i, 4, k0, k1, step, ctr, 0, n - i)


# ---------------------------------------------------------------------------------------
# Parallel kernels: prange over fixed chunks, so the numbers never depend on threads.


@jit(parallel=True)
def _normal_fill_kernel(out, D, k0, k1, step, offset, chunk):
    total = out.shape[0]
    for c in prange((total + chunk - 1) // chunk):
        begin = c * chunk
        fill_normals(out, begin, D, k0, k1, step, offset, begin, min(chunk, total - begin))


@jit(parallel=True)
def _philox_fill_kernel(out, P, Q, k0, k1, step, offset):
    # out: int64 [P * Q * 4]; one work item per particle.
    for p in prange(P):
        pid = offset + np.uint64(p)
        for q in range(Q):
            w0, w1, w2, w3 = particle_words(k0, k1, step, pid, q)
            base = 4 * (p * Q + q)
            out[base] = np.int64(w0)
            out[base + 1] = np.int64(w1)
            out[base + 2] = np.int64(w2)
            out[base + 3] = np.int64(w3)


# ---------------------------------------------------------------------------------------
# Ops.


@torch.library.custom_op(
    "scorefast_numba::philox_fill_",
    mutates_args=("out",),
    device_types="cpu",
    schema=contract.SCHEMAS["philox_fill_"],
)
def philox_fill_(out: torch.Tensor, seed: int, step: int, particle_offset: int) -> None:
    """Philox words of the contract: out[p, q, :] for counter (particle_offset + p, step, q).

    out: int64 [P, Q, 4], contiguous; values in [0, 2^32).
    """
    contract.check_philox_fill(out, step, particle_offset)
    P, Q = out.shape[0], out.shape[1]
    if out.numel() == 0:
        return
    sync_threads()
    k0, k1 = key_words(seed)
    _philox_fill_kernel(out.detach().view(-1).numpy(), P, Q, k0, k1, np.uint64(step), np.uint64(particle_offset))


@torch.library.custom_op(
    "scorefast_numba::normal_fill_",
    mutates_args=("out",),
    device_types="cpu",
    schema=contract.SCHEMAS["normal_fill_"],
)
def normal_fill_(out: torch.Tensor, seed: int, step: int, particle_offset: int) -> None:
    """Standard normals of the contract into out (dim 0 = particles, contiguous): float32,
    rounded to out's dtype (float32, float64, float16 or bfloat16)."""
    contract.check_normal_fill(out, step, particle_offset)
    if out.numel() == 0:
        return
    D = out.numel() // out.shape[0]
    sync_threads()
    k0, k1 = key_words(seed)
    # numpy has no bfloat16: 16-bit outputs are filled in float32 and rounded by torch
    direct = out.dtype in (torch.float32, torch.float64)
    dst = out.detach().view(-1) if direct else torch.empty(out.numel(), dtype=torch.float32)
    _normal_fill_kernel(dst.numpy(), D, k0, k1, np.uint64(step), np.uint64(particle_offset), CHUNK)
    if not direct:
        out.view(-1).copy_(dst)
