"""gmm_chain: whole Langevin chains for Gaussian-mixture targets in one fused op.

``<ns>::gmm_chain_`` runs T steps for every particle with the state kept local between
steps (csrc/include/scorefast/chain.h): ULA with a step-size schedule, annealed Langevin
(Song & Ermon 2019: levels sigma_1 > ... > sigma_L, T steps each, a_i = epsilon sigma_i^2 /
sigma_L^2, the score of the sigma_i-noised mixture), or MALA with per-particle acceptance
counts. The noise follows the contract: the chain equals T calls of langevin_step with
gmm_score in between, whatever the chunking of particles. Kernels: C++ (CPU), numba
(kernels/numba/chain.py) and Triton (kernels/triton/chain.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _checks
from . import backend_registry as backends
from .gmm import gmm_score
from .noise import random_seed
from .reference.chain import gmm_chain_ref


class ChainResult(NamedTuple):
    """x (N, D) after the chain; accepted (N,) int64 MALA acceptances (None otherwise);
    trajectory (T // k, N, D) of every k-th state (None without trajectory_every)."""

    x: torch.Tensor
    accepted: torch.Tensor | None
    trajectory: torch.Tensor | None


def _schedule(method, steps, step_size, sigmas, steps_per_level, epsilon):
    """(step sizes [T], noise levels [T] or None) as float64 lists."""
    if method in ("ula", "mala"):
        if isinstance(step_size, torch.Tensor):
            a = [float(v) for v in step_size.flatten()]
            if steps is not None and steps != len(a):
                raise ValueError(f"steps ({steps}) must equal the length of the step_size schedule ({len(a)})")
        else:
            if steps is None:
                raise TypeError("steps is required with a scalar step_size")
            a = [_checks.check_real(step_size, "step_size", positive=True)] * _checks.check_int(
                steps, "steps", 0, 2**32 - 1
            )
        if any(not (v > 0) for v in a):
            raise ValueError("step sizes must be > 0")
        return a, None
    if method != "annealed":
        raise ValueError(f"method must be 'ula', 'annealed' or 'mala', got {method!r}")
    if sigmas is None:
        raise TypeError("annealed needs sigmas (decreasing noise levels)")
    sig = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    if not sig or any(not (v > 0) for v in sig) or any(a <= b for a, b in zip(sig, sig[1:])):
        raise ValueError("sigmas must be positive and strictly decreasing")
    T = _checks.check_int(steps_per_level, "steps_per_level", 1, 2**31)
    eps = _checks.check_real(epsilon, "epsilon", positive=True)
    a = [eps * s**2 / sig[-1] ** 2 for s in sig for _ in range(T)]
    return a, [s for s in sig for _ in range(T)]


def gmm_chain(
    x: torch.Tensor,
    mixture,
    *,
    method: str = "ula",
    steps: int | None = None,
    step_size=None,
    sigmas=None,
    steps_per_level: int = 100,
    epsilon: float = 2e-5,
    final_denoise: bool = False,
    seed: int | None = None,
    step_offset: int = 0,
    particle_offset: int = 0,
    trajectory_every: int = 0,
    backend: str = "auto",
) -> ChainResult:
    """Run a whole Langevin chain on a Gaussian-mixture target.

    Args:
        x: start (N, D), float32 or float64 (16-bit storage works, math in float32). Not modified.
        mixture: a scorefast.targets.GaussianMixture.
        method: 'ula' (x + a s + sqrt(2a) z), 'annealed' or 'mala'.
        steps, step_size: ULA/MALA: T and a float a, or a (T,) schedule tensor (steps optional).
        sigmas, steps_per_level, epsilon: annealed: levels sigma_1 > ... > sigma_L, T steps
            each, a_i = epsilon sigma_i^2 / sigma_L^2.
        final_denoise: annealed: finish with x + sigma_L^2 s(x; sigma_L).
        seed, step_offset, particle_offset: the noise counter; step t of the chain uses the
            contract's step ``step_offset + t`` (as langevin_step(..., step=step_offset + t)).
        trajectory_every: k > 0 records the state after every k-th step.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'numba' or 'triton' (D <= 256 there).

    Returns:
        ChainResult(x, accepted, trajectory).
    """
    _checks.check_float_tensor(x, "x", min_dim=2)
    if x.dim() != 2 or x.shape[1] != getattr(mixture, "dim", -1):
        raise ValueError(f"x must have shape (N, D) with D = the mixture's dimension, got {list(x.shape)}")
    if not _checks.is_mixture(mixture):
        raise TypeError(f"mixture must be a scorefast.targets.GaussianMixture, got {type(mixture).__name__}")
    a, sig = _schedule(method, steps, step_size, sigmas, steps_per_level, epsilon)
    T = len(a)
    k = _checks.check_int(trajectory_every, "trajectory_every", 0, 2**31)
    seed = random_seed() if seed is None else seed
    seed64 = _checks.seed_to_int64(seed)
    step_offset, particle_offset = _checks.check_counter(step_offset, particle_offset, x.shape[0])
    if step_offset + T - 1 > _checks.MAX_STEP:
        raise ValueError("step_offset + number of steps must stay below 2^32")
    mala = method == "mala"
    name = backends.resolve(backend, x.device, "gmm_chain_")
    if name == "reference":
        out, accepted, traj = gmm_chain_ref(
            x,
            mixture,
            a,
            sig,
            mala=mala,
            seed=seed,
            step_offset=step_offset,
            particle_offset=particle_offset,
            trajectory_every=k,
        )
    else:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        p = mixture.kernel_params(acc, x.device, None, per_point=True)
        out = x.contiguous().clone()
        traj = x.new_empty((T // k, *x.shape)) if k else None
        accepted = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device) if mala else None
        backends.op_namespace(name).gmm_chain_(
            out,
            p["means"],
            p["var"],
            p["log_const"],
            p["factor"],
            torch.tensor(a, dtype=acc, device=x.device),
            torch.tensor([0.0] * T if sig is None else [s * s for s in sig], dtype=acc, device=x.device),
            mala,
            seed64,
            step_offset,
            particle_offset,
            k,
            traj,
            accepted,
        )
    if not mala:
        accepted = None
    if final_denoise and method == "annealed":
        out = (
            out
            + sig[-1] ** 2
            * gmm_score(out, mixture, sigma=sig[-1], backend=backend if name != "reference" else "reference")[0]
        )
    return ChainResult(out, accepted, traj)
