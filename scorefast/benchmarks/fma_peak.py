"""The machine's multiply-add peak, measured rather than taken from a datasheet: a loop of
independent fused multiply-adds on the widest float32 vectors the compiler targets for this
CPU (-march=native), one OpenMP thread per torch thread, compiled on the fly with the C
compiler and loaded through ctypes.

The kernels' fractions of this peak count their multiply-adds (one per lane of an FMA
instruction; a separate multiply or add counts as one too) against it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile

import torch

_SOURCE = r"""
#include <omp.h>
#include <stdint.h>
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vf __attribute__((vector_size(LANES * 4)));

/* 12 independent accumulators (more than FMA latency x FMA pipes on current x86 cores), iters
   rounds each; returns the sum so nothing is dropped. The accumulators start apart and pass
   through empty asm statements: chains the compiler could prove equal would be merged into one. */
static float run(int64_t iters) {
  const vf zero = {0};
  vf a0 = zero + 1.0f, a1 = zero + 2.0f, a2 = zero + 3.0f, a3 = zero + 4.0f, a4 = zero + 5.0f, a5 = zero + 6.0f,
     a6 = zero + 7.0f, a7 = zero + 8.0f, a8 = zero + 9.0f, a9 = zero + 10.0f, a10 = zero + 11.0f, a11 = zero + 12.0f;
  __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
  __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
  vf b = zero + 0.999999f, c = zero + 1e-7f;
  for (int64_t i = 0; i < iters; ++i) {
    __asm__ volatile("" : "+v"(b));  /* b is opaque: no folding across iterations */
    a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
    a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
    a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
  }
  vf s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
  float t = 0;
  for (int i = 0; i < LANES; ++i) t += s[i];
  return t;
}

int fma_lanes(void) { return LANES; }

/* Runs iters rounds on each of threads threads; returns the seconds taken. */
double fma_seconds(int threads, int64_t iters) {
  float sink = 0;
  double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += run(iters);
  double t = omp_get_wtime() - t0;
  return sink == 12345.0f ? -t : t;
}
"""

_ACCUMULATORS = 12
_cache: dict = {}


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _library():
    if "lib" in _cache:
        return _cache["lib"]
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    tmp = tempfile.mkdtemp(prefix="scorefast-fma-")
    src, lib = os.path.join(tmp, "fma.c"), os.path.join(tmp, "fma.so")
    with open(src, "w") as f:
        f.write(_SOURCE)
    cmd = [cc, "-O2", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", src, "-o", lib]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[:300]}")
    handle = ctypes.CDLL(lib)
    handle.fma_seconds.restype = ctypes.c_double
    handle.fma_seconds.argtypes = [ctypes.c_int, ctypes.c_int64]
    handle.fma_lanes.restype = ctypes.c_int
    _cache["lib"] = handle
    return handle


def measure(threads: int | None = None, min_time: float = 0.2) -> dict:
    """The float32 multiply-add peak on ``threads`` threads (default: torch's): the best of 5
    runs of at least ``min_time`` seconds each.

    Returns {"multiply_adds_per_s", "gflops" (2 per multiply-add), "threads", "lanes",
    "method"}, or {"error": why} where no C compiler with OpenMP is available."""
    threads = threads or torch.get_num_threads()
    try:
        lib = _library()
    except (RuntimeError, OSError) as e:
        return {"error": str(e)}
    lanes = lib.fma_lanes()
    iters = 1 << 16
    while lib.fma_seconds(threads, iters) < min_time / 4:
        iters *= 2
    iters *= 4
    best = min(abs(lib.fma_seconds(threads, iters)) for _ in range(5))
    rate = threads * iters * _ACCUMULATORS * lanes / best
    return {
        "multiply_adds_per_s": rate,
        "gflops": 2 * rate / 1e9,
        "threads": threads,
        "lanes": lanes,
        "method": f"{_ACCUMULATORS} independent {lanes}-lane float32 FMA chains a thread, -O2 -march=native, best of 5",
    }


def fraction(multiply_adds: float, seconds: float, peak: dict) -> float | None:
    """multiply_adds / seconds as a fraction of the measured peak (None without one)."""
    if "multiply_adds_per_s" not in peak or seconds <= 0:
        return None
    return multiply_adds / seconds / peak["multiply_adds_per_s"]
