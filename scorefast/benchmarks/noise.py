"""Noise benchmark: the contract's standard normals (``scorefast.normal``, one Philox4x32-10
call and one Box-Muller pair per 4 elements) against ``torch.randn`` (eager, and under
torch.compile), over sizes 2^k, with the machine's copy bandwidth as the write limit and the
normals per second each provider draws.
"""

from __future__ import annotations

import torch

from scorefast import normal

from . import harness

MAX_LOG2 = 30
QUICK_MAX_LOG2 = 20
PARTICLE_SIZE = 1024


def sizes(min_log2: int = 16, max_log2: int = 26, quick: bool = False) -> list[int]:
    """Element counts 2^min_log2 .. 2^max_log2 (at most 2^20 when ``quick``)."""
    if quick:
        max_log2 = min(max_log2, QUICK_MAX_LOG2)
    if not 0 <= min_log2 <= max_log2 <= MAX_LOG2:
        raise ValueError(f"need 0 <= --min-log2 <= --max-log2 <= {MAX_LOG2}")
    return [2**k for k in range(min_log2, max_log2 + 1)]


def _randn(shape, device):
    return torch.randn(shape, device=device)


def run_noise_bench(sizes, device: torch.device, backends=None, compile_reference: bool = True, quick: bool = False):
    """Time float32 normals of n elements, laid out as (n / 1024, 1024) particles.

    Returns the result dict: per row numel, bytes (4 per element written) and per provider the
    times with gbps, normals_per_s, fraction_of_copy_bw and speedup_vs_eager.
    """
    harness.allow_recompiles(64)
    names = harness.timed_backends(device, "normal_fill_", backends)
    compiled = torch.compile(_randn, dynamic=False) if compile_reference else None
    min_time = 0.05 if quick else 0.3
    bw = harness.copy_bandwidth(device)
    rows = []
    for n in sizes:
        shape = (n // PARTICLE_SIZE, PARTICLE_SIZE) if n >= PARTICLE_SIZE else (1, n)
        times = {"eager": harness.time_fn(lambda shape=shape: _randn(shape, device), device, min_time=min_time)}
        if compiled is not None:
            times["torch.compile"] = harness.time_fn(
                lambda shape=shape: compiled(shape, device), device, min_time=min_time
            )
        for name in names:
            step = [0]

            def call(name=name, step=step, shape=shape):  # a fresh step each call: new noise
                step[0] += 1
                return normal(shape, seed=99, step=step[0], device=device, backend=name)

            times[name] = harness.time_fn(call, device, min_time=min_time)
        row = {"numel": n, "bytes": 4 * n, "times": times}
        for t in times.values():
            t["gbps"] = row["bytes"] / t["median"] / 1e9
            t["normals_per_s"] = n / t["median"]
            t["fraction_of_copy_bw"] = row["bytes"] / t["median"] / bw
            t["speedup_vs_eager"] = times["eager"]["median"] / t["median"]
        rows.append(row)
    return {
        "op": "normal",
        **harness.run_info(device),
        "copy_bandwidth_gbps": bw / 1e9,
        "bytes_per_element": "4 (write float32 normals)",
        "particle_size": PARTICLE_SIZE,
        "providers": ["eager"] + (["torch.compile"] if compile_reference else []) + names,
        "rows": rows,
    }


def format_table(result: dict) -> str:
    """Milliseconds per provider; for each scorefast backend also normals/s, % of the copy
    bandwidth and the speed-up over eager torch.randn."""
    provs = result["providers"]
    backends = [p for p in provs if p not in ("eager", "torch.compile")]
    columns = [harness.Column("elements", 10, lambda r: f"2^{r['numel'].bit_length() - 1}")]
    columns += [harness.Column(p + " ms", 16, lambda r, p=p: f"{r['times'][p]['median'] * 1e3:.4f}") for p in provs]
    for p in backends:
        columns += [
            harness.Column(p + " Gnormal/s", 14, lambda r, p=p: f"{r['times'][p]['normals_per_s'] / 1e9:.3f}"),
            harness.Column(p + " %bw", 9, lambda r, p=p: f"{100 * r['times'][p]['fraction_of_copy_bw']:.1f}%"),
            harness.Column("x eager", 8, lambda r, p=p: f"{r['times'][p]['speedup_vs_eager']:.2f}"),
        ]
    title = (
        f"normal (the noise contract) on {result['machine']}, torch {result['torch']}, "
        f"copy bandwidth {result['copy_bandwidth_gbps']:.1f} GB/s; eager = torch.randn"
    )
    return harness.format_table(title, columns, result["rows"])
