"""Timing harness shared by ``scorefast bench`` and bench/ scripts.

Every table row is measured in one run on one machine: eager PyTorch, ``torch.compile``
of the same reference, and each scorefast backend, with the machine's measured copy
bandwidth as the hardware limit of these memory-bound ops.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time

import torch

from . import backend_registry
from .langevin import langevin_step

RESULTS_DIR = os.path.join("bench", "results")


def machine_name(device: torch.device) -> str:
    """A human-readable name of the device: GPU name, or CPU model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, *, min_time: float = 0.2, min_reps: int = 3,
            max_reps: int = 1000) -> dict:
    """Median, 20% and 80% quantiles of the wall time of ``fn()`` in seconds, after a warm-up
    of at least 3 calls and min_time / 2 seconds: the first touches of fresh memory (first-use
    page faults, caches, compilation) are not the steady state a sampling loop runs in.

    A call slower than 2 s is warmed up and timed once (it is not noise-bound).
    """
    warm_start = time.perf_counter()
    for i in range(max(3, max_reps)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        now = time.perf_counter()
        if now - t0 > 2.0:
            min_reps = max_reps = 1
            break
        if i >= 2 and now - warm_start >= min_time / 2:
            break
    times = []
    total = 0.0
    while (total < min_time or len(times) < min_reps) and len(times) < max_reps:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"median": statistics.median(times), "p20": q(0.2), "p80": q(0.8), "reps": len(times)}


def copy_bandwidth(device: torch.device, numel: int = 2**26) -> float:
    """Measured bytes/s of ``dst.copy_(src)`` for float32 (read + write), the memory limit."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, min_time=0.5)["median"]
    return 2 * numel * 4 / t


def eager_langevin(x, s, a, b):
    """The eager PyTorch step every user writes: x + a*s + b*randn_like(x)."""
    return x + a * s + b * torch.randn_like(x)


def _bench_backends(device: torch.device, requested) -> list[str]:
    if requested is not None:
        return list(requested)
    names = []
    for name in backend_registry.NAMES:
        s = backend_registry.status(name)
        if name == "reference" or not s.available or device.type not in s.devices:
            continue
        if backend_registry.is_emulated(name, device.type):
            continue  # the Triton interpreter and the CUDA emulator are for testing, not timing
        names.append(name)
    return names


def run_langevin_bench(sizes, device: torch.device, backends=None, compile_reference: bool = True,
                       quick: bool = False, particle_size: int = 1024) -> dict:
    """Time langevin_step (out of place, noise in-kernel) against eager and compiled PyTorch.

    The n elements are laid out as (n / particle_size, particle_size) particles (one particle
    of n elements when n < particle_size): the noise contract draws one Philox call per 4
    elements of a particle, so particles of 1-3 elements cost more noise per element.
    """
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
    names = _bench_backends(device, backends)
    compiled = torch.compile(eager_langevin, dynamic=False) if compile_reference else None
    min_time = 0.05 if quick else 0.3
    bw = copy_bandwidth(device)
    a, b = 0.01, (2 * 0.01) ** 0.5
    rows = []
    for n in sizes:
        shape = (n // particle_size, particle_size) if n >= particle_size else (1, n)
        x = torch.randn(shape, device=device)
        s = torch.randn(shape, device=device)
        row = {"numel": n, "bytes": 3 * n * 4, "times": {}}
        row["times"]["eager"] = time_fn(lambda: eager_langevin(x, s, a, b), device, min_time=min_time)
        if compiled is not None:
            row["times"]["torch.compile"] = time_fn(lambda: compiled(x, s, a, b), device, min_time=min_time)
        for name in names:
            step = [0]

            def call(name=name, step=step):
                step[0] += 1
                return langevin_step(x, s, step_size=a, noise_scale=b, seed=1234, step=step[0], backend=name)

            row["times"][name] = time_fn(call, device, min_time=min_time)
        for provider, t in row["times"].items():
            t["gbps"] = row["bytes"] / t["median"] / 1e9
            t["elements_per_s"] = n / t["median"]
            t["fraction_of_copy_bw"] = row["bytes"] / t["median"] / bw
            t["speedup_vs_eager"] = row["times"]["eager"]["median"] / t["median"]
            if "torch.compile" in row["times"]:
                t["speedup_vs_compile"] = row["times"]["torch.compile"]["median"] / t["median"]
        rows.append(row)
        del x, s
    return {
        "op": "langevin_step",
        "machine": machine_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "copy_bandwidth_gbps": bw / 1e9,
        "bytes_per_element": "12 (read x and score, write the result, float32)",
        "particle_size": particle_size,
        "providers": ["eager"] + (["torch.compile"] if compile_reference else []) + names,
        "rows": rows,
    }


def format_table(result: dict) -> str:
    provs = result["providers"]
    head = f"{'elements':>10} " + " ".join(f"{p + ' ms':>16}" for p in provs)
    extra = [p for p in provs if p not in ("eager", "torch.compile")]
    head += "".join(f" {p + ' GB/s':>11} {p + ' %bw':>9} {'x eager':>8} {'x compile':>9}" for p in extra)
    lines = [f"langevin_step on {result['machine']}, torch {result['torch']}, "
             f"copy bandwidth {result['copy_bandwidth_gbps']:.1f} GB/s, "
             f"particles of {result.get('particle_size', '?')} elements", head]
    for row in result["rows"]:
        t = row["times"]
        line = f"{'2^%d' % (row['numel'].bit_length() - 1):>10} "
        line += " ".join(f"{t[p]['median'] * 1e3:16.4f}" for p in provs)
        for p in extra:
            line += (f" {t[p]['gbps']:11.2f} {100 * t[p]['fraction_of_copy_bw']:8.1f}%"
                     f" {t[p]['speedup_vs_eager']:8.2f} {t[p].get('speedup_vs_compile', float('nan')):9.2f}")
        lines.append(line)
    return "\n".join(lines)


def default_result_path(op: str, machine: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in machine.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return os.path.join(RESULTS_DIR, f"{op}-{slug[:60]}.json")


def write_json(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
