"""Denoising score matching under DistributedDataParallel, equal to one process's training.

Every rank holds the same global batch of G samples (drawn from one seeded generator, so it is
the same for any world size) and trains on its contiguous slice ``batch_slice(G)``. Sample ``b``
of rank r's slice is global sample ``start_r + b``: it gets that sample's noise level and its
noise (the noise counter's particle index is the global sample index, DSMLoss's
``sample_offset``), so the ranks' per-sample losses are exactly those of one process. DDP
averages the ranks' gradients, so each rank's objective is its loss sum weighted by W / G:

    (1/W) sum_r grad[(W/G) sum_{b in r} l_b] = grad[(1/G) sum_b l_b],

the gradient of the global batch's mean loss, also when G is not a multiple of W (the slices
then differ by one sample). Only the order of float32 sums differs from one process.

    from scorefast.distributed import training
    model = DistributedDataParallel(net)                   # after init_process_group
    loss = training.train_step(model, DSMLoss(sigmas, seed=0), opt, global_batch_x, step)
    del model                                              # before destroy_process_group

Drop the DDP wrapper before destroying the group: its reducer holds the group and, as the last
holder, frees it with the GIL held while gloo's worker threads may need the GIL (a hang at exit).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..nn import DSMLoss
from . import _runtime
from .sampling import shard_range


def _count(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def batch_slice(global_batch: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """The samples ``[start, stop)`` of a global batch that ``rank`` trains on.

    Contiguous slices in rank order, sizes ``G // W`` or one more (the first ``G % W`` ranks;
    ``shard_range``'s split), so global sample i is on one rank and its index is
    ``start + local index``. Unlike particles, every rank needs a sample (DDP's backward runs
    on every rank), so G < W is refused.

    Args:
        global_batch: G, the samples of one step over all ranks (>= world_size).
        rank, world_size: default: those of the initialised process group, else (0, 1).
    """
    part = shard_range(_count(global_batch, "global_batch", 1), rank, world_size)
    W = _runtime.world_size() if world_size is None else world_size
    if global_batch < W:
        raise ValueError(
            f"global_batch ({global_batch}) must be >= the number of processes ({W}): every rank needs a sample"
        )
    return part


def shard_objective(
    loss_fn: DSMLoss,
    model,
    x: torch.Tensor,
    step: int,
    *,
    sample_offset: int,
    global_batch: int,
    world_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's DSM objective for the slice ``x`` of a global batch, weighted for DDP.

    Args:
        loss_fn: the DSMLoss (the same seed, levels and settings on every rank).
        model: the score network (the DDP-wrapped one while training).
        x: (B_r, ...), global samples ``[sample_offset, sample_offset + B_r)``.
        step: the training step (the noise counter's step; the same on every rank).
        sample_offset: the global index of ``x[0]`` (``batch_slice(G).start``).
        global_batch: G, the samples of this step over all ranks.
        world_size: W, the number of ranks whose gradients DDP averages (default: the
            process group's, else 1).

    Returns:
        (objective, loss_sum): ``(W / G) * sum_b l_b``, a 0-d tensor to backpropagate (DDP's
        average of its gradients is the gradient of the global mean loss), and ``sum_b l_b``
        detached, for ``global_mean_loss``. float32 (float64 for float64 data).
    """
    W = _runtime.world_size() if world_size is None else _count(world_size, "world_size", 1)
    per_sample = loss_fn(model, x, step, sample_offset=sample_offset, global_batch=global_batch, reduction="none")
    loss_sum = per_sample.sum()
    # For W == 1 this is the plain mean's value and gradient: sum / G, d/dl_b = 1/G.
    objective = loss_sum / global_batch if W == 1 else loss_sum * (W / global_batch)
    return objective, loss_sum.detach()


def global_mean_loss(loss_sum: torch.Tensor, global_batch: int, group=None) -> torch.Tensor:
    """The global batch's mean loss from each rank's ``loss_sum`` (an all-reduce across the
    group when one is initialised; every rank gets the value). ``loss_sum`` is not modified."""
    total = loss_sum.detach().clone()
    if _runtime.world_size(group) > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
    return total / global_batch


def train_step(model, loss_fn: DSMLoss, optimizer: torch.optim.Optimizer, x: torch.Tensor, step: int) -> float:
    """One data-parallel DSM step on the global batch ``x`` (G, ...), the same on every rank.

    Each rank evaluates its slice ``batch_slice(G)`` with its global sample indices, backpropagates
    through ``model`` (DistributedDataParallel averages the gradients; a plain module in one
    process) and steps ``optimizer``. The parameters after the step and the returned loss are
    those of one process training on all of ``x``, up to the order of float32 sums.

    Returns:
        The global batch's mean DSM loss before the step (a float, the same on every rank).
    """
    G = x.shape[0]
    part = batch_slice(G)
    objective, loss_sum = shard_objective(loss_fn, model, x[part], step, sample_offset=part.start, global_batch=G)
    optimizer.zero_grad()
    objective.backward()
    optimizer.step()
    return float(global_mean_loss(loss_sum, G))
