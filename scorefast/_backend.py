"""What a backend says about itself to the registry (``scorefast.backend_registry``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backend:
    """One kernel backend.

    Attributes:
        name: 'cpp', 'cuda', 'triton' or 'numba'.
        namespace: the ``torch.ops`` namespace holding its ops.
        dispatch_key: the dispatch key of its kernels where backends share a namespace (cpp and
            cuda share ``scorefast``), None for a namespace of its own.
        status: () -> (available, device types it runs on, why not / a note); loads the
            backend's ops on first call (cached by the registry).
    """

    name: str
    namespace: str
    dispatch_key: str | None
    status: Callable[[], tuple[bool, tuple[str, ...], str]]
