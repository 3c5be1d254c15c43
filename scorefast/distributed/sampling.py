"""Sampling with particles sharded over processes, equal to the one-process run bit for bit.

Rank r of W runs the contiguous rows ``shard_range(N, r, W)`` of the N particles with
``particle_offset`` = the shard's start, the global id of its first particle. The noise contract
draws each particle's noise from (seed, step, particle id), so every particle sees the noise it
sees in one process, and a shard's particles come out bit for bit as the same rows of the
one-process run whenever the score computes each particle's row independently of the batch it
is in (the mixtures and the fused ops do; matrix-multiply libraries may pick other kernels for
other batch sizes, e.g. for batches of 1 to 3 rows, and then the runs agree to rounding).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, NamedTuple

import torch

from .. import checkpoint
from ..noise import random_seed
from . import _collectives, _runtime


def shard_range(n: int, rank: int | None = None, world_size: int | None = None, *, group=None) -> slice:
    """The contiguous global rows of N = ``n`` particles that ``rank`` of ``world_size`` runs.

    The first n % world_size ranks take one row more than the others (as numpy's array_split);
    a rank may get none when n < world_size. ``rank`` and ``world_size`` default to this
    process's in ``group`` (rank 0 of 1 without a process group).

    Returns:
        slice(start, stop): ``start`` is the shard's particle_offset.
    """
    rank = _runtime.rank(group) if rank is None else rank
    world_size = _runtime.world_size(group) if world_size is None else world_size
    for name, value, lo in (("n", n, 0), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard_sizes(n: int, world_size: int | None = None, *, group=None) -> list[int]:
    """Every rank's number of rows of ``n`` particles, in rank order (see shard_range)."""
    world_size = _runtime.world_size(group) if world_size is None else world_size
    return [(s := shard_range(n, r, world_size)).stop - s.start for r in range(world_size)]


def batch_mean(n: int, group=None):
    """The mean over all ``n`` particles of a per-particle (n_local,) tensor, for
    ``predictor_corrector(..., batch_mean=...)`` in a sharded run: the ranks' values are gathered
    in particle order and averaged as one process averages them, so the batch-mean rule's step
    sizes equal the one-process run's bit for bit. One all-gather of n values per call."""
    sizes = shard_sizes(n, group=group)

    def mean(v: torch.Tensor) -> torch.Tensor:
        return _collectives.gather_rows(v, dst=None, group=group, sizes=sizes).mean()

    return mean


class ShardedRun(NamedTuple):
    """One rank's part of a sharded run: ``x`` (n_local, ...) its particles after the run (the
    rows ``start`` .. ``start + n_local`` of the whole), ``total`` the particles over all ranks,
    ``output`` what the sampler returned for the shard (x, (x, diagnostics) or a ChainResult)."""

    x: torch.Tensor
    start: int
    total: int
    output: Any


def run_sharded(sampler, *args, x: torch.Tensor, group=None, **kwargs) -> ShardedRun:
    """Run ``sampler(*args, x=<this rank's rows of x>, particle_offset=<their start>, **kwargs)``.

    ``sampler`` is one of scorefast.samplers' ``langevin``, ``annealed_langevin``, ``mala``,
    ``predictor_corrector``, or ``gmm_chain`` (pass its ``mixture`` by keyword), or any
    function with parameters ``x`` and ``particle_offset``. Every rank passes the same
    arguments and the same global start ``x`` (N, ...); each runs its shard_range(N) rows on a
    copy (``x`` is not modified). Without ``seed`` rank 0 draws one and every rank uses it.
    ``predictor_corrector`` gets ``batch_mean`` over all ranks unless one is given. A
    ``checkpoint`` path names one file per rank with ``{rank}`` (e.g. "chain-{rank}.pt"): each
    rank checkpoints and resumes its own shard; without ``{rank}`` several ranks are refused.

    Returns:
        ShardedRun(x, start, total, output); ``gather(run.x)`` assembles the N particles, equal
        to the one-process run's (see the module's note on the score function).
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise TypeError(f"x must be a tensor of particles (N, ...), got {type(x).__name__}")
    name = getattr(sampler, "__name__", type(sampler).__name__)
    params = inspect.signature(sampler).parameters
    for needed in ("x", "particle_offset"):
        if needed not in params:
            raise TypeError(f"{name} takes no {needed!r} argument: it cannot run on a shard of particles")
    if "particle_offset" in kwargs:
        raise TypeError("run_sharded sets particle_offset (each shard's start); do not pass it")
    total = x.shape[0]
    rows = shard_range(total, group=group)
    kwargs.update(x=x[rows].clone(), particle_offset=rows.start)
    if kwargs.get("checkpoint") is not None:
        path = os.fspath(kwargs["checkpoint"])
        if "{rank}" not in path and _runtime.world_size(group) > 1:
            raise ValueError(
                f"checkpoint must name one file per rank with {{rank}} (e.g. 'chain-{{rank}}.pt'), got {path!r}"
            )
        kwargs["checkpoint"] = path.replace("{rank}", str(_runtime.rank(group)))
    if "seed" in params and kwargs.get("seed") is None:
        kwargs["seed"] = _collectives.broadcast_int(random_seed() if _runtime.is_main(group) else None, group=group)
    if "batch_mean" in params and kwargs.get("batch_mean") is None and _runtime.world_size(group) > 1:
        kwargs["batch_mean"] = batch_mean(total, group)
    try:
        inspect.signature(sampler).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"run_sharded({name}, ...): {exc} (pass the arguments that follow x by keyword)") from None
    output = sampler(*args, **kwargs)
    return ShardedRun(output[0] if isinstance(output, tuple) else output, rows.start, total, output)


def gather(x: torch.Tensor, *, dst: int | None = 0, group=None, dim: int = 0):
    """Every rank's shard of particles (or of per-particle values, along ``dim``) assembled in
    rank order, i.e. in global particle order for shard_range shards: on rank ``dst`` (None: on
    every rank), None elsewhere. Shards may differ in length. In one process: ``x`` itself."""
    return _collectives.gather_rows(x, dst=dst, group=group, dim=dim)


_SHARD_FILE = {"x": torch.Tensor, "start": int, "total": int, "rank": int, "world_size": int}
_SHARD_KIND = "scorefast particle shard"


def write_shard(x: torch.Tensor, path: str | os.PathLike, *, start: int, total: int, group=None) -> str:
    """Write this rank's particles ``x`` (rows ``start`` .. of ``total``) to ``path``, in which
    "{rank}" is replaced by the rank (without it, ".rank<r>" goes before the extension), with
    torch.save (read back by ``read_shards``; no code is pickled). Returns the path written."""
    path = os.fspath(path)
    r = _runtime.rank(group)
    if "{rank}" in path:
        path = path.replace("{rank}", str(r))
    else:
        stem, ext = os.path.splitext(path)
        path = f"{stem}.rank{r}{ext or '.pt'}"
    state = {"x": x.detach().cpu(), "start": int(start), "total": int(total), "rank": r}
    checkpoint.save({**state, "world_size": _runtime.world_size(group)}, path)
    return path


def read_shards(paths) -> torch.Tensor:
    """The particles of the shard files ``paths`` (from write_shard, any order), concatenated in
    global order; they must cover rows 0 .. total - 1 exactly once (else ValueError)."""
    shards = sorted((checkpoint.load(p, kind=_SHARD_KIND, keys=_SHARD_FILE) for p in paths), key=lambda s: s["start"])
    if not shards:
        raise ValueError("paths must name at least one shard file")
    expected = 0
    for s in shards:
        if s["start"] != expected or s["total"] != shards[0]["total"]:
            raise ValueError(
                f"the shard files do not tile the particles: a shard of {shards[0]['total']} particles "
                f"starting at {expected} is missing or overlaps (found start {s['start']}, total {s['total']})"
            )
        expected += s["x"].shape[0]
    if expected != shards[0]["total"]:
        raise ValueError(f"the shard files hold {expected} of the {shards[0]['total']} particles")
    return torch.cat([s["x"] for s in shards])
