"""The collectives the sharded helpers use: rows gathered in rank order, sums in float64.

Every function works in one process too (no group: the tensor itself is the whole), and moves
tensors to where the group's backend needs them (CUDA for NCCL, the CPU for gloo) and back.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from . import _runtime


def _sizes(n: int, group) -> list[int]:
    """Every rank's row count, in rank order."""
    mine = torch.tensor([n], dtype=torch.int64, device=_runtime.comm_device(group))
    everyone = [torch.empty_like(mine) for _ in range(_runtime.world_size(group))]
    dist.all_gather(everyone, mine, group=group)
    return [int(s) for s in everyone]


def gather_rows(t: torch.Tensor, *, dst: int | None = 0, group=None, dim: int = 0, sizes=None):
    """Every rank's ``t`` concatenated along ``dim`` in rank order, on rank ``dst`` (a global rank;
    None: on every rank); None on the other ranks.

    The ranks' tensors may differ in size along ``dim`` only. ``sizes`` (every rank's size along
    ``dim``, in rank order) saves the exchange that finds them. The result is on ``t``'s device with
    its dtype; in one process it is ``t`` itself.
    """
    world = _runtime.world_size(group)
    if world == 1:
        return t
    here = _runtime.comm_device(group)
    rows = t.movedim(dim, 0)
    sizes = _sizes(rows.shape[0], group) if sizes is None else list(sizes)
    if len(sizes) != world or sizes[_runtime.rank(group)] != rows.shape[0]:
        raise ValueError(f"sizes must list every rank's size along dim {dim} (here {rows.shape[0]}), got {sizes}")
    # Collectives need equal shapes: pad every rank's rows to the largest, trim after.
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]), device=here)
    padded[: rows.shape[0]] = rows
    if dst is None:
        pieces = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(pieces, padded, group=group)
    else:
        receive = dist.get_rank() == dst
        pieces = [torch.empty_like(padded) for _ in range(world)] if receive else None
        dist.gather(padded, pieces, dst=dst, group=group)
        if not receive:
            return None
    whole = torch.cat([p[:n] for p, n in zip(pieces, sizes)])
    return whole.movedim(0, dim).to(t.device)


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """The sum over ranks of ``t``, on every rank: float64 for floating tensors (so sums of many
    shards lose nothing to float32), int64 for integer and bool ones; on ``t``'s device."""
    dtype = torch.float64 if t.is_floating_point() else torch.int64
    out = t.to(device=_runtime.comm_device(group), dtype=dtype, copy=True)
    if _runtime.world_size(group) > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out.to(t.device)


def all_reduce_max(value: float, group=None) -> float:
    """The largest of every rank's ``value`` (e.g. the slowest rank's wall time)."""
    t = torch.tensor([float(value)], dtype=torch.float64, device=_runtime.comm_device(group))
    if _runtime.world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return float(t)


def broadcast_int(value: int | None, src: int = 0, group=None) -> int:
    """Rank ``src``'s ``value`` (an int in [0, 2^64)) on every rank."""
    word = value - 2**64 if value is not None and value >= 2**63 else value  # int64 with the same bits
    t = torch.tensor([0 if word is None else word], dtype=torch.int64, device=_runtime.comm_device(group))
    if _runtime.world_size(group) > 1:
        dist.broadcast(t, src=src, group=group)
    return int(t) % 2**64
