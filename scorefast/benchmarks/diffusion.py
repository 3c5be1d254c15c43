"""Diffusion benchmarks: the VP training step and one scheduler step, fused against the eager
diffusers-style code and torch.compile of it, in one run.

* VP training step (no model): x_t = sqrt(abar_t) x + sqrt(1 - abar_t) z and the epsilon loss
  of a prediction ``pred`` (a leaf standing for the model's output) with its backward. Eager is
  what diffusers' training scripts write: ``noise = randn_like(x)``, ``add_noise`` and
  ``F.mse_loss(pred, noise)``; fused is ``dsm_vp_perturb`` + ``dsm_vp_loss`` (the noise
  regenerated in the kernels, never stored). The two losses differ by the constant factor D (a
  mean over elements against a per-sample sum); the work is the same. Time and peak extra
  memory per provider.
* Scheduler step: diffusers' ``DDPMScheduler.step`` and ``ScoreSdeVeScheduler.step_pred`` /
  ``step_correct`` against scorefast.integrations.diffusers' on the same inputs, with a
  generator (diffusers' noise) and, for the fused schedulers, the counter-based noise drawn
  in the kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import harness
from .dsm import _peak_extra_bytes_cuda, peak_extra_bytes

SHAPES = [(64, 3, 64, 64), (16, 4, 64, 64)]  # images and latents
TIMESTEPS = 1000


def shapes(quick: bool = False) -> list[tuple[int, ...]]:
    """The (B, C, H, W) cases: SHAPES, or with ``quick`` batches of 2 at a quarter of the size."""
    if not quick:
        return list(SHAPES)
    return [(2, c, h // 4, w // 4) for _, c, h, w in SHAPES]


def _alphas_cumprod(device) -> torch.Tensor:
    """diffusers' default linear schedule (beta 1e-4 .. 0.02 over 1000 steps)."""
    betas = torch.linspace(1e-4, 0.02, TIMESTEPS, dtype=torch.float32)
    return torch.cumprod(1 - betas, 0).to(device)


def eager_vp_step(x, pred, t, alphas_cumprod):
    """The diffusers training-script form: add_noise then F.mse_loss against the noise."""
    noise = torch.randn_like(x)
    ab = alphas_cumprod[t].flatten()
    shape = (-1,) + (1,) * (x.dim() - 1)
    x_t = ab.sqrt().reshape(shape) * x + (1 - ab).sqrt().reshape(shape) * noise
    return x_t, F.mse_loss(pred.float(), noise.float(), reduction="mean")


def _train_fns(x, pred, t, ac, backends, compile_reference):
    from scorefast.dsm_vp import dsm_vp_loss, dsm_vp_perturb, vp_coefficients

    alpha, sigma = vp_coefficients(t, ac, dtype=x.dtype)

    def run(fn):
        def step():
            pred.grad = None
            _, loss = fn()
            loss.backward()

        return step

    fns = {"eager": run(lambda: eager_vp_step(x, pred, t, ac))}
    if compile_reference:
        compiled = torch.compile(eager_vp_step, dynamic=False)
        fns["torch.compile"] = run(lambda: compiled(x, pred, t, ac))
    for name in ["reference", *backends]:

        def fused(name=name):
            x_t = dsm_vp_perturb(x, alpha, sigma, seed=1, step=2, backend=name)
            return x_t, dsm_vp_loss(pred, x, alpha, sigma, seed=1, step=2, backend=name)

        fns[name] = run(fused)
    return fns


def run_train_bench(shapes=SHAPES, device=torch.device("cpu"), backends=None, compile_reference=True, quick=False):
    """Time one VP training step (perturb + epsilon loss + backward) and its peak extra memory."""
    backends = harness.timed_backends(device, "dsm_vp_loss", backends)
    ac = _alphas_cumprod(device)
    rows = []
    for shape in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        pred = torch.randn(shape, generator=g).to(device).requires_grad_(True)
        t = torch.randint(0, TIMESTEPS, (shape[0],), generator=g).to(device)
        times, memory = {}, {}
        for name, fn in _train_fns(x, pred, t, ac, backends, compile_reference).items():
            times[name] = harness.time_fn(fn, device, min_time=0.05 if quick else 0.3)
            memory[name] = peak_extra_bytes(fn) if device.type == "cpu" else _peak_extra_bytes_cuda(fn, device)
        harness.add_speedups(times)
        rows.append({"shape": list(shape), "times": times, "peak_extra_bytes": memory, "input_bytes": 4 * x.numel()})
    return rows


