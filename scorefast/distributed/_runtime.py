"""The process group a sharded run works in: torch.distributed, set up from torchrun's environment.

``torchrun --nproc-per-node N ...`` starts N processes with RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT set. ``init`` joins that group (NCCL for CUDA devices, gloo for the
CPU), or uses one the caller already initialised; without either, the run is one process and
every helper here answers for it (rank 0 of 1), so the same code runs launched or not.
"""

from __future__ import annotations

import atexit
import contextlib
import os

import torch
import torch.distributed as dist

# The variables torchrun (and torch.multiprocessing launchers following its convention) set.
_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

_created = False  # whether this module created the default group (then it also destroys it)


def launched() -> bool:
    """Whether this process was started by torchrun (its rendezvous variables are set)."""
    return all(k in os.environ for k in _ENV)


def is_initialized() -> bool:
    """Whether a default torch.distributed process group exists."""
    return dist.is_available() and dist.is_initialized()


def backend_for(device) -> str:
    """The collective backend for particles on ``device``: "nccl" for CUDA, "gloo" otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def local_device(device) -> torch.device:
    """``device`` for this process: an index-less "cuda" becomes cuda:LOCAL_RANK under torchrun
    (one GPU per process); anything else is returned as given."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init(device="cpu", backend: str | None = None) -> bool:
    """Join the process group of a torchrun launch, if there is one and none exists yet.

    Args:
        device: where the particles live; picks the backend (NCCL for CUDA, gloo otherwise) and,
            for CUDA, the process's current GPU (``local_device``).
        backend: a torch.distributed backend name instead of the device's choice.

    Returns:
        True when this call created the default group (it is destroyed at exit, or by
        ``shutdown``); False when one existed already or the process was not launched by torchrun.
    """
    global _created
    if is_initialized() or not launched():
        return False
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of PyTorch")
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend or backend_for(device))
    _created = True
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Destroy the default group if ``init`` created it (a caller's own group is left alone)."""
    global _created
    if _created and is_initialized():
        dist.destroy_process_group()
    _created = False


@contextlib.contextmanager
def process_group(device="cpu", backend: str | None = None):
    """``init`` for the duration of a ``with`` block; the group it created is destroyed at the end."""
    created = init(device, backend)
    try:
        yield
    finally:
        if created:
            shutdown()


def rank(group=None) -> int:
    """This process's rank in ``group`` (the default group when None); 0 without a group."""
    return dist.get_rank(group) if is_initialized() else 0


def world_size(group=None) -> int:
    """The number of processes in ``group`` (the default group when None); 1 without a group."""
    return dist.get_world_size(group) if is_initialized() else 1


def is_main(group=None) -> bool:
    """Whether this is rank 0, the process that prints, plots and writes summaries."""
    return rank(group) == 0


def barrier(group=None) -> None:
    """Wait for every process of ``group``; nothing without a group."""
    if world_size(group) > 1:
        dist.barrier(group)


def comm_device(group=None) -> torch.device:
    """Where tensors must be for ``group``'s collectives: the current CUDA device for NCCL, else the CPU."""
    if is_initialized() and "nccl" in str(dist.get_backend(group)):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
