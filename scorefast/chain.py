"""gmm_chain: whole Langevin chains for Gaussian-mixture targets in one fused op.

``<ns>::gmm_chain_`` runs T steps for every particle with the state kept local between
steps (csrc/include/scorefast/chain.h): ULA with a step-size schedule, annealed Langevin
(Song & Ermon 2019: levels sigma_1 > ... > sigma_L, T steps each, a_i = epsilon/2 sigma_i^2 /
sigma_L^2 with NCSN's epsilon, the score of the sigma_i-noised mixture), or MALA with per-particle acceptance
counts. The noise follows the contract: the chain equals T calls of langevin_step with
gmm_score in between, whatever the chunking of particles. Kernels: C++ (CPU), numba
(kernels/numba/chain.py) and Triton (kernels/triton/chain.py).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch

from . import _checks, _float_range
from . import backend_registry as backends
from .checkpoint import ChainCheckpoint
from .gmm import gmm_score
from .noise import random_seed, resolve_seed
from .ops._common import acc_dtype
from .ops.chain import gmm_chain_ref


class ChainResult(NamedTuple):
    """x (N, D) after the chain; accepted (N,) int64 MALA acceptances (None otherwise);
    trajectory (T // k, N, D) of every k-th state (None without trajectory_every)."""

    x: torch.Tensor
    accepted: torch.Tensor | None
    trajectory: torch.Tensor | None


# Chains run in calls of at most this many steps, so that the schedule handed to the kernels
# (and the C++ per-step tables) take memory bounded by it, whatever the number of steps. The
# counter-based noise makes the split invisible: step t uses the contract's step_offset + t.
CHUNK_STEPS = 4096


class _Schedule(NamedTuple):
    """The steps of a chain: runs of (step size, noise level or None, count), or a schedule tensor."""

    runs: list[tuple[float, float | None, int]]
    table: torch.Tensor | None = None  # float64 [T]: a user's step-size schedule

    @property
    def steps(self) -> int:
        return self.table.numel() if self.table is not None else sum(count for _, _, count in self.runs)

    @property
    def last_sigma(self) -> float | None:
        """The last noise level (annealed), None without levels."""
        return self.runs[-1][1] if self.runs else None

    def chunk(self, t0: int, t1: int) -> tuple[list[float], list[float] | None]:
        """(step sizes, noise levels or None) of steps t0 .. t1 - 1, as Python floats."""
        if self.table is not None:
            return self.table[t0:t1].tolist(), None
        a, sig, begin = [], [], 0
        for step_size, sigma, count in self.runs:
            n = min(t1, begin + count) - max(t0, begin)
            if n > 0:
                a += [step_size] * n
                sig += [sigma] * n
            begin += count
        return a, (None if self.last_sigma is None else sig)


def _schedule(method, steps, step_size, sigmas, steps_per_level, epsilon) -> _Schedule:
    if method in ("ula", "mala"):
        if isinstance(step_size, torch.Tensor) and step_size.dim() == 0:
            step_size = step_size.item()
        if isinstance(step_size, torch.Tensor):
            if step_size.dim() != 1:
                raise ValueError(
                    f"step_size must be a float or a 1-D schedule tensor (T,), got shape {list(step_size.shape)}"
                )
            table = step_size.detach().to("cpu", torch.float64)
            if steps is not None and steps != table.numel():
                raise ValueError(f"steps ({steps}) must equal the length of the step_size schedule ({table.numel()})")
            if not bool(torch.isfinite(table).all()) or not bool((table > 0).all()):
                raise ValueError("step_size schedule must be finite and > 0")
            _checks.check_int(table.numel(), "the length of the step_size schedule", 0, 2**32 - 1)
            return _Schedule([], table)
        if steps is None:
            raise TypeError("steps is required with a scalar step_size")
        T, a = _checks.check_constant_schedule(steps, step_size)
        return _Schedule([(a, None, T)])
    if method != "annealed":
        raise ValueError(f"method must be 'ula', 'annealed' or 'mala', got {method!r}")
    if sigmas is None:
        raise TypeError("annealed needs sigmas (decreasing noise levels)")
    sig = _checks.check_sigmas(sigmas)
    T = _checks.check_int(steps_per_level, "steps_per_level", 1, 2**31)
    eps = _checks.check_real(epsilon, "epsilon", positive=True)
    _checks.check_int(T * len(sig), "steps_per_level * len(sigmas)", 1, 2**32 - 1)
    return _Schedule([(eps / 2 * s**2 / sig[-1] ** 2, s, T) for s in sig])


def _schedule_identity(method: str, schedule: _Schedule, steps_per_level, epsilon) -> dict:
    """The settings that fix a chain's steps, as a checkpoint records them."""
    if method == "annealed":
        return {
            "sigmas": [sigma for _, sigma, _ in schedule.runs],
            "steps_per_level": schedule.runs[0][2],
            "epsilon": float(epsilon),
        }
    if schedule.table is not None:
        return {"steps": schedule.steps, "step_size": schedule.table}
    return {"steps": schedule.steps, "step_size": schedule.runs[0][0]}


def _chunks(T: int, every: int):
    """(t0, t1, trajectory_every of the call, the slice of the chain's trajectory its frames fill
    or None) covering 0 .. T - 1, with every frame (the state after a step that is a multiple of
    ``every``) recorded by exactly one call."""
    size = CHUNK_STEPS if every == 0 or every > CHUNK_STEPS else (CHUNK_STEPS // every) * every
    t0 = 0
    while t0 < T:
        t1 = min(T, t0 + size)
        if every > CHUNK_STEPS:  # stop at the next frame; that call records it as its last step
            t1 = min(t1, (t0 // every + 1) * every)
            call_every = t1 - t0 if t1 % every == 0 else 0
        else:  # t0 is a multiple of every: the call's own frames are the chain's
            call_every = every
        frames = slice(t1 // every - (t1 - t0) // call_every, t1 // every) if call_every else None
        yield t0, t1, call_every, frames
        t0 = t1


def _framed(t0: int, t1: int, every: int):
    """Calls covering t0 .. t1 - 1 whose frames are the chain's (the states after the multiples of
    ``every``): (t0, t1, trajectory_every of the call, its slice of the chain's frames or None)."""
    if every == 0 or t1 // every == t0 // every:  # no frame in this stretch
        yield t0, t1, 0, None
        return
    if t0 % every:  # a first call ending at the first frame, which it records as its last step
        first = (t0 // every + 1) * every
        yield t0, first, first - t0, slice(first // every - 1, first // every)
        if first == t1:
            return
        t0 = first
    if t1 // every == t0 // every:
        yield t0, t1, 0, None
    else:
        yield t0, t1, every, slice(t0 // every, t1 // every)


def _calls(T: int, every: int, start: int = 0, cuts: tuple[int, ...] = ()):
    """``_chunks(T, every)`` from step ``start`` on (a resumed chain), with calls also ending at every
    multiple of each k in ``cuts`` (checkpoints, bounded frame buffers)."""
    for c0, c1, _, _ in _chunks(T, every):
        if c1 <= start:
            continue
        c0 = max(c0, start)
        points = {c0, c1}
        for k in cuts:
            if k:
                points.update(range((c0 // k + 1) * k, c1, k))
        points = sorted(points)
        for t0, t1 in zip(points, points[1:]):
            yield from _framed(t0, t1, every)


# Frames recorded in one call for chain diagnostics take at most this many bytes (they are handed to
# the accumulator after the call, never kept).
DIAGNOSTIC_FRAME_BYTES = 64 * 2**20


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
    chain_diagnostics=None,
    checkpoint=None,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> ChainResult:
    """Run a whole Langevin chain on a Gaussian-mixture target.

    Args:
        x: start (N, D), float32 or float64 (16-bit storage works, math in float32). Not modified.
        mixture: a scorefast.targets.GaussianMixture.
        method: 'ula' (x + a s + sqrt(2a) z), 'annealed' or 'mala'.
        steps, step_size: ULA/MALA: T and a float a, or a (T,) schedule tensor (steps optional).
        sigmas, steps_per_level, epsilon: annealed: levels sigma_1 > ... > sigma_L, T steps
            each, a_i = epsilon/2 * sigma_i^2 / sigma_L^2 (NCSN's epsilon: its alpha_i/2).
        final_denoise: annealed: finish with x + sigma_L^2 s(x; sigma_L).
        seed, step_offset, particle_offset: the noise counter; step t of the chain uses the
            contract's step ``step_offset + t`` (as langevin_step(..., step=step_offset + t)).
        trajectory_every: k > 0 records the state after every k-th step.
        backend: 'auto', 'reference', 'cpp', 'cuda', 'numba' or 'triton' (D <= 256 there).
        chain_diagnostics: a scorefast.diagnostics.ChainDiagnostics fed the states after the
            multiples of its ``every`` (recorded in calls of bounded size, never the whole chain);
            with trajectory_every, its ``every`` must be a multiple of trajectory_every.
        checkpoint, checkpoint_every, resume: write the chain's state (particles, next step,
            MALA acceptances, settings, seed, the diagnostics' state) to the file ``checkpoint``
            after every ``checkpoint_every``-th step (0: only at the end), atomically; the final
            state (before final_denoise) is always written. ``resume=True`` continues from the
            file: the result equals the uninterrupted chain's bit for bit (same backend). The
            values of x are then replaced by the checkpoint's (shape and dtype must match);
            other settings than the checkpoint's raise scorefast.checkpoint.CheckpointError, a
            seed of None takes the checkpoint's. Not with trajectory_every and resume (the
            trajectory before the checkpoint is not in it).

    Returns:
        ChainResult(x, accepted, trajectory).

    Range: where float32 math could overflow from the start (a particle far from every mode
    compared with the spread, e.g. |x| = 1e20 for unit variances, or a noise level past 1.8e19;
    see scorefast._float_range), the whole call runs in float64 (states, scores, MALA's
    log-densities), each particle with its own noise stream, and x and trajectory are rounded
    to x's dtype at the end: the float64 chain's result. Not under torch.compile or CUDA-graph
    capture (the decision reads a value back to the host).
    """
    _checks.check_float_tensor(x, "x", min_dim=2)
    if x.dim() != 2 or x.shape[1] != getattr(mixture, "dim", -1):
        raise ValueError(f"x must have shape (N, D) with D = the mixture's dimension, got {list(x.shape)}")
    if not _checks.is_mixture(mixture):
        raise TypeError(f"mixture must be a scorefast.targets.GaussianMixture, got {type(mixture).__name__}")
    schedule = _schedule(method, steps, step_size, sigmas, steps_per_level, epsilon)
    T = schedule.steps
    k = _checks.check_int(trajectory_every, "trajectory_every", 0, 2**31)
    step_offset, particle_offset = _checks.check_counter(step_offset, particle_offset, x.shape[0], x.shape[1])
    if step_offset + T - 1 > _checks.MAX_STEP:
        raise ValueError("step_offset + number of steps must stay below 2^32")
    if k and resume:
        raise ValueError("trajectory_every cannot be combined with resume (the trajectory is not checkpointed)")
    diag = chain_diagnostics
    if diag is not None and not callable(getattr(diag, "update", None)):
        raise TypeError(f"chain_diagnostics must be a ChainDiagnostics, got {type(diag).__name__}")
    if diag is not None and k and diag.every % k:
        raise ValueError(
            f"chain_diagnostics.every ({diag.every}) must be a multiple of trajectory_every ({k}) "
            f"(the diagnostics read the recorded trajectory)"
        )
    storage = x.dtype
    if _float64_needed(x, mixture, schedule):
        x = x.double()  # the whole call in float64, rounded to x's dtype at the end
    ckpt = ChainCheckpoint(
        checkpoint,
        checkpoint_every,
        resume,
        sampler=method,
        x=x,
        total_steps=T,
        settings=dict(
            _schedule_identity(method, schedule, steps_per_level, epsilon),
            seed=seed,
            step_offset=step_offset,
            particle_offset=particle_offset,
        ),
    )
    seed64, seed = resolve_seed(ckpt.seed(random_seed))
    mala = method == "mala"
    name = backends.resolve(backend, x.device, "gmm_chain_")
    N = x.shape[0]
    traj = x.new_empty((T // k, *x.shape)) if k else None
    accepted = torch.zeros(N, dtype=torch.int64, device=x.device) if mala else None
    start = ckpt.step
    if start:
        x = ckpt.tensor("x", x)
        accepted = ckpt.tensor("accepted", accepted)
        ckpt.restore_diagnostics(diag)
    rec = k or (diag.every if diag is not None else 0)  # the call's recording stride
    per_frame = max(1, x.numel() * x.element_size())
    cuts = (ckpt.every, 0 if k or not rec else rec * max(1, DIAGNOSTIC_FRAME_BYTES // per_frame))
    position = (lambda t: {"level": t // steps_per_level}) if method == "annealed" else (lambda t: {})
    if k or diag is None:
        calls = _calls(T, rec, start, cuts)
    else:  # nothing is recorded before the diagnostics' burn-in ends
        quiet = min(T, max(start, diag.burn_in))
        calls = itertools.chain(_calls(quiet, 0, start, cuts), _calls(T, rec, quiet, cuts))

    def after_call(out, t1, frames, recorded):
        if diag is not None and frames is not None:
            for i, frame in enumerate(recorded):
                step = (frames.start + i + 1) * rec
                if diag.due(step):
                    diag.update(frame, step)
        if ckpt.due(t1):
            ckpt.save(t1, {"x": out, "accepted": accepted}, diag, position(t1))

    if name == "reference":
        out = x
        for t0, t1, every, frames in calls:
            a, sig = schedule.chunk(t0, t1)
            out, acc, recorded = gmm_chain_ref(
                out,
                mixture,
                a,
                sig,
                mala=mala,
                seed=seed,
                step_offset=step_offset + t0,
                particle_offset=particle_offset,
                trajectory_every=every,
            )
            if mala:
                accepted += acc
            if frames is not None and traj is not None:
                traj[frames] = recorded
            after_call(out, t1, frames, recorded)
        out = out.clone() if out is x else out
    else:
        acc = acc_dtype(x.dtype)
        p = mixture.kernel_params(acc, x.device, None, per_point=True)
        out = x.contiguous().clone()
        chunk_accepted = torch.empty_like(accepted) if mala else None
        for t0, t1, every, frames in calls:
            a, sig = schedule.chunk(t0, t1)
            recorded = None
            if frames is not None:
                recorded = traj[frames] if traj is not None else out.new_empty((frames.stop - frames.start, *out.shape))
            if mala:
                chunk_accepted.zero_()
            backends.op_namespace(name).gmm_chain_(
                out,
                p["means"],
                p["var"],
                p["log_const"],
                p["factor"],
                torch.tensor(a, dtype=acc, device=x.device),
                torch.tensor([0.0] * len(a) if sig is None else [s * s for s in sig], dtype=acc, device=x.device),
                mala,
                seed64,
                step_offset + t0,
                particle_offset,
                every,
                recorded,
                chunk_accepted,
            )
            if mala:
                accepted += chunk_accepted
            after_call(out, t1, frames, recorded)
    ckpt.finish(T, {"x": out, "accepted": accepted}, diag, position(T))
    if final_denoise and method == "annealed":
        sig_l = schedule.last_sigma
        out = (
            out
            + sig_l**2
            * gmm_score(out, mixture, sigma=sig_l, backend=backend if name != "reference" else "reference")[0]
        )
    return ChainResult(out.to(storage), accepted, None if traj is None else traj.to(storage))


def _float64_needed(x: torch.Tensor, mixture, schedule: _Schedule) -> bool:
    """Whether float32 math could overflow on the chain from x (scorefast._float_range)."""
    if acc_dtype(x.dtype) != torch.float32 or schedule.steps == 0:
        return False
    if schedule.table is not None:
        a = float(schedule.table.max())
    else:
        a = max(step_size for step_size, _, _ in schedule.runs)
    s2 = max((sigma or 0.0) * (sigma or 0.0) for _, sigma, _ in schedule.runs) if schedule.runs else 0.0
    params = mixture.kernel_params(torch.float32, x.device, None, per_point=True)
    return _float_range.chain_at_risk(x, params, a, s2)
