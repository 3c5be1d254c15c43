"""langevin_step benchmark: the fused step (out of place, noise drawn in the kernel) against
eager PyTorch x + a*s + b*randn_like(x) and torch.compile of it, over sizes 2^k, with the
machine's copy bandwidth as the limit of this memory-bound op.
"""

from __future__ import annotations

import torch

from scorefast import langevin_step

from . import harness
from .baselines import eager_langevin

MAX_LOG2 = 30
QUICK_MAX_LOG2 = 20
STEP_SIZE, NOISE_SCALE = 0.01, (2 * 0.01) ** 0.5  # a and b of x + a*s + b*z (ULA's b = sqrt(2a))


def sizes(min_log2: int = 10, max_log2: int = 26, quick: bool = False) -> list[int]:
    """Element counts 2^min_log2 .. 2^max_log2 (at most 2^20 when ``quick``); ValueError
    unless 0 <= min_log2 <= max_log2 <= 30 after that cap."""
    if quick:
        max_log2 = min(max_log2, QUICK_MAX_LOG2)
    if not 0 <= min_log2 <= max_log2 <= MAX_LOG2:
        raise ValueError(f"need 0 <= --min-log2 <= --max-log2 <= {MAX_LOG2}")
    return [2**k for k in range(min_log2, max_log2 + 1)]


def result_name(particle_size: int = 1024) -> str:
    """The op part of the results file name: particles other than the default 1024 elements
    are named by their size ("langevin_step-d2")."""
    return "langevin_step" if particle_size == 1024 else f"langevin_step-d{particle_size}"


