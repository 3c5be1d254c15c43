"""Many processes on torch.distributed (NCCL on GPUs, gloo on CPUs): particles sharded over ranks.

Launch with ``torchrun --nproc-per-node N script.py`` (or ``-m scorefast sample``). Each rank runs
the contiguous particles ``shard_range(N)`` with ``particle_offset`` = their global id, so the
noise contract gives every particle the noise it gets in one process and the gathered samples
equal the one-process run's bit for bit (scorefast.distributed.sampling says when):

    from scorefast import distributed, samplers
    distributed.init()                      # joins torchrun's group; one process: does nothing
    run = distributed.run_sharded(samplers.mala, score, log_prob, x=x0, steps=500, step_size=0.1, seed=0)
    mean, cov = distributed.mean_and_covariance(run.x)      # over every rank's particles
    x = distributed.gather(run.x)                            # all N particles on rank 0, None elsewhere
"""

from . import training
from ._collectives import all_reduce_max, all_reduce_sum
from ._runtime import (
    backend_for,
    barrier,
    init,
    is_initialized,
    is_main,
    launched,
    local_device,
    process_group,
    rank,
    shutdown,
    world_size,
)
from .sampling import (
    ShardedRun,
    batch_mean,
    gather,
    read_shards,
    run_sharded,
    shard_range,
    shard_sizes,
    write_shard,
)
from .statistics import mean_acceptance_rate, mean_and_covariance, mode_fractions, reduce_diagnostics, rhat_and_ess

__all__ = [
    "ShardedRun",
    "all_reduce_max",
    "all_reduce_sum",
    "backend_for",
    "barrier",
    "batch_mean",
    "gather",
    "init",
    "is_initialized",
    "is_main",
    "launched",
    "local_device",
    "mean_acceptance_rate",
    "mean_and_covariance",
    "mode_fractions",
    "process_group",
    "rank",
    "read_shards",
    "reduce_diagnostics",
    "rhat_and_ess",
    "run_sharded",
    "shard_range",
    "shard_sizes",
    "shutdown",
    "training",
    "world_size",
    "write_shard",
]
