"""Sampler steps replayed from CUDA graphs (the samplers' ``cuda_graph=True``).

A sampler runs groups of identical steps (all of ULA; one noise level of annealed
Langevin). With graphs, the first steps of a group run eagerly (warm-up: lazy
initialisation and caches must not happen during capture), the next one is captured once
(the user's score call plus the fused update), and the rest of the group replays it.

A graph bakes kernel arguments in, so the step of the noise counter cannot be a Python int
there: it lives in a one-element int64 tensor on the GPU, which the noise kernels read when
they run (``langevin_step_counter_``, ``normal_fill_counter_``, ``philox_fill_counter_``;
the public functions use them when ``step`` is a tensor), and which every step, replayed
or not, advances by one at its end. So a replay draws the noise of step t exactly as the
eager loop's ``step=t`` does, and the chain is bit-identical to the eager sampler whenever
the score function itself computes the same on replay as eagerly (no host syncs, no
host-side randomness, deterministic kernels).
"""

from __future__ import annotations

import contextlib

import torch

from . import _checks
from . import backend_registry as backends

# Eager steps before each capture (the first also warms up the score function's kernels).
WARMUP_STEPS = 2


def check_cuda_graph(cuda_graph, x: torch.Tensor, backend: str) -> bool:
    """Whether steps are replayed from CUDA graphs; errors name ``cuda_graph``."""
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be a bool, got {type(cuda_graph).__name__}")
    if not cuda_graph:
        return False
    if x.device.type != "cuda":
        raise ValueError(f"cuda_graph=True captures CUDA graphs and needs CUDA tensors, got x on {x.device}")
    backends.check_name(backend)
    if backend not in ("auto", "cuda"):
        raise ValueError(
            f"cuda_graph=True runs the cuda backend's kernels (the step read from device memory), "
            f"got backend={backend!r}"
        )
    status = backends.status("cuda")
    if not status.available or not backends.has_op("cuda", "langevin_step_counter_"):
        raise ValueError(f"cuda_graph=True needs the cuda backend, which is not available: {status.reason}")
    return True


class StepRunner:
    """Runs a sampler's steps t = 0, 1, ... in groups: ``run(step_fn, n)`` calls ``step_fn(t)``
    for the group's n steps, with t the int step (eager), or, with ``cuda_graph``, the
    device counter holding it (warm-up, one capture, replays).

    Resuming a chain: steps before ``resume_at`` are skipped (counted, not run). ``after_step``,
    if set, is called on the host with the number of steps done after each step that runs,
    replayed or not (checkpoints, diagnostics)."""

    def __init__(self, x: torch.Tensor, cuda_graph: bool, backend: str):
        self.graphed = check_cuda_graph(cuda_graph, x, backend)
        self.t = 0  # the next step
        self.resume_at = 0  # the first step that runs
        self.after_step = None
        if self.graphed:
            self.device = x.device
            self.counter = torch.zeros(1, dtype=torch.int64, device=x.device)

    def run(self, step_fn, n: int, tick=None) -> None:
        if self.t + n - 1 > _checks.MAX_STEP:
            raise ValueError("the sampler's steps must stay below 2^32 (the step is a 32-bit counter word)")
        tick = tick or (lambda: None)
        skip = min(n, max(0, self.resume_at - self.t))
        for _ in range(skip):
            tick()
        self.t, n = self.t + skip, n - skip
        after = self.after_step or (lambda t: None)
        if not self.graphed:
            for _ in range(n):
                step_fn(self.t)
                self.t += 1
                tick()
                after(self.t)
            return
        if n == 0:
            return
        warm = min(n, WARMUP_STEPS)
        with self._device_scope():
            self.counter.fill_(self.t)
            with self._warmup_scope():
                for _ in range(warm):
                    self._step(step_fn)
                    self.t += 1
                    tick()
                    after(self.t)
            if n > warm:
                graph = self._capture(step_fn)
                for _ in range(n - warm):
                    graph.replay()
                    self.t += 1
                    tick()
                    after(self.t)
                self._release(graph)

    def _step(self, step_fn) -> None:
        """One step at the counter's step, then the counter advanced (on the device)."""
        step_fn(self.counter)
        self.counter.add_(1)

    # -- CUDA specifics --------------------------------------------------------------------

    def _device_scope(self):
        return torch.cuda.device(self.device)

    @contextlib.contextmanager
    def _warmup_scope(self):
        """Warm-up on a side stream, as torch.cuda.graphs recommends, ordered with the current one."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, step_fn) -> torch.cuda.CUDAGraph:
        """The step recorded (not run: it first runs at the first replay)."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._step(step_fn)
        except RuntimeError as exc:
            raise RuntimeError(
                "cuda_graph=True: the sampler step could not be captured in a CUDA graph; the "
                "score function must not synchronise with the host (.item(), .cpu(), printing a "
                f"tensor, data-dependent shapes): {exc}"
            ) from exc
        return graph

    def _release(self, graph) -> None:
        torch.cuda.current_stream().synchronize()  # the replays finish before the graph goes
        graph.reset()  # and its memory pool is released before the next group's capture


def record(buf: torch.Tensor, t, value: torch.Tensor) -> None:
    """buf[t] = value (a 0-d tensor) without a host sync, for an int t or the device counter."""
    if isinstance(t, torch.Tensor):
        buf.index_copy_(0, t, value.reshape(1).to(buf.dtype))
    else:
        buf[t] = value
