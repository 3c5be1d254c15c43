"""The step as a device tensor (the ``*_counter_`` ops) and the samplers' ``cuda_graph`` option.

On the CPU: the counter ops equal the int-step ops bitwise and pass opcheck; the public
functions take a tensor step; ``cuda_graph=True`` is refused for CPU tensors; and the
samplers' graph protocol (warm-up, one capture, replays, each advancing the counter) gives
the eager chain bit for bit, with the C++ kernels and with the CUDA kernels (emulated),
through a stand-in with a CUDA graph's semantics (RecordedGraph: capture records the ops
and runs nothing, replay re-runs them on the captured tensors, host syncs are refused).
The real capture is tested on a GPU in tests/test_cuda_runtime.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
from unittest import mock

import pytest
import torch
import torch.utils._pytree as pytree
from conftest import require_or_skip
from torch.utils._python_dispatch import TorchDispatchMode

import scorefast
from scorefast import _float_range, backend_registry, samplers, step_graphs, targets
from scorefast.nn import geometric_sigmas

if not backend_registry.status("cpp").available:
    require_or_skip("cpp", f"cpp backend unavailable: {backend_registry.status('cpp').reason}", module=True)


def _rand(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_counter_ops_equal_int_step_ops(dtype):
    x, s, sc = _rand((33, 7), 0, dtype), _rand((33, 7), 1, dtype), _rand((33, 7), 2, dtype)
    step = torch.tensor([2**32 - 1])
    a = torch.rand(33, generator=torch.Generator().manual_seed(3))
    for kw in (
        dict(step_size=0.1),
        dict(step_size=a, score_cond=sc, guidance=2.0, clamp=(-1.0, 1.0), max_score_norm=0.5),
    ):
        for backend in ("cpp", "reference"):
            want = scorefast.langevin_step(x, s, seed=5, step=2**32 - 1, particle_offset=9, backend=backend, **kw)
            got = scorefast.langevin_step(x, s, seed=5, step=step, particle_offset=9, backend=backend, **kw)
            assert torch.equal(got, want), (kw, backend)
            y = x.t().contiguous().t()  # non-contiguous, updated in place
            scorefast.langevin_step_(y, s, seed=5, step=step, particle_offset=9, backend=backend, **kw)
            assert torch.equal(y, want)
    for backend in ("cpp", "reference"):
        assert torch.equal(
            scorefast.normal((6, 5), seed=3, step=torch.tensor(8), backend=backend),
            scorefast.normal((6, 5), seed=3, step=8, backend=backend),
        )
        assert torch.equal(
            scorefast.philox_words(6, 3, seed=3, step=torch.tensor([8]), particle_offset=2**40, backend=backend),
            scorefast.philox_words(6, 3, seed=3, step=8, particle_offset=2**40, backend=backend),
        )


def test_counter_ops_opcheck():
    x, s = _rand((8, 5), 0), _rand((8, 5), 1)
    step = torch.tensor([4])
    torch.library.opcheck(
        torch.ops.scorefast.langevin_step_counter_.default,
        (x.clone(), s, None, 1.0, 0.1, None, 0.3, None, 7, step, 2, None, None, None),
    )
    torch.library.opcheck(torch.ops.scorefast.normal_fill_counter_.default, (torch.empty(4, 6), 7, step, 2))
    torch.library.opcheck(
        torch.ops.scorefast.philox_fill_counter_.default, (torch.empty(4, 2, 4, dtype=torch.int64), 7, step, 2)
    )


def test_step_tensor_errors():
    x, s = torch.zeros(4, 3), torch.zeros(4, 3)
    with pytest.raises(TypeError, match="step tensor must be int64 with one element"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([1.0]))
    with pytest.raises(TypeError, match="step tensor must be int64 with one element"):
        scorefast.normal((4, 3), seed=1, step=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="step must be in"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([2**32]))
    with pytest.raises(NotImplementedError, match="langevin_step_counter_"):
        scorefast.langevin_step(x, s, step_size=0.1, seed=1, step=torch.tensor([1]), backend="numba")
    with pytest.raises(RuntimeError, match="tensor step does not track gradients"):
        scorefast.langevin_step(x.requires_grad_(), s, step_size=0.1, seed=1, step=torch.tensor([1]))
    with pytest.raises(RuntimeError, match="step must be an int64 tensor with one element"):
        torch.ops.scorefast.normal_fill_counter_(torch.empty(2, 3), 1, torch.tensor([1, 2]), 0)


def _mixture_case():
    mix = targets.random_mixture(3, 2, seed=1, kind="full", spread=2.0)
    return mix, mix.sample(64, seed=2).float()


SAMPLERS = {
    # (sampler call, whether it returns diagnostics); score functions that are not a bare
    # mixture, so every sampler runs the generic step loop
    "langevin": lambda mix, x, **kw: samplers.langevin(
        lambda y: mix.score(y), x, steps=7, step_size=0.05, seed=3, **kw
    ),
    "annealed": lambda mix, x, **kw: samplers.annealed_langevin(
        lambda y, s: mix.score(y, sigma=s),
        x,
        geometric_sigmas(2.0, 0.2, 3),
        steps_per_level=5,
        epsilon=2e-3,
        seed=4,
        **kw,
    ),
    "mala": lambda mix, x, **kw: samplers.mala(
        lambda y: mix.score(y), lambda y: mix.log_prob(y), x, steps=6, step_size=0.1, seed=5, particle_offset=7, **kw
    ),
    "pc": lambda mix, x, **kw: samplers.predictor_corrector(
        lambda y, s: mix.score(y, sigma=s), x, geometric_sigmas(2.0, 0.2, 3), corrector_steps=4, seed=6, **kw
    ),
    "pc_batch_mean": lambda mix, x, **kw: samplers.predictor_corrector(
        lambda y, s: mix.score(y, sigma=s),
        x,
        geometric_sigmas(2.0, 0.2, 3),
        corrector_steps=3,
        batch_mean_rule=True,
        seed=6,
        final_denoise=False,
        **kw,
    ),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_cuda_graph_on_cpu_tensors_is_refused(name):
    mix, x = _mixture_case()
    with pytest.raises(ValueError, match="cuda_graph=True .* CUDA tensors"):
        SAMPLERS[name](mix, x, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be a bool"):
        SAMPLERS[name](mix, x, cuda_graph="yes")


def test_cuda_graph_on_cpu_tensors_is_refused_for_a_fused_mixture_chain_too():
    mix, x = _mixture_case()
    with pytest.raises(ValueError, match="cuda_graph"):
        samplers.langevin(mix, x, steps=3, step_size=0.1, cuda_graph=True)


class RecordedGraph(TorchDispatchMode):
    """A CUDA graph's semantics on the CPU. Capture records every op the step dispatches,
    with the very tensors it reads and writes, and then undoes the step's writes (a capture
    runs nothing). A replay re-runs the recorded ops on those tensors, writing each result
    into the tensor the capture produced, as a graph's kernels rewrite the same addresses;
    no Python code of the step runs again. So state the step rebinds instead of updating in
    place, Python values computed at capture, and host syncs (refused, as capture refuses
    them) show up here as they would on a GPU."""

    _SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "item"}
    _NO_DATA = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}

    def __init__(self):
        super().__init__()
        self.ops = []
        self._saved = {}  # id -> (tensor, its value before the capture's first write)

    @staticmethod
    def _from_value_checks() -> bool:
        """Whether the op comes from scorefast/_checks.py, whose value checks run on CPU
        tensors only (on a GPU they are skipped rather than sync): not part of the step."""
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.endswith(os.path.join("scorefast", "_checks.py")):
                return True
            frame = frame.f_back
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if self._from_value_checks():
            return func(*args, **kwargs)
        if name in self._SYNCS:
            raise RuntimeError(f"operation not permitted when stream is capturing ({func}: a host sync)")
        for arg, value in zip(func._schema.arguments, self._flat_args(func, args, kwargs)):
            if arg.alias_info is not None and arg.alias_info.is_write and isinstance(value, torch.Tensor):
                self._saved.setdefault(id(value), (value, value.clone()))
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out, name in self._NO_DATA))
        return out

    @staticmethod
    def _flat_args(func, args, kwargs):
        names = [a.name for a in func._schema.arguments]
        return list(args) + [kwargs.get(n) for n in names[len(args) :]]

    def capture(self, fn):
        # as during a CUDA graph's capture: the float-range check, which reads back a value, stands aside
        with self, mock.patch.object(_float_range, "stream_capturing", lambda x: True):
            fn()
        for tensor, before in self._saved.values():
            tensor.copy_(before)

    def replay(self):
        for func, args, kwargs, out, no_data in self.ops:
            if no_data:
                continue  # memory of the graph's pool: nothing to compute
            result = func(*args, **kwargs)
            for want, got in zip(pytree.tree_leaves(out), pytree.tree_leaves(result)):
                if isinstance(want, torch.Tensor) and want is not got:
                    want.copy_(got)


class ReplayingRunner(step_graphs.StepRunner):
    """StepRunner's graph protocol on the CPU, with RecordedGraph for the CUDA graph."""

    captures = replays = 0

    def __init__(self, x, cuda_graph, backend):
        super().__init__(x, False, backend)
        if cuda_graph:
            self.graphed = True
            self.counter = torch.zeros(1, dtype=torch.int64, device=x.device)

    def _device_scope(self):
        return contextlib.nullcontext()

    def _warmup_scope(self):
        return contextlib.nullcontext()

    def _capture(self, step_fn):
        type(self).captures += 1
        graph = RecordedGraph()
        try:
            graph.capture(lambda: self._step(step_fn))
        except RuntimeError as exc:
            raise RuntimeError(f"the sampler step could not be captured in a CUDA graph: {exc}") from exc
        runner = type(self)

        class Graph:
            def replay(self):
                runner.replays += 1
                graph.replay()

        return Graph()

    def _release(self, graph):
        pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ["cpp", "cuda"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_graph_protocol_gives_the_eager_chain(monkeypatch, name, backend, dtype):
    # cuda: the CUDA kernels in the emulator when there is no GPU (CUDA tensors otherwise
    # take the real graphs, tested in tests/test_cuda_runtime.py).
    status = backend_registry.status(backend)
    if not status.available:
        require_or_skip(backend, f"{backend}: {status.reason}")
    if "cpu" not in status.devices:
        pytest.skip(f"{backend} does not run on CPU tensors here")
    monkeypatch.setattr(samplers, "StepRunner", ReplayingRunner)
    monkeypatch.setattr(ReplayingRunner, "captures", 0)
    monkeypatch.setattr(ReplayingRunner, "replays", 0)
    mix, x = _mixture_case()
    x = x.to(dtype)
    eager = SAMPLERS[name](mix, x.clone(), backend=backend)
    graphed = SAMPLERS[name](mix, x.clone(), cuda_graph=True, backend=backend)
    if isinstance(eager, tuple):
        (eager, d_eager), (graphed, d_graphed) = eager, graphed
        assert d_graphed.keys() == d_eager.keys()
        for k in d_eager:
            same = (
                torch.equal(d_graphed[k], d_eager[k])
                if isinstance(d_eager[k], torch.Tensor)
                else d_graphed[k] == d_eager[k]
            )
            assert same, k
    assert torch.equal(graphed, eager)
    assert ReplayingRunner.captures > 0 and ReplayingRunner.replays > 0


def test_graph_protocol_warms_up_then_captures_once_per_group(monkeypatch):
    monkeypatch.setattr(ReplayingRunner, "captures", 0)
    monkeypatch.setattr(ReplayingRunner, "replays", 0)
    runner = ReplayingRunner(torch.zeros(2, 1), True, "auto")
    seen = torch.full((14,), -1, dtype=torch.int64)
    for n in (10, 1, 3):
        runner.run(lambda t: seen.index_copy_(0, t, t), n)  # each step writes its step number
    assert seen.tolist() == list(range(14)) and runner.t == 14 and int(runner.counter) == 14
    warm = step_graphs.WARMUP_STEPS
    assert ReplayingRunner.captures == 2 and ReplayingRunner.replays == (10 - warm) + (3 - warm)


def test_recorded_graph_replays_recorded_tensors_not_python():
    # The stand-in is as strict as a graph: a step that rebinds its state replays on the
    # captured tensors, and Python values computed at capture stay frozen.
    x = torch.zeros(3)
    state = {"x": x, "calls": 0}

    def rebinding_step():
        state["calls"] += 1
        state["x"] = state["x"] + 1.0  # a new tensor: a graph keeps writing the captured one

    graph = RecordedGraph()
    graph.capture(rebinding_step)
    captured_out = state["x"]
    for _ in range(3):
        graph.replay()
    assert state["calls"] == 1  # Python ran once, at capture
    assert torch.equal(x, torch.zeros(3))  # the input was never updated in place
    assert torch.equal(captured_out, torch.ones(3))  # every replay recomputed x + 1 from x = 0

    y = torch.zeros(3)
    graph = RecordedGraph()
    graph.capture(lambda: y.add_(1.0))
    assert torch.equal(y, torch.zeros(3))  # capture runs nothing
    for _ in range(3):
        graph.replay()
    assert torch.equal(y, torch.full((3,), 3.0))


def test_recorded_graph_refuses_host_syncs(monkeypatch):
    monkeypatch.setattr(samplers, "StepRunner", ReplayingRunner)
    mix, x = _mixture_case()

    def syncing_score(y):
        return mix.score(y) * float(y.abs().max())

    with pytest.raises(RuntimeError, match="could not be captured"):
        samplers.langevin(syncing_score, x.clone(), steps=5, step_size=0.01, cuda_graph=True)