def run_scheduler_bench(shapes=SHAPES, device=torch.device("cpu"), quick=False):
    """Time one DDPM ``step`` and one VE predictor + corrector, diffusers' against the fused ones."""
    import diffusers

    from scorefast.integrations import diffusers as fused

    rows = []
    for shape in shapes:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g).to(device)
        out = torch.randn(shape, generator=g).to(device)
        cases = {}
        ddpm = {"diffusers": diffusers.DDPMScheduler(), "fused": fused.DDPMScheduler().manual_seed(0)}
        ve = {"diffusers": diffusers.ScoreSdeVeScheduler(), "fused": fused.ScoreSdeVeScheduler().manual_seed(0)}
        for s in ve.values():
            s.set_timesteps(100)
            s.set_sigmas(100)
        gen = torch.Generator(device=device)
        for name in ("diffusers", "fused"):
            cases[f"ddpm {name}, generator"] = lambda s=ddpm[name]: s.step(out, 500, x, generator=gen)
            cases[f"ve {name}, generator"] = lambda s=ve[name]: (
                s.step_correct(out, x, generator=gen),
                s.step_pred(out, s.timesteps[50], x, generator=gen),
            )
        cases["ddpm fused, counter noise"] = lambda s=ddpm["fused"]: s.step(out, 500, x)
        cases["ve fused, counter noise"] = lambda s=ve["fused"]: (
            s.step_correct(out, x),
            s.step_pred(out, s.timesteps[50], x),
        )
        times = {name: harness.time_fn(fn, device, min_time=0.05 if quick else 0.3) for name, fn in cases.items()}
        for kind in ("ddpm", "ve"):
            base = times[f"{kind} diffusers, generator"]["median"]
            for name, t in times.items():
                if name.startswith(kind):
                    t["speedup_vs_diffusers"] = base / t["median"]
        rows.append({"shape": list(shape), "times": times})
    return rows


def run_diffusion_bench(shapes=SHAPES, device=torch.device("cpu"), backends=None, compile_reference=True, quick=False):
    """Both benchmarks; returns the result dict (bench/results/diffusion-*.json)."""
    return {
        "op": "diffusion (VP training step; scheduler steps)",
        **harness.run_info(device),
        "train_step": run_train_bench(shapes, device, backends, compile_reference, quick),
        "scheduler_step": run_scheduler_bench(shapes, device, quick),
    }


def format_table(result: dict) -> str:
    rows = result["train_step"]
    provs = list(rows[0]["times"]) if rows else []
    shape = harness.Column("shape", 16, lambda r: "x".join(map(str, r["shape"])))
    columns = [shape]
    columns += [harness.Column(p + " ms", 16, lambda r, p=p: f"{r['times'][p]['median'] * 1e3:.2f}") for p in provs]
    columns.append(harness.Column("peak extra MB:", 16, lambda r: ""))
    columns += [harness.Column(p, 10, lambda r, p=p: f"{r['peak_extra_bytes'][p] / 2**20:.1f}") for p in provs]
    title = f"VP training step (perturb + eps loss + backward) on {result['machine']}, torch {result['torch']}"
    text = harness.format_table(title, columns, rows)
    srows = result["scheduler_step"]
    cases = list(srows[0]["times"]) if srows else []
    columns = [shape]
    columns += [harness.Column(c, 28, lambda r, c=c: _cell(r["times"][c])) for c in cases]
    return text + "\n" + harness.format_table("Scheduler step, ms (x vs diffusers)", columns, srows)


def _cell(t: dict) -> str:
    return f"{t['median'] * 1e3:.2f} ({t['speedup_vs_diffusers']:.1f}x)"
