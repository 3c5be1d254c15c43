"""setup.py's build decisions: flags derived from the torch in use (no forced C++ standard, which
broke the build against torch 2.14's C++20 headers), and the CUDA kernels built only where a
matching nvcc exists (a CUDA_HOME without a compiler, or another CUDA major than torch's,
builds the CPU kernels instead of failing the install)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.py"


@pytest.fixture(scope="module")
def setup_module():
    spec = importlib.util.spec_from_file_location("scorefast_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the helpers, builds nothing
    return module


def test_no_forced_language_standard(setup_module):
    for flag in setup_module.CXX_FLAGS + setup_module.NVCC_FLAGS:
        assert not flag.startswith(("-std", "--std")), flag


def test_cpu_torch_builds_no_cuda(setup_module):
    assert setup_module.cuda_build_plan(None, "/usr/local/cuda") == (False, "torch is a CPU build", None)


def test_cuda_home_without_nvcc_builds_no_cuda(setup_module, tmp_path):
    (tmp_path / "bin").mkdir()  # a runtime-only CUDA folder
    build, reason, _ = setup_module.cuda_build_plan("13.0", str(tmp_path))
    assert not build and "no nvcc" in reason


def test_major_mismatch_builds_no_cuda(setup_module):
    build, reason, _ = setup_module.cuda_build_plan("12.8", "/cuda", nvcc_version=lambda home: (13, 0))
    assert not build and "CUDA 13.0" in reason and "12.8" in reason


def test_matching_nvcc_builds_cuda(setup_module):
    plan = setup_module.cuda_build_plan(
        "13.0", "/cuda", nvcc_version=lambda home: (13, 2), toolkit_root=lambda home: "/opt/cuda-13.2"
    )
    assert plan == (True, "", "/opt/cuda-13.2")


def test_toolkit_without_headers_builds_no_cuda(setup_module):
    build, reason, _ = setup_module.cuda_build_plan(
        "13.0", "/usr/local", nvcc_version=lambda home: (13, 0), toolkit_root=lambda home: None
    )
    assert not build and "no CUDA runtime headers" in reason


def test_toolkit_found_through_a_wrapper_nvcc(setup_module, tmp_path):
    # torch infers CUDA_HOME=/usr/local from a wrapper /usr/local/bin/nvcc; the headers are
    # where nvcc itself says its toolkit is.
    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "include").mkdir(parents=True)
    (toolkit / "include" / "cuda_runtime_api.h").write_text("")
    home = tmp_path / "local"
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho '#$ TOP={toolkit}' >&2\n")
    os.chmod(nvcc, 0o755)
    assert setup_module._toolkit_root(str(home)) == os.path.realpath(toolkit)
    assert setup_module._toolkit_root(str(toolkit)) == str(toolkit)


def test_nvcc_version_read_from_the_compiler(setup_module, tmp_path):
    nvcc = tmp_path / "bin" / "nvcc"
    nvcc.parent.mkdir()
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.48'\n")
    os.chmod(nvcc, 0o755)
    assert setup_module._nvcc_version(str(tmp_path)) == (13, 0)
