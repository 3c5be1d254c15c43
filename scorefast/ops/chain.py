"""Contract of ``gmm_chain_``: T Langevin (or MALA) steps for a Gaussian-mixture target, in place
on x [N, D] (contiguous; csrc/include/scorefast/chain.h).

The mixture comes in per-point kernel form (means, var, log_const, factor: see ``ops.gmm``);
step_size and sigma2 are [T] in the math dtype (step t uses noise level sigma2[t] and the
contract's step ``step_offset + t``); with ``trajectory_every`` = k > 0 the state after every
k-th step goes to trajectory [T // k, N, D]; MALA counts acceptances into accepted [N] (int64).
Definition: ``gmm_chain_ref`` at the end of this module.
"""

from __future__ import annotations

import math

import torch

from ._common import MAX_STEP, acc_dtype, check_counter, fail
from .gmm import check_args as check_mixture_args
from .gmm import gmm_score_ref
from .langevin import langevin_step_ref
from .noise import normal_ref, philox_words_ref, uniform_ref

SCHEMAS = {
    "gmm_chain_": (
        "(Tensor(a!) x, Tensor means, Tensor var, Tensor log_const, Tensor? factor, Tensor step_size, "
        "Tensor sigma2, bool mala, SymInt seed, SymInt step_offset, SymInt particle_offset, SymInt trajectory_every, "
        "Tensor(b!)? trajectory, Tensor(c!)? accepted) -> ()"
    ),
}


def check_args(
    x,
    means,
    var,
    log_const,
    factor,
    step_size,
    sigma2,
    mala,
    step_offset,
    particle_offset,
    trajectory_every,
    trajectory,
    accepted,
    *,
    device_type: str | None = None,
    kernels: str = "",
) -> None:
    """The checks of the C++ op (csrc/chain_op.h), with its messages."""
    check_mixture_args(x, means, var, var, factor, log_const, None, device_type=device_type, kernels=kernels)
    check_counter(step_offset, particle_offset, x.shape[0], x.shape[-1] if x.dim() else 1)
    if not x.is_contiguous():
        fail("x must be contiguous")
    acc = acc_dtype(x.dtype)
    T = step_size.numel()
    for t, name, what in ((step_size, "step_size", ""), (sigma2, "sigma2", " (one per step)")):
        if not (t.dim() == 1 and t.numel() == T and t.dtype == acc and t.is_contiguous() and t.device == x.device):
            fail(f"{name} must be a contiguous [T] tensor of {acc} on x's device{what}")
    if T > 0 and step_offset + T - 1 > MAX_STEP:
        fail("step_offset + steps must stay below 2^32 (the step is a 32-bit counter word)")
    if trajectory_every < 0:
        fail(f"trajectory_every must be >= 0, got {trajectory_every}")
    N, D = x.shape
    if trajectory_every > 0:
        shape = [T // trajectory_every, N, D]
        if not (
            trajectory is not None
            and trajectory.is_contiguous()
            and trajectory.dtype == x.dtype
            and list(trajectory.shape) == shape
            and trajectory.device == x.device
        ):
            fail(f"trajectory must be a contiguous [T / k, N, D] = {shape} tensor of x's dtype on x's device")
    if mala and not (
        accepted is not None
        and accepted.is_contiguous()
        and accepted.dtype == torch.int64
        and accepted.numel() == N
        and accepted.device == x.device
    ):
        fail(f"accepted must be a contiguous int64 [N] = [{N}] tensor on x's device for MALA")


def _fake(*args):
    return None


def register(namespace: str, ops, *, fakes: bool = True) -> None:
    """Fake kernel of ``gmm_chain_`` (in place; no gradients through a sampler)."""
    if fakes and "gmm_chain_" in ops:
        torch.library.register_fake(f"{namespace}::gmm_chain_", _fake)


# The definition: the pure-PyTorch reference every kernel is tested against.
#
# Reference of gmm_chain: T single steps with the reference score and Langevin update.


def gmm_chain_ref(
    x: torch.Tensor,
    mixture,
    step_sizes,
    sigmas,
    *,
    mala: bool = False,
    seed: int = 0,
    step_offset: int = 0,
    particle_offset: int = 0,
    trajectory_every: int = 0,
):
    """(x after T steps, accepted (N,) int64, trajectory (T // k, N, D) or None without k); x (N, D)
    is not modified.

    Step t uses a = step_sizes[t], the score of the mixture noised by sigmas[t] (None or 0:
    none), and the contract's z at step step_offset + t; MALA's uniform is word 0 of group
    ceil(D/4). The state is rounded to x's dtype after every step.
    """
    N, D = x.shape
    means, logw, cov = mixture.means.to(x.device), mixture.log_weights.to(x.device), mixture.cov.to(x.device)
    score_of = lambda y, s: gmm_score_ref(y, means, logw, mixture.kind, cov, s)  # noqa: E731
    x = x.clone()
    accepted = torch.zeros(N, dtype=torch.int64, device=x.device)
    frames = []
    s_x, lp_x = score_of(x, None) if mala else (None, None)
    for t, a in enumerate(float(v) for v in step_sizes):
        step = step_offset + t
        sig = None if sigmas is None or float(sigmas[t]) == 0 else float(sigmas[t])
        if not mala:
            s = score_of(x, sig)[0]
            x = langevin_step_ref(
                x,
                s.to(x.dtype),
                step_size=a,
                noise_scale=math.sqrt(2 * a),
                seed=seed,
                step=step,
                particle_offset=particle_offset,
            )
        else:
            z = normal_ref(N, D, seed, step, particle_offset, x.device).double()
            y = (x.double() + a * s_x + math.sqrt(2 * a) * z).to(x.dtype)
            s_y, lp_y = score_of(y, None)
            back = ((x.double() - y.double() - a * s_y) ** 2).sum(1)
            log_alpha = lp_y - lp_x - back / (4 * a) + 0.5 * (z**2).sum(1)
            q = (D + 3) // 4
            u = uniform_ref(philox_words_ref(N, q + 1, seed, step, particle_offset, x.device)[:, q, 0]).double()
            acc = torch.log(u) < log_alpha
            accepted += acc
            x = torch.where(acc[:, None], y, x)
            s_x = torch.where(acc[:, None], s_y, s_x)
            lp_x = torch.where(acc, lp_y, lp_x)
        if trajectory_every and (t + 1) % trajectory_every == 0:
            frames.append(x.clone())
    traj = torch.stack(frames) if frames else (x.new_empty((0, N, D)) if trajectory_every else None)
    return x, accepted, traj
