"""langevin_step against its float64 reference: every feature of the fused step."""

from __future__ import annotations

import math

import torch

from ... import langevin as api
from ...ops import langevin as ref
from ..budgets import Comparison, compare, langevin_tolerance, mismatch
from ._common import PARTICLE_OFFSET, SEED, STEP, Size, Variant, randn

NAME = "langevin_step"
VARIANTS = {
    "plain": Variant({}),
    "guidance": Variant({"guidance": 2.5}),
    "clamp": Variant({"step_size": 0.5, "clamp": (-0.3, 0.4)}),
    "clip": Variant({"max_score_norm": 0.5}),
    "per_particle": Variant({"per_particle": True}),
    "explicit_noise": Variant({"explicit_noise": True}),
    "inplace": Variant({"inplace": True}),
    "step_tensor": Variant({"step_tensor": True}, kernel="langevin_step_counter_"),
}


def check(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    step_size: float = 0.05,
    noise_scale: float | None = None,
    guidance: float | None = None,
    clamp=None,
    max_score_norm=None,
    per_particle: bool = False,
    explicit_noise: bool = False,
    inplace: bool = False,
    step_tensor: bool = False,
) -> Comparison:
    """One call of langevin_step on x (particles, dim) in ``dtype`` against the float64 reference.

    Options: step_size a and noise_scale b (default sqrt(2a)); guidance w (adds a conditional
    score); clamp (min, max); max_score_norm; per_particle: a and b as (P,) tensors;
    explicit_noise: noise= instead of the contract's; inplace: langevin_step_; step_tensor: the
    step as a one-element int64 tensor.
    """
    g = torch.Generator().manual_seed(1)
    P, D = size.particles, size.dim
    x, s = randn((P, D), dtype, device, g), randn((P, D), dtype, device, g)
    kw: dict = {"clamp": clamp, "max_score_norm": max_score_norm}
    if guidance is not None:
        kw.update(score_cond=randn((P, D), dtype, device, g), guidance=guidance)
    a, b = step_size, math.sqrt(2 * step_size) if noise_scale is None else noise_scale
    if per_particle:
        a = torch.rand(P, generator=g, dtype=torch.float64) * 2 * step_size
        b = torch.rand(P, generator=g, dtype=torch.float64) * 0.5
    kw.update(step_size=a.to(device) if per_particle else a, noise_scale=b.to(device) if per_particle else b)
    if explicit_noise:
        kw["noise"] = randn((P, D), dtype, device, g)
    else:
        step = torch.tensor([STEP], dtype=torch.int64, device=device) if step_tensor else STEP
        kw.update(seed=SEED, step=step, particle_offset=PARTICLE_OFFSET)
    if inplace:
        out = x.clone()
        with torch.no_grad():
            returned = api.langevin_step_(out, s, backend=backend, **kw)
        if returned is not out:
            return mismatch("langevin_step_ did not return x itself")
    else:
        out = api.langevin_step(x, s, backend=backend, **kw)
    if out.dtype != dtype or out.shape != x.shape:
        return mismatch(
            f"result {out.dtype} {list(out.shape)}, expected {dtype} {list(x.shape)}",
        )
    sc = kw.get("score_cond")
    cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
    lo, hi = clamp if clamp is not None else (None, None)
    expected = ref.langevin_step_ref(
        x.cpu().double(),
        s.cpu().double(),
        step_size=cpu(a) if per_particle else a,
        noise_scale=cpu(b) if per_particle else b,
        score_cond=None if sc is None else sc.cpu().double(),
        guidance=1.0 if guidance is None else guidance,
        noise=None if not explicit_noise else kw["noise"].cpu().double(),
        seed=SEED,
        step=STEP,
        particle_offset=PARTICLE_OFFSET,
        clamp_min=lo,
        clamp_max=hi,
        max_score_norm=max_score_norm,
        compute_dtype=torch.float64,
    )
    tol = langevin_tolerance(
        x.cpu(),
        s.cpu(),
        cpu(sc),
        1.0 if guidance is None else guidance,
        cpu(a) if per_particle else a,
        cpu(b) if per_particle else b,
        expected,
        dtype,
        noise_from_contract=not explicit_noise,
    )
    return compare(out, expected, tol)
