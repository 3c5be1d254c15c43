"""Build scorefast and its compiled extension ``scorefast._C``.

The C++ CPU kernels are always built (unless SCOREFAST_SKIP_EXTENSION=1). The CUDA
kernels are added when torch is a CUDA build and nvcc is found, unless
SCOREFAST_SKIP_CUDA=1. Build without isolation so the installed torch is used:

    pip install --no-build-isolation -e .

Environment knobs:
    SCOREFAST_SKIP_EXTENSION=1   pure-Python install (reference, numba, triton backends only)
    SCOREFAST_SKIP_CUDA=1        CPU-only extension even with a CUDA torch
    TORCH_CUDA_ARCH_LIST         CUDA architectures (default: those of the visible GPUs)
    MAX_JOBS                     parallel compile jobs
"""

import glob
import os
import re
import subprocess
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _nvcc_version(cuda_home):
    """(major, minor) of nvcc in ``cuda_home``/bin, or None when there is no nvcc there."""
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _toolkit_root(cuda_home):
    """The CUDA toolkit folder holding the runtime headers: ``cuda_home`` when it has them, else
    the one nvcc reports (``nvcc --dryrun`` prints TOP=...): torch takes CUDA_HOME from nvcc's
    location, which for a wrapper script such as /usr/local/bin/nvcc is not the toolkit."""

    def has_headers(root):
        return bool(root) and os.path.exists(os.path.join(root, "include", "cuda_runtime_api.h"))

    if has_headers(cuda_home):
        return cuda_home
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    try:
        dry = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError, TypeError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
    top = m.group(1).strip() if m else None
    return os.path.realpath(top) if has_headers(top) else None


def cuda_build_plan(torch_cuda, cuda_home, nvcc_version=_nvcc_version, toolkit_root=_toolkit_root):
    """(build the CUDA kernels?, why not, the toolkit folder). ``torch_cuda`` is
    ``torch.version.cuda`` (None for a CPU torch), ``cuda_home`` torch's CUDA_HOME (set whenever
    the default CUDA folder exists, even without a compiler in it, e.g. runtime-only images)."""
    if torch_cuda is None:
        return False, "torch is a CPU build", None
    if cuda_home is None:
        return False, "no CUDA toolkit found (CUDA_HOME)", None
    version = nvcc_version(cuda_home)
    if version is None:
        return False, f"no nvcc in {os.path.join(cuda_home, 'bin')}", None
    torch_major = int(str(torch_cuda).split(".")[0])
    if version[0] != torch_major:
        return False, f"nvcc is CUDA {version[0]}.{version[1]} but torch was built with CUDA {torch_cuda}", None
    root = toolkit_root(cuda_home)
    if root is None:
        return False, f"no CUDA runtime headers under {cuda_home} (set CUDA_HOME to the toolkit)", None
    return True, "", root


# No -std flag: torch's extension builder picks the C++ standard its headers need (C++17 up to
# torch 2.13, C++20 from 2.14); forcing one breaks the build against other torch releases.
CXX_FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]


def _extensions():
    if os.environ.get("SCOREFAST_SKIP_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = _rel("csrc/*.cpp") + _rel("csrc/cpu/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    link_flags = ["-fopenmp"]
    define_macros = []

    want_cuda = os.environ.get("SCOREFAST_SKIP_CUDA") != "1"
    has_cuda, reason, toolkit = cuda_build_plan(torch.version.cuda, CUDA_HOME)
    if want_cuda and not has_cuda:
        warnings.warn(f"scorefast: building without CUDA kernels ({reason})", stacklevel=1)
    if want_cuda and has_cuda:
        # torch's include paths and nvcc come from its module-level CUDA_HOME: point it at the
        # toolkit itself (it may have been inferred from a wrapper script's folder).
        cpp_extension.CUDA_HOME = toolkit
        sources += _rel("csrc/cuda/*.cpp") + _rel("csrc/cuda/*.cu")
        define_macros.append(("SCOREFAST_WITH_CUDA", "1"))
        ext = CUDAExtension(
            "scorefast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "scorefast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=link_flags,
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


# kernels/ (Triton and numba) installs as scorefast.kernels, editable installs included.
PACKAGES = find_packages(include=["scorefast", "scorefast.*"])
PACKAGES += ["scorefast.kernels"] + [f"scorefast.kernels.{p}" for p in find_packages("kernels")]

if __name__ == "__main__":  # setuptools runs this file as __main__; tests import its helpers
    ext_modules, cmdclass = _extensions()
    setup(
        packages=PACKAGES,
        package_dir={"scorefast.kernels": "kernels"},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
    )
