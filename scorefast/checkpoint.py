"""Checkpoint files: written atomically, read without executing code.

A checkpoint holds only tensors, dicts, lists, strings and numbers, so it is read with
``torch.load(weights_only=True)``: a file carrying pickled objects (code) is refused. Writes go
to a temporary file in the same folder, then replace the target in one rename, so a crash never
leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

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
    for key, types in keys.items():
        if key not in state:
            raise CheckpointError(f"{path!r} is not a {kind} checkpoint (no {key!r} entry)")
        if not isinstance(state[key], types):
            raise CheckpointError(f"{path!r}: entry {key!r} must be {types}, got {type(state[key]).__name__}")
    return state
