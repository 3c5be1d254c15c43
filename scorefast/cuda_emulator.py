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

ENV_FLAG = "SCOREFAST_CUDA_EMULATOR"
LIBRARY = "scorefast_cuda_emulator"

_ROOT = Path(__file__).resolve().parent.parent
_CSRC = _ROOT / "csrc"

# kernel<<<grid, block[, smem[, stream]]>>>(args) -> ::sf_emu::launch(kernel, grid, ...)(args)
_LAUNCH = re.compile(r"(\b[A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>")
# extern __shared__ [__align__(n)] T name[];  ->  T* name = <the launch's dynamic buffer>;
_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+(?:\s+[\w:]+)*)\s+(\w+)\[\]\s*;")


def requested() -> bool:
    """True when ``SCOREFAST_CUDA_EMULATOR`` asks for the emulated CUDA backend."""
    return os.environ.get(ENV_FLAG, "0") not in ("", "0")


def translate(source: str) -> str:
    """A .cu file's text as C++ for the emulator (launch syntax and dynamic shared memory)."""
    out = _LAUNCH.sub(lambda m: f"::sf_emu::launch({m.group(1)}, {m.group(2)})", source)
    out = _DYNAMIC_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::sf_emu::launch_state().dynamic_smem);",
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


@functools.lru_cache(maxsize=None)
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
    sources += [str(_CSRC / "dsm_autograd.cpp"),
                str(_CSRC / "cuda_emulator" / "emulator.cpp"), str(_CSRC / "cuda_emulator" / "registration.cpp")]
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
        name=LIBRARY, sources=sources, extra_cflags=flags, extra_include_paths=includes,
        build_directory=str(build), is_python_module=False, verbose=False,
    )
    _register_extras()
    return path if isinstance(path, str) else str(path)


def _register_extras() -> None:
    """The fake kernels and Python autograd the scorefast ops have (dsm_loss's autograd is
    in C++, compiled into the library)."""
    from . import chain, dsm, gmm, langevin

    langevin.register_op_extras(LIBRARY, counter=True)
    gmm.register_op_extras(LIBRARY)
    dsm.register_op_extras(LIBRARY, autograd=False)
    chain.register_op_extras(LIBRARY)
