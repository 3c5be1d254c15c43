"""The header of verify's results: the machine, the software versions, the backends and the
switches that decide what ran."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import socket

import torch

import scorefast

from .. import _env, _extension, backend_registry
from ..benchmarks.harness import machine_name


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_isa() -> str | None:
    ext = _extension.extension()
    return ext.cpu_isa() if ext is not None else None


def header(backend_names=backend_registry.NAMES, **settings) -> dict:
    """Machine, versions, the availability of ``backend_names``, the emulation switches and ``settings``."""
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "tool": "scorefast verify",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "machine": machine_name(torch.device("cpu")),
        "platform": platform.platform(),
        "gpus": gpus,
        "versions": {
            "scorefast": scorefast.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "numpy": _version("numpy"),
            "numba": _version("numba"),
            "triton": _version("triton"),
        },
        "cpu_isa": _cpu_isa(),
        "threads": torch.get_num_threads(),
        "environment": {name: os.environ.get(name) for name in ("TRITON_INTERPRET", _env.CUDA_EMULATOR_FLAG)},
        "backends": {
            name: {"available": s.available, "devices": list(s.devices), "reason": s.reason}
            for name, s in ((n, backend_registry.status(n)) for n in backend_names)
        },
        **settings,
    }
