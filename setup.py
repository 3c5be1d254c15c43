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
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions():
    if os.environ.get("SCOREFAST_SKIP_EXTENSION") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    sources = _rel("csrc/*.cpp") + _rel("csrc/cpu/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno"]
    link_flags = ["-fopenmp"]
    define_macros = []

    want_cuda = os.environ.get("SCOREFAST_SKIP_CUDA") != "1"
    has_cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if want_cuda and not has_cuda:
        reason = "torch is a CPU build" if torch.version.cuda is None else "nvcc (CUDA_HOME) not found"
        warnings.warn(f"scorefast: building without CUDA kernels ({reason})")
    if want_cuda and has_cuda:
        sources += _rel("csrc/cuda/*.cpp") + _rel("csrc/cuda/*.cu")
        define_macros.append(("SCOREFAST_WITH_CUDA", "1"))
        nvcc_flags = ["-O3", "-std=c++17", "-lineinfo", "--expt-relaxed-constexpr"]
        ext = CUDAExtension(
            "scorefast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=link_flags,
        )
    else:
        ext = CppExtension(
            "scorefast._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

# kernels/ (Triton and numba) installs as scorefast.kernels, editable installs included.
PACKAGES = find_packages(include=["scorefast", "scorefast.*"])
PACKAGES += ["scorefast.kernels"] + [f"scorefast.kernels.{p}" for p in find_packages("kernels")]

setup(
    packages=PACKAGES,
    package_dir={"scorefast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