def _time_size(n: int, particle_size: int, device: torch.device, compiled, names, min_time: float) -> dict:
    """{provider: time_fn result} for one size; its tensors are freed on return, before the
    next (larger) size is allocated."""
    shape = (n // particle_size, particle_size) if n >= particle_size else (1, n)
    x = torch.randn(shape, device=device)
    s = torch.randn(shape, device=device)
    a, b = STEP_SIZE, NOISE_SCALE
    times = {"eager": harness.time_fn(lambda: eager_langevin(x, s, a, b), device, min_time=min_time)}
    if compiled is not None:
        times["torch.compile"] = harness.time_fn(lambda: compiled(x, s, a, b), device, min_time=min_time)
    for name in names:
        step = [0]

        def call(name=name, step=step):  # a fresh step each call: new noise, as in a chain
            step[0] += 1
            return langevin_step(x, s, step_size=a, noise_scale=b, seed=1234, step=step[0], backend=name)

        times[name] = harness.time_fn(call, device, min_time=min_time)
    return times


def run_langevin_bench(
    sizes,
    device: torch.device,
    backends=None,
    compile_reference: bool = True,
    quick: bool = False,
    particle_size: int = 1024,
) -> dict:
    """Time langevin_step (out of place, noise in-kernel) against eager and compiled PyTorch.

    sizes: element counts n; float32 x and score of n elements are laid out as
    (n / particle_size, particle_size) particles (one particle of n elements when n <
    particle_size): the noise contract draws one Philox call per 4 elements of a particle
    (particles of 1 or 2 elements share calls), so particles of 3 or 5 to 7 elements cost more
    noise per element. backends: names, or None for every
    backend that runs natively on ``device``. ``quick``: 0.05 s of timed calls per provider
    instead of 0.3 s.

    Returns the result dict (JSON fields as in bench/results/langevin_step-*.json): per row
    numel, bytes and per provider the times with gbps, elements_per_s, fraction_of_copy_bw,
    speedup_vs_eager and speedup_vs_compile.
    """
    harness.allow_recompiles(64)
    names = harness.timed_backends(device, "langevin_step", backends)
    compiled = torch.compile(eager_langevin, dynamic=False) if compile_reference else None
    min_time = 0.05 if quick else 0.3
    bw = harness.copy_bandwidth(device)
    rows = []
    for n in sizes:
        row = {"numel": n, "bytes": 3 * n * 4, "times": _time_size(n, particle_size, device, compiled, names, min_time)}
        for t in row["times"].values():
            t["gbps"] = row["bytes"] / t["median"] / 1e9
            t["elements_per_s"] = n / t["median"]
            t["fraction_of_copy_bw"] = row["bytes"] / t["median"] / bw
        harness.add_speedups(row["times"])
        rows.append(row)
    return {
        "op": "langevin_step",
        **harness.run_info(device),
        "copy_bandwidth_gbps": bw / 1e9,
        "bytes_per_element": "12 (read x and score, write the result, float32)",
        "particle_size": particle_size,
        "providers": ["eager"] + (["torch.compile"] if compile_reference else []) + names,
        "rows": rows,
    }


def format_table(result: dict) -> str:
    """Milliseconds per provider; for each scorefast backend also GB/s, % of the copy
    bandwidth and the speed-ups over eager and torch.compile."""
    provs = result["providers"]
    backends = [p for p in provs if p not in ("eager", "torch.compile")]
    columns = [harness.Column("elements", 10, lambda r: f"2^{r['numel'].bit_length() - 1}")]
    columns += [harness.Column(p + " ms", 16, lambda r, p=p: f"{r['times'][p]['median'] * 1e3:.4f}") for p in provs]
    for p in backends:
        columns += [
            harness.Column(p + " GB/s", 11, lambda r, p=p: f"{r['times'][p]['gbps']:.2f}"),
            harness.Column(p + " %bw", 9, lambda r, p=p: f"{100 * r['times'][p]['fraction_of_copy_bw']:.1f}%"),
            harness.Column("x eager", 8, lambda r, p=p: f"{r['times'][p]['speedup_vs_eager']:.2f}"),
            harness.Column(
                "x compile", 9, lambda r, p=p: f"{r['times'][p].get('speedup_vs_compile', float('nan')):.2f}"
            ),
        ]
    title = (
        f"langevin_step on {result['machine']}, torch {result['torch']}, "
        f"copy bandwidth {result['copy_bandwidth_gbps']:.1f} GB/s, "
        f"particles of {result.get('particle_size', '?')} elements"
    )
    return harness.format_table(title, columns, result["rows"])


# --- particle-size sweep --------------------------------------------------------------------

SWEEP_SIZES = (1, 2, 3, 4, 5, 8, 16, 17, 32, 64, 100, 1024)


def run_d_sweep(
    numel: int = 2**24,
    particle_sizes=SWEEP_SIZES,
    dtypes=(torch.float32, torch.bfloat16),
    device: torch.device = torch.device("cpu"),
    backend: str = "cpp",
    quick: bool = False,
) -> dict:
    """langevin_step and the normal fill at every particle size D, in one run.

    For each D and dtype, x and score of about ``numel`` elements as (numel // D, D): eager
    ``x + a*s + b*randn_like(x)``, the fused step out of place, in place, and in place with
    ``noise_scale=0`` (the memory-bound floor: same traffic, no noise), and the normals alone
    (``scorefast.normal`` against ``torch.randn``), their calls interleaved
    (``harness.time_fns_interleaved``). The ratios the kernels aim at:
    ``in_place_vs_no_noise`` (in place over the noise-free call) and ``speedup_vs_eager``.
    """
    from scorefast import langevin_step_, normal

    min_time = 0.05 if quick else 0.3
    a, b = STEP_SIZE, NOISE_SCALE
    rows = []
    for dtype in dtypes:
        for D in particle_sizes:
            shape = (max(1, numel // D), D)
            x = torch.randn(shape, device=device).to(dtype)
            s = torch.randn(shape, device=device).to(dtype)
            step = [0]

            def fused(inplace, noise, step=step):
                step[0] += 1
                kw = dict(step_size=a, noise_scale=b if noise else 0.0, seed=7, step=step[0], backend=backend)
                return langevin_step_(x, s, **kw) if inplace else langevin_step(x, s, **kw)

            # interleaved: a busy host's slow spells fall on every provider alike
            times = harness.time_fns_interleaved(
                {
                    "eager": lambda: eager_langevin(x, s, a, b),
                    "out_of_place": lambda: fused(False, True),
                    "in_place": lambda: fused(True, True),
                    "in_place_no_noise": lambda: fused(True, False),
                    "normal": lambda: normal(shape, seed=7, step=1, dtype=dtype, device=device, backend=backend),
                    "torch.randn": lambda: torch.randn(shape, dtype=dtype, device=device),
                },
                device,
                min_time=min_time,
            )
            med = {k: v["median"] for k, v in times.items()}
            rows.append(
                {
                    "dtype": str(dtype).removeprefix("torch."),
                    "D": D,
                    "numel": shape[0] * D,
                    "times": times,
                    "speedup_vs_eager": med["eager"] / med["out_of_place"],
                    "in_place_vs_no_noise": med["in_place"] / med["in_place_no_noise"],
                    "normal_vs_randn": med["torch.randn"] / med["normal"],
                }
            )
    return {"op": "langevin_step D sweep", **harness.run_info(device), "backend": backend, "rows": rows}


def format_d_sweep(result: dict) -> str:
    ms = lambda k: lambda r: f"{r['times'][k]['median'] * 1e3:.2f}"  # noqa: E731
    columns = [
        harness.Column("dtype", 9, lambda r: r["dtype"]),
        harness.Column("D", 5, lambda r: str(r["D"])),
        harness.Column("eager ms", 9, ms("eager")),
        harness.Column("out ms", 8, ms("out_of_place")),
        harness.Column("x eager", 8, lambda r: f"{r['speedup_vs_eager']:.1f}"),
        harness.Column("inplace ms", 11, ms("in_place")),
        harness.Column("b=0 ms", 8, ms("in_place_no_noise")),
        harness.Column("in/b=0", 7, lambda r: f"{r['in_place_vs_no_noise']:.2f}"),
        harness.Column("normal ms", 10, ms("normal")),
        harness.Column("randn ms", 9, ms("torch.randn")),
    ]
    n = result["rows"][0]["numel"] if result["rows"] else 0
    title = f"langevin_step ({result['backend']}) by particle size D, ~{n} elements, on {result['machine']}"
    return harness.format_table(title, columns, result["rows"])
