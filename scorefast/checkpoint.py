"""Checkpoint files: written atomically, read without executing code.

A checkpoint holds only tensors, dicts, lists, strings and numbers, so it is read with
``torch.load(weights_only=True)``: a file carrying pickled objects (code) is refused. Writes go
to a temporary file in the same folder, then replace the target in one rename, so a crash never
leaves a half-written checkpoint under the real name (and a failed write keeps the previous one).

``ChainCheckpoint`` is the samplers' and gmm_chain's use of it: the state of a chain, written every
k steps and resumed from (``checkpoint=``, ``checkpoint_every=``, ``resume=``).
"""

from __future__ import annotations

import numbers
import os
import tempfile

import torch


class CheckpointError(ValueError):
    """A checkpoint file that is missing, empty, truncated, foreign or of the wrong kind."""


def save(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` (tensors, dicts, lists, strings, numbers) to ``path`` atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike, *, kind: str, keys: dict[str, type | tuple[type, ...]]) -> dict:
    """Read a checkpoint of ``kind`` (named in errors) that must hold ``keys`` with those types.

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a torch checkpoint, holds
            objects beyond tensors and containers (refused: loading them would run code), or
            lacks a key or has one of the wrong type.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{kind} checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{kind} checkpoint {path!r} is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, a refused global...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path!r} is not a readable {kind} checkpoint ({type(exc).__name__}: {first_line})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path!r} is not a {kind} checkpoint (holds a {type(state).__name__}, not a dict)")
    check_keys(state, path, kind=kind, keys=keys)
    return state


def check_keys(state: dict, path: str, *, kind: str, keys: dict[str, type | tuple[type, ...]]) -> None:
    """CheckpointError unless ``state`` (read from ``path``) holds ``keys`` with those types."""
    for key, types in keys.items():
        if key not in state:
            raise CheckpointError(f"{path!r} is not a {kind} checkpoint (no {key!r} entry)")
        if not isinstance(state[key], types):
            raise CheckpointError(f"{path!r}: entry {key!r} must be {types}, got {type(state[key]).__name__}")


CHAIN_FORMAT = "scorefast chain checkpoint"
CHAIN_VERSION = 1
_CHAIN_KEYS = {
    "format": str,
    "version": int,
    "sampler": str,
    "settings": dict,
    "step": int,
    "tensors": dict,
    "position": dict,
}


def _plain(value, name: str):
    """A setting as a checkpoint stores it: Python numbers, strings, lists, CPU tensors."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{name} must be a number, string, list or tensor to be checkpointed, got {type(value).__name__}")


def _same(saved, value) -> bool:
    if isinstance(saved, torch.Tensor) or isinstance(value, torch.Tensor):
        return (
            isinstance(saved, torch.Tensor)
            and isinstance(value, torch.Tensor)
            and saved.shape == value.shape
            and saved.dtype == value.dtype
            and torch.equal(saved.cpu(), value.cpu())
        )
    return type(saved) is type(value) and saved == value


def _shown(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}" if value.numel() > 8 else repr(value.tolist())
    return repr(value)


def _check_diagnostics(diagnostics) -> None:
    if diagnostics is not None and not all(
        callable(getattr(diagnostics, m, None)) for m in ("update", "due", "state_dict", "load_state_dict")
    ):
        raise TypeError(f"chain_diagnostics must be a ChainDiagnostics, got {type(diagnostics).__name__}")


class ChainCheckpoint:
    """A chain's checkpoints: its state written to ``path`` every ``every`` steps and at the end, and, with
    ``resume``, read back before the run so that it continues from there.

    The file holds the format and version, the sampler, the settings that fix the chain (schedule, seed,
    noise counters, the particles' shape and dtype), the next step, the state tensors (particles, and
    e.g. MALA's acceptance counts), where the chain is (e.g. the annealing level, for reading), and the
    state of a ChainDiagnostics fed by the run. Resuming with other settings is refused, naming the
    setting; a seed of None on resume takes the checkpoint's.

    Args:
        path: the checkpoint file, or None (no checkpoints; then ``every`` must be 0 and ``resume`` False).
        every: k > 0 writes after every step that is a multiple of k; 0 only at the end.
        resume: continue from ``path`` (which must exist and hold this sampler's chain).
        sampler: the chain's name, e.g. 'ula'.
        settings: the chain's identity: ints, floats, strings, lists or tensors; ``seed`` may be None.
        x: the particles (N, ...): their shape and dtype are part of the identity.
        total_steps: the chain's number of steps (a checkpoint's step must lie in 0 .. total_steps).
    """

    def __init__(self, path, every, resume, *, sampler: str, settings: dict, x: torch.Tensor, total_steps: int):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a file path (str or os.PathLike) or None, got {type(path).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"checkpoint_every must be an int >= 0 (0: only at the end), got {every!r}")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be a bool, got {type(resume).__name__}")
        if path is None and every:
            raise ValueError("checkpoint_every needs checkpoint, the file to write")
        if path is None and resume:
            raise ValueError("resume=True needs checkpoint, the file to resume from")
        self.path = None if path is None else os.fspath(path)
        self.every = every
        self.sampler = sampler
        self.total_steps = total_steps
        settings = dict(settings, shape=list(x.shape), dtype=str(x.dtype).removeprefix("torch."))
        self.settings = {key: _plain(value, key) for key, value in settings.items()}
        self.step = 0  # the next step of the chain
        self._saved_at = None
        self._state = self._read() if resume else None
        if self._state is not None:
            self.step = self._saved_at = self._state["step"]

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> dict:
        kind = "scorefast chain"
        state = load(self.path, kind=kind, keys={"format": str})
        if state["format"] != CHAIN_FORMAT:
            raise CheckpointError(f"{self.path!r} is not a {kind} checkpoint (its format is {state['format']!r})")
        check_keys(state, self.path, kind=kind, keys=_CHAIN_KEYS)
        if state["version"] != CHAIN_VERSION:
            raise CheckpointError(
                f"{self.path!r} has format version {state['version']}; this scorefast reads version {CHAIN_VERSION}"
            )
        if state["sampler"] != self.sampler:
            raise CheckpointError(
                f"{self.path!r} holds a {state['sampler']!r} chain, not a {self.sampler!r} one; resume it with "
                f"the sampler that wrote it"
            )
        saved = state["settings"]
        for key in sorted(set(saved) | set(self.settings)):
            if key not in saved or key not in self.settings:
                raise CheckpointError(f"{self.path!r}: the checkpoint's settings differ from this run's ({key!r})")
            if key == "seed" and self.settings[key] is None:
                self.settings[key] = saved[key]  # resuming without a seed: the checkpoint's
            elif not _same(saved[key], self.settings[key]):
                raise CheckpointError(
                    f"{self.path!r} was written with {key}={_shown(saved[key])}, but this run has "
                    f"{key}={_shown(self.settings[key])}; resume with the settings of the run that wrote it"
                )
        if not 0 <= state["step"] <= self.total_steps:
            raise CheckpointError(f"{self.path!r}: step {state['step']} is outside the chain")
        return state

    def seed(self, draw) -> int:
        """The chain's seed: the one given, the checkpoint's on resume without one, else ``draw()``."""
        if self.settings.get("seed") is None:
            self.settings["seed"] = int(draw())
        return self.settings["seed"]

    def tensor(self, name: str, like: torch.Tensor | None) -> torch.Tensor | None:
        """The resumed state tensor ``name``, checked against ``like`` (shape, dtype) and on its device;
        None when not resuming (or ``like`` is None)."""
        if self._state is None or like is None:
            return None
        saved = self._state["tensors"].get(name)
        if not isinstance(saved, torch.Tensor) or saved.shape != like.shape or saved.dtype != like.dtype:
            raise CheckpointError(
                f"{self.path!r}: the state {name!r} must be a {like.dtype} tensor of shape {list(like.shape)}, "
                f"got {_shown(saved) if isinstance(saved, torch.Tensor) else type(saved).__name__}"
            )
        return saved.to(like.device)

    def has(self, name: str) -> bool:
        """Whether the resumed checkpoint holds the state tensor ``name``."""
        return self._state is not None and isinstance(self._state["tensors"].get(name), torch.Tensor)

    def restore_diagnostics(self, diagnostics) -> None:
        """Load a resumed checkpoint's ChainDiagnostics state into ``diagnostics`` (if given)."""
        _check_diagnostics(diagnostics)
        if self._state is None or diagnostics is None:
            return
        saved = self._state.get("diagnostics")
        if saved is None:
            raise CheckpointError(
                f"{self.path!r} was written without chain diagnostics, so they cannot cover the steps before it; "
                f"resume without chain_diagnostics"
            )
        try:
            diagnostics.load_state_dict(saved)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{self.path!r}: {exc}") from None
        if diagnostics.last_step > self._state["step"]:
            raise CheckpointError(f"{self.path!r}: its chain diagnostics run past its step")

    # -- writing ------------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether a checkpoint is written after ``step`` steps (1-based) of the chain."""
        return self.path is not None and self.every > 0 and step % self.every == 0

    def save(self, step: int, tensors: dict, diagnostics=None, position: dict | None = None) -> None:
        """Write the state after ``step`` steps: ``tensors`` (name -> tensor or None), a ChainDiagnostics."""
        if self.path is None:
            return
        values = list(tensors.values())
        if any(isinstance(t, torch.Tensor) and t.is_cuda for t in values):
            torch.cuda.synchronize()  # steps may run on a side stream (CUDA-graph warm-up)
        state = {
            "format": CHAIN_FORMAT,
            "version": CHAIN_VERSION,
            "sampler": self.sampler,
            "settings": self.settings,
            "step": int(step),
            "position": dict(position or {}),
            "tensors": {k: v.detach().cpu().clone() for k, v in tensors.items() if v is not None},
            "diagnostics": None if diagnostics is None else diagnostics.state_dict(),
        }
        save(state, self.path)
        self._saved_at = step

    def finish(self, step: int, tensors: dict, diagnostics=None, position: dict | None = None) -> None:
        """Write the final state (unless the checkpoint after ``step`` is already written)."""
        if self.path is not None and self._saved_at != step:
            self.save(step, tensors, diagnostics, position)

    def after_step(self, state, diagnostics, x: torch.Tensor, position=None):
        """A callable t -> None for after step t of a stepwise sampler: feeds ``diagnostics`` with x and
        writes a checkpoint of ``state()`` when one is due (``position(t)`` for reading, if given)."""
        _check_diagnostics(diagnostics)

        def hook(t: int) -> None:
            if diagnostics is not None and diagnostics.due(t):
                diagnostics.update(x, t)
            if self.due(t):
                self.save(t, state(), diagnostics, None if position is None else position(t))

        return hook
