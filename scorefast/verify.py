"""Self-check: every available backend against the reference, on this machine.

Philox words must be bit-identical; normals within r·1e-6 of the reference (r the
Box-Muller radius: libm rounding of two float32 implementations); langevin_step within
the float32 error budget of the float64 reference on the same inputs and noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import backend_registry
from .langevin import langevin_step
from .noise import normal, philox_words
from .reference.langevin import langevin_step_ref
from .reference.noise import normal_ref, philox_words_ref

_U32 = 2.0**-24
_MAX_RADIUS = math.sqrt(-2.0 * math.log(1e-7))
_NOISE_REL_TOL = 1e-6


@dataclass
class Check:
    backend: str
    what: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.backend:<8} {self.what:<26} {self.detail}"


def _device_of(name: str) -> torch.device | None:
    s = backend_registry.status(name)
    if not s.available:
        return None
    if "cuda" in s.devices and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device(s.devices[0])


def verify_backend(name: str, particles: int = 257, dim: int = 67, seed: int = 2**63 + 12345,
                   step: int = 7, particle_offset: int = 2**32 - 3) -> list[Check]:
    """Compare backend ``name`` with the reference; particle ids straddle 2^32 on purpose."""
    device = _device_of(name)
    checks = []
    q = (dim + 3) // 4
    words = philox_words(particles, q, seed=seed, step=step, particle_offset=particle_offset,
                         device=device, backend=name).cpu()
    words_ref = philox_words_ref(particles, q, seed, step, particle_offset)
    same = torch.equal(words, words_ref)
    checks.append(Check(name, "philox words", same, "bit-identical" if same else
                        f"{int((words != words_ref).sum())} words differ"))

    z = normal((particles, dim), seed=seed, step=step, particle_offset=particle_offset,
               device=device, backend=name).cpu().double()
    z_ref = normal_ref(particles, dim, seed, step, particle_offset).double()
    err = ((z - z_ref).abs() / z_ref.abs().clamp(min=1.0)).max().item() if z.numel() else 0.0
    ok = err <= _NOISE_REL_TOL * _MAX_RADIUS
    checks.append(Check(name, "normals", ok, f"max rel error {err:.2e}"))

    g = torch.Generator().manual_seed(1)
    x = torch.randn(particles, dim, generator=g, dtype=torch.float64)
    s = torch.randn(particles, dim, generator=g, dtype=torch.float64)
    a, b = 0.013, 0.17
    out = langevin_step(x.float().to(device), s.float().to(device), step_size=a, noise_scale=b,
                        seed=seed, step=step, particle_offset=particle_offset, backend=name).cpu().double()
    ref = langevin_step_ref(x.float().double(), s.float().double(), step_size=a, noise_scale=b, seed=seed,
                            step=step, particle_offset=particle_offset)
    tol = 8 * _U32 * (x.abs() + a * s.abs() + b * _MAX_RADIUS) + b * _NOISE_REL_TOL * _MAX_RADIUS
    tol = tol + ref.abs() * 2.0**-23
    bad = int(((out - ref).abs() > tol).sum())
    checks.append(Check(name, "langevin_step float32", bad == 0,
                        f"max |err| {(out - ref).abs().max().item():.2e}" + (f", {bad} over budget" if bad else "")))
    return checks


def verify_all(particles: int = 257, dim: int = 67) -> list[Check]:
    """Checks for every available compiled backend (the reference defines the answers)."""
    results = []
    for name in backend_registry.NAMES:
        if name == "reference":
            continue
        s = backend_registry.status(name)
        if not s.available:
            continue
        if name == "triton" and backend_registry.triton_interpreting() and not torch.cuda.is_available():
            particles_, dim_ = min(particles, 9), min(dim, 13)  # interpreter: tiny shapes
        else:
            particles_, dim_ = particles, dim
        results.extend(verify_backend(name, particles_, dim_))
    return results
