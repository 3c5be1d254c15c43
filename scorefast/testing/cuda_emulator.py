"""The CUDA kernels on the CPU: a host build of csrc/cuda/*.cu for testing without a GPU.

With ``SCOREFAST_CUDA_EMULATOR=1`` the ``cuda`` backend runs its kernels, unchanged, on
CPU tensors: the .cu sources are compiled by the host C++ compiler against a small
emulation of the CUDA runtime (csrc/cuda_emulator/cuda_runtime.h). Every thread of a
block is a fiber, so barriers, warp shuffles and shared memory behave as on a GPU, and
misuse CUDA leaves undefined (a shuffle naming an exited lane, a deadlocked barrier, too
much dynamic shared memory) raises. The point is to check the CUDA kernels' indexing,
reductions and arithmetic against the references where no GPU is at hand, as
``TRITON_INTERPRET=1`` does for Triton. It is slow and needs the source tree (csrc/),
a C++ compiler and ninja; the first use builds it (about a minute) under build/.

What it cannot show: speed, stream and CUDA-graph behaviour, and the reduced precision
of fast-math device intrinsics (the kernels use correctly rounded ones).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from .._backend import Backend
from .._env import CUDA_EMULATOR_FLAG, cuda_emulator_requested
from ..ops import register_namespace

ENV_FLAG = CUDA_EMULATOR_FLAG
LIBRARY = "scorefast_cuda_emulator"

# A source checkout: the package sits beside csrc/ (SCOREFAST_SOURCE_DIR names another one).
_ROOT = Path(os.environ.get("SCOREFAST_SOURCE_DIR", Path(__file__).resolve().parents[2]))
_CSRC = _ROOT / "csrc"

# kernel<<<grid, block[, smem[, stream]]>>>(args) -> ::sf_emu::launch(kernel, grid, ...)(args)
_LAUNCH = re.compile(r"(\b[A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>")
# extern __shared__ [__align__(n)] T name[];  ->  T* name = <the launch's dynamic buffer>;
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+(?:\s+[\w:]+)*)\s+(\w+)\[\]\s*;")


requested = cuda_emulator_requested


def translate(source: str) -> str:
    """A .cu file's text as C++ for the emulator (launch syntax and dynamic shared memory)."""
    out = _LAUNCH.sub(lambda m: f"::sf_emu::launch({m.group(1)}, {m.group(2)})", source)
    out = _DYNAMIC_SHARED.sub(
        lambda m: (
            f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::sf_emu::launch_state().dynamic_smem);"
        ),
        out,
    )
    if "<<<" in out or "extern __shared__" in out:
        raise RuntimeError("a kernel launch or dynamic shared array the emulator cannot translate")
    return out


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def build_directory() -> Path:
    return Path(os.environ.get("SCOREFAST_CUDA_EMULATOR_BUILD", _ROOT / "build" / "cuda_emulator"))


@functools.cache
def load() -> str:
    """Builds (once; ninja rebuilds what changed) and loads the emulated kernels into
    ``torch.ops.scorefast_cuda_emulator``; returns the library's path. Raises with the
    reason when it cannot."""
    if not (_CSRC / "cuda").is_dir():
        raise RuntimeError(f"the CUDA sources are not here ({_CSRC}); the emulator needs a source checkout")
    from torch.utils import cpp_extension

    build = build_directory()
    generated = build / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    sources = []
    for cu in sorted((_CSRC / "cuda").glob("*.cu")) + [_CSRC / "cuda_emulator" / "self_test.cu"]:
        cpp = generated / (cu.stem + ".cpp")
        # #line keeps compiler messages pointing at the .cu file.
        _write_if_changed(cpp, f'#line 1 "{cu}"\n' + translate(cu.read_text()))
        sources.append(str(cpp))
    sources += [str(p) for p in sorted((_CSRC / "cuda").glob("*.cpp"))]
    sources += [str(_CSRC / "cuda_emulator" / "emulator.cpp"), str(_CSRC / "cuda_emulator" / "registration.cpp")]
    flags = [
        "-O2",
        "-ffp-contract=off",  # the CUDA kernels round every operation (__fadd_rn, ...)
        "-Wno-unknown-pragmas",
        "-DSCOREFAST_CUDA_EMULATION",
        f"-DSCOREFAST_OPS_LIBRARY={LIBRARY}",
        "-DSCOREFAST_CUDA_DISPATCH_KEY=CPU",
    ]
    includes = [str(_CSRC / "cuda_emulator"), str(_CSRC / "include"), str(_CSRC / "cuda"), str(_CSRC)]
    path = cpp_extension.load(
        name=LIBRARY,
        sources=sources,
        extra_cflags=flags,
        extra_include_paths=includes,
        build_directory=str(build),
        is_python_module=False,
        verbose=False,
    )
    register_namespace(LIBRARY, define=True)
    return path if isinstance(path, str) else str(path)


def _status() -> tuple[bool, tuple[str, ...], str]:
    try:
        load()
    except Exception as exc:  # no compiler, no ninja, no source tree, a build error
        return False, (), f"the CUDA emulator failed to build ({type(exc).__name__}: {exc})"
    return True, ("cpu",), "emulated on the CPU (slow; for testing)"


# The cuda backend while SCOREFAST_CUDA_EMULATOR=1: the CUDA kernels under the CPU key of a
# namespace of their own.
BACKEND = Backend("cuda", LIBRARY, "CPU", _status)
