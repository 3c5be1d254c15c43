"""reverse_step and snr_corrector_step against their float64 references."""

from __future__ import annotations

import torch

from ... import diffusion as api
from ...ops import diffusion as ref
from ..budgets import Comparison, compare, mismatch
from ..diffusion_budgets import corrector_tolerance, reverse_step_tolerance
from ._common import PARTICLE_OFFSET, SEED, STEP, Size, Variant, randn

REVERSE_VARIANTS = {
    "plain": Variant({}),
    "per_particle": Variant({"per_particle": True}),
    "guided_clip_clamp": Variant({"guidance": 2.5, "max_score_norm": 0.5, "clamp": (-0.3, 0.4)}),
    "explicit_noise": Variant({"explicit_noise": True}),
    "inplace": Variant({"inplace": True}),
}
CORRECTOR_VARIANTS = {
    "per_sample": Variant({}),
    "batch_mean": Variant({"batch_mean": True}),
    "guided_clamp": Variant({"guidance": 1.5, "clamp": (-1.0, 1.0)}),
    "explicit_noise": Variant({"explicit_noise": True}),
    "inplace": Variant({"inplace": True}),
}


def check_reverse(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    guidance: float | None = None,
    clamp=None,
    max_score_norm=None,
    per_particle: bool = False,
    explicit_noise: bool = False,
    inplace: bool = False,
) -> Comparison:
    """One reverse_step (c_x = 0.98, c_s = -0.3, b = 0.2, or per-particle (P,) tensors of either
    sign for c_x and c_s) on x (particles, dim) in ``dtype`` against the float64 reference."""
    g = torch.Generator().manual_seed(2)
    P, D = size.particles, size.dim
    x, s = randn((P, D), dtype, device, g), randn((P, D), dtype, device, g)
    kw: dict = {"clamp": clamp, "max_score_norm": max_score_norm}
    if guidance is not None:
        kw.update(score_cond=randn((P, D), dtype, device, g), guidance=guidance)
    coefs = {"x_coef": 0.98, "score_coef": -0.3, "noise_scale": 0.2}
    if per_particle:
        coefs = {
            "x_coef": 0.5 + torch.rand(P, generator=g, dtype=torch.float64),
            "score_coef": torch.rand(P, generator=g, dtype=torch.float64) * 2 - 1,
            "noise_scale": torch.rand(P, generator=g, dtype=torch.float64),
        }
    kw.update({k: v.to(device) if per_particle else v for k, v in coefs.items()})
    if explicit_noise:
        kw["noise"] = randn((P, D), dtype, device, g)
    else:
        kw.update(seed=SEED, step=STEP, particle_offset=PARTICLE_OFFSET)
    if inplace:
        out = x.clone()
        with torch.no_grad():
            if api.reverse_step_(out, s, backend=backend, **kw) is not out:
                return mismatch("reverse_step_ did not return x itself")
    else:
        out = api.reverse_step(x, s, backend=backend, **kw)
    if out.dtype != dtype or out.shape != x.shape:
        return mismatch(f"result {out.dtype} {list(out.shape)}, expected {dtype} {list(x.shape)}")
    sc = kw.get("score_cond")
    cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
    lo, hi = clamp if clamp is not None else (None, None)
    expected = ref.reverse_step_ref(
        x.cpu().double(),
        s.cpu().double(),
        score_coef=coefs["score_coef"],
        x_coef=coefs["x_coef"],
        noise_scale=coefs["noise_scale"],
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
    tol = reverse_step_tolerance(
        x.cpu(),
        s.cpu(),
        cpu(sc),
        1.0 if guidance is None else guidance,
        coefs["x_coef"],
        coefs["score_coef"],
        coefs["noise_scale"],
        expected,
        dtype,
        noise_from_contract=not explicit_noise,
    )
    return compare(out, expected, tol)


def check_corrector(
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    size: Size,
    *,
    snr: float = 0.16,
    batch_mean: bool = False,
    guidance: float | None = None,
    clamp=None,
    explicit_noise: bool = False,
    inplace: bool = False,
) -> Comparison:
    """One snr_corrector_step on x (particles, dim) in ``dtype`` against the float64 reference:
    the step sizes and the result, each within its budget."""
    g = torch.Generator().manual_seed(3)
    P, D = size.particles, size.dim
    x, s = randn((P, D), dtype, device, g), randn((P, D), dtype, device, g)
    kw: dict = dict(snr=snr, batch_mean=batch_mean, clamp=clamp)
    if explicit_noise:
        kw["noise"] = randn((P, D), dtype, device, g)
    else:
        kw.update(seed=SEED, step=STEP, particle_offset=PARTICLE_OFFSET)
    if guidance is not None:
        kw.update(score_cond=randn((P, D), dtype, device, g), guidance=guidance)
    if inplace:
        out = x.clone()
        with torch.no_grad():
            returned, eps = api.snr_corrector_step_(out, s, backend=backend, **kw)
        if returned is not out:
            return mismatch("snr_corrector_step_ did not return x itself")
    else:
        out, eps = api.snr_corrector_step(x, s, backend=backend, **kw)
    if out.dtype != dtype or out.shape != x.shape or eps.shape != (P,):
        return mismatch(f"result {out.dtype} {list(out.shape)} and {list(eps.shape)}, expected {dtype} {list(x.shape)}")
    sc = kw.get("score_cond")
    sc64 = None if sc is None else sc.cpu().double()
    lo, hi = clamp if clamp is not None else (None, None)
    w = 1.0 if guidance is None else guidance
    noise = kw.get("noise")
    expected, expected_eps = ref.snr_corrector_step_ref(
        x.cpu().double(),
        s.cpu().double(),
        snr=snr,
        batch_mean=batch_mean,
        score_cond=sc64,
        guidance=w,
        noise=None if noise is None else noise.cpu().double(),
        seed=SEED,
        step=STEP,
        particle_offset=PARTICLE_OFFSET,
        clamp_min=lo,
        clamp_max=hi,
    )
    sc_cpu = None if sc is None else sc.cpu()
    tol, eps_tol = corrector_tolerance(
        x.cpu(), s.cpu(), sc_cpu, w, batch_mean, SEED, STEP, PARTICLE_OFFSET, expected, expected_eps, dtype, noise
    )
    steps = compare(eps, expected_eps, eps_tol, "step sizes")
    return steps if not steps.ok else compare(out, expected, tol)
