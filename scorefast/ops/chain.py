"""Contract of ``gmm_chain_``: T Langevin (or MALA) steps for a Gaussian-mixture target, in place
on x [N, D] (contiguous; csrc/include/scorefast/chain.h).

The mixture comes in per-point kernel form (means, var, log_const, factor: see ``ops.gmm``);
step_size and sigma2 are [T] in the math dtype (step t uses noise level sigma2[t] and the
contract's step ``step_offset + t``); with ``trajectory_every`` = k > 0 the state after every
k-th step goes to trajectory [T // k, N, D]; MALA counts acceptances into accepted [N] (int64).
Definition: ``scorefast.reference.chain``.
"""

from __future__ import annotations

import torch

from ._common import MAX_STEP, acc_dtype, check_counter, fail
from .gmm import check_args as check_mixture_args

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
    check_counter(step_offset, particle_offset, x.shape[0])
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
