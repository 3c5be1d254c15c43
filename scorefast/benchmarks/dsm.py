"""DSM benchmark: forward + backward time and peak extra memory of the fused ops against the
eager PyTorch DSM step users write (baselines.eager_dsm), torch.compile of it, and the
reference, in one run.

Each provider does one DSM step without a model: perturb x (x_tilde = x + sigma z), the loss
of a prediction ``pred`` (a leaf standing for the model's output) and its backward. Peak
extra memory is the highest running total of bytes allocated by the step's ops (PyTorch
profiler, CPU; the CUDA allocator's peak on GPUs), beyond the inputs.
"""

from __future__ import annotations

import torch

from scorefast import dsm_loss, dsm_perturb
from scorefast.ops.dsm import dsm_loss_ref, dsm_perturb_ref

from . import harness
from .baselines import eager_dsm

SHAPES = [(4096, 2), (256, 3 * 32 * 32), (64, 3 * 64 * 64)]


def shapes(quick: bool = False) -> list[tuple[int, int]]:
    """The (B, D) cases: SHAPES, or with ``quick`` 8x smaller batches (at least 8)."""
    if not quick:
        return list(SHAPES)
    return [(max(8, b // 8), d) for b, d in SHAPES]


def _step_fns(x, pred, sigma, backends, compile_reference):
    def run(fn):
        def step():
            pred.grad = None
            _, loss = fn()
            loss.backward()

        return step

    fns = {"eager": run(lambda: eager_dsm(x, pred, sigma))}
    if compile_reference:
        compiled = torch.compile(eager_dsm, dynamic=False)
        fns["torch.compile"] = run(lambda: compiled(x, pred, sigma))
    fns["reference"] = run(lambda: (dsm_perturb_ref(x, sigma, 1, 2), dsm_loss_ref(pred, sigma, 1, 2)))
    for name in backends:
        fns[name] = run(
            lambda name=name: (
                dsm_perturb(x, sigma, seed=1, step=2, backend=name),
                dsm_loss(pred, x, sigma, seed=1, step=2, backend=name),
            )
        )
    return fns


def peak_extra_bytes(fn) -> int:
    """Highest running total of bytes allocated while ``fn`` runs (CPU, PyTorch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm up (compilation, caches)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    total = peak = 0
    for e in events:
        total += e.self_cpu_memory_usage
        peak = max(peak, total)
    return int(peak)


def _peak_extra_bytes_cuda(fn, device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def run_dsm_bench(
    shapes=SHAPES, device=torch.device("cpu"), backends=None, compile_reference=True, quick: bool = False
) -> dict:
    """Time one DSM step (perturb + loss + backward) and measure its peak extra memory.

    shapes: (B, D) cases of float32 x and pred, sigma (B,) in [0.1, 1.1); backends: names,
    or None for every backend with a native dsm_loss kernel on ``device``. ``quick``: 0.05 s
    of timed calls per provider instead of 0.3 s.

    Returns the result dict (JSON fields as in bench/results/dsm_loss-*.json): per row B, D,
    input_bytes, peak_extra_bytes per provider and per provider the times with
    speedup_vs_eager and speedup_vs_compile.
    """
    backends = harness.timed_backends(device, "dsm_loss", backends)
    rows = []
    for B, D in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, D, generator=g).to(device)
        pred = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
        sigma = (0.1 + torch.rand(B, generator=g)).to(device)
        fns = _step_fns(x, pred, sigma, backends, compile_reference)
        times, memory = {}, {}
        for name, fn in fns.items():
            times[name] = harness.time_fn(fn, device, min_time=0.05 if quick else 0.3)
            memory[name] = peak_extra_bytes(fn) if device.type == "cpu" else _peak_extra_bytes_cuda(fn, device)
        harness.add_speedups(times)
        rows.append(
            {"B": B, "D": D, "times": times, "peak_extra_bytes": memory, "input_bytes": x.numel() * x.element_size()}
        )
    return {
        "op": "dsm_loss (perturb + loss + backward)",
        **harness.run_info(device),
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def format_table(result: dict) -> str:
    """Milliseconds per provider, then each provider's peak extra memory in MiB."""
    provs = result["providers"]
    columns = [harness.Column("B x D", 14, lambda r: f"{r['B']:>6} x {r['D']:<6}")]
    columns += [harness.Column(p + " ms", 16, lambda r, p=p: f"{r['times'][p]['median'] * 1e3:.3f}") for p in provs]
    columns.append(harness.Column("peak extra MB:", 16, lambda r: ""))  # labels the memory columns
    columns += [harness.Column(p, 10, lambda r, p=p: f"{r['peak_extra_bytes'][p] / 2**20:.2f}") for p in provs]
    title = f"DSM step (perturb + loss + backward) on {result['machine']}, torch {result['torch']}"
    return harness.format_table(title, columns, result["rows"])
