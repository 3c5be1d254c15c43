"""DSM benchmark: forward + backward time and peak extra memory of the fused ops against the
eager PyTorch DSM step users write, torch.compile of it, and the reference, in one run.

Each provider does one DSM step without a model: perturb x (x_tilde = x + sigma z), the loss
of a prediction ``pred`` (a leaf standing for the model's output) and its backward. Peak
extra memory is the highest running total of bytes allocated by the step's ops (PyTorch
profiler, CPU), beyond the inputs.
"""
from __future__ import annotations

import datetime

import torch

from . import backend_registry
from .benchmark import machine_name, time_fn
from .dsm import dsm_loss, dsm_perturb
from .reference.dsm import dsm_loss_ref, dsm_perturb_ref

SHAPES = [(4096, 2), (256, 3 * 32 * 32), (64, 3 * 64 * 64)]


def eager_dsm(x, pred, sigma):
    """What users write: z from randn_like, stored for the backward."""
    z = torch.randn_like(x)
    x_tilde = x + sigma[:, None] * z
    loss = 0.5 * (sigma**2 * ((pred + z / sigma[:, None]) ** 2).sum(1)).mean()
    return x_tilde, loss


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
        fns[name] = run(lambda name=name: (dsm_perturb(x, sigma, seed=1, step=2, backend=name),
                                           dsm_loss(pred, x, sigma, seed=1, step=2, backend=name)))
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


def run_dsm_bench(shapes=SHAPES, device=torch.device("cpu"), backends=None, compile_reference=True,
                  quick: bool = False) -> dict:
    if backends is None:
        backends = [n for n in backend_registry.NAMES
                    if n != "reference" and backend_registry.status(n).available
                    and device.type in backend_registry.status(n).devices
                    and backend_registry.has_op(n, "dsm_loss")
                    and not backend_registry.is_emulated(n, device.type)]
    rows = []
    for B, D in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(B, D, generator=g).to(device)
        pred = torch.randn(B, D, generator=g).to(device).requires_grad_(True)
        sigma = (0.1 + torch.rand(B, generator=g)).to(device)
        fns = _step_fns(x, pred, sigma, backends, compile_reference)
        times, memory = {}, {}
        for name, fn in fns.items():
            times[name] = time_fn(fn, device, min_time=0.05 if quick else 0.3)
            if device.type == "cpu":
                memory[name] = peak_extra_bytes(fn)
            else:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                fn()
                torch.cuda.synchronize(device)
                memory[name] = torch.cuda.max_memory_allocated(device) - base
        for name, t in times.items():
            t["speedup_vs_eager"] = times["eager"]["median"] / t["median"]
            if "torch.compile" in times:
                t["speedup_vs_compile"] = times["torch.compile"]["median"] / t["median"]
        rows.append({"B": B, "D": D, "times": times, "peak_extra_bytes": memory,
                     "input_bytes": x.numel() * x.element_size()})
    return {
        "op": "dsm_loss (perturb + loss + backward)",
        "machine": machine_name(device),
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "providers": list(rows[0]["times"]) if rows else [],
        "rows": rows,
    }


def format_table(result: dict) -> str:
    provs = result["providers"]
    lines = [f"DSM step (perturb + loss + backward) on {result['machine']}, torch {result['torch']}",
             f"{'B x D':>14} " + " ".join(f"{p + ' ms':>16}" for p in provs) + "   peak extra MB: "
             + " ".join(f"{p:>10}" for p in provs)]
    for row in result["rows"]:
        t, m = row["times"], row["peak_extra_bytes"]
        lines.append(f"{row['B']:>6} x {row['D']:<6} " + " ".join(f"{t[p]['median'] * 1e3:16.3f}" for p in provs)
                     + "                  " + " ".join(f"{m[p] / 2**20:10.2f}" for p in provs))
    return "\n".join(lines)
