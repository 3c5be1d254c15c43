"""The CUDA backend compiles: every csrc/cuda/*.cu with nvcc (one architecture), and the
torch glue csrc/cuda/*.cpp syntax-checked with the host compiler against torch's
headers. Runs without a GPU (and with a CPU torch); skipped when nvcc is missing unless
SCOREFAST_REQUIRE_NVCC=1. Also checks that the device code stays torch-free and that
nothing builds it with fast math (the noise contract needs precise logf/sinf/cosf).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
CUDA_DIR = os.path.join(CSRC, "cuda")
CU_FILES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")))
GLUE_FILES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cpp")))
ARCH = os.environ.get("SCOREFAST_TEST_CUDA_ARCH", "sm_90")
TIMEOUT_S = 300

# Device-side sources: no torch, ATen, c10 or pybind11 headers (they must build with nvcc alone).
TORCH_FREE = (
    CU_FILES
    + sorted(glob.glob(os.path.join(CUDA_DIR, "*.cuh")))
    + [
        *sorted(glob.glob(os.path.join(CUDA_DIR, "*_launchers.h"))),
        *sorted(glob.glob(os.path.join(CSRC, "include", "scorefast", "*.h"))),
    ]
)
TORCH_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](torch|ATen|c10|caffe2|pybind11)/', re.MULTILINE)
FAST_MATH = re.compile(r"use_fast_math|--ftz=true|prec-div=false|prec-sqrt=false|-ffast-math")


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def _require_nvcc() -> bool:
    return os.environ.get("SCOREFAST_REQUIRE_NVCC") == "1"


def _missing(what: str):
    if _require_nvcc():
        pytest.fail(f"{what} (SCOREFAST_REQUIRE_NVCC=1)")
    pytest.skip(what)


def _cuda_home_candidates():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            yield os.environ[var]
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001 - torch missing or broken: fall back to nvcc's location
        CUDA_HOME = None
    if CUDA_HOME:
        yield CUDA_HOME
    yield "/usr/local/cuda"


def find_nvcc() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc:
        return nvcc
    for home in _cuda_home_candidates():
        candidate = os.path.join(home, "bin", "nvcc")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def cuda_include_dir(nvcc: str) -> str | None:
    """The CUDA toolkit's include directory (holding cuda_runtime_api.h)."""
    homes = list(_cuda_home_candidates())
    homes.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    try:  # nvcc may be a wrapper script: ask it where the toolkit is
        dry = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
        m = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
        if m:
            homes.append(m.group(1).strip())
    except (OSError, subprocess.SubprocessError):
        pass
    for home in homes:
        for inc in (os.path.join(home, "include"), os.path.join(home, "targets", "x86_64-linux", "include")):
            if os.path.isfile(os.path.join(inc, "cuda_runtime_api.h")):
                return os.path.normpath(inc)
    return None


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)


def _report(cmd, proc) -> str:
    return f"$ {' '.join(cmd)}\n(exit {proc.returncode})\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def nvcc():
    path = find_nvcc()
    if path is None:
        _missing("nvcc not found (put it on PATH or set CUDA_HOME)")
    return path


def test_cuda_sources_exist():
    names = {os.path.basename(p) for p in glob.glob(os.path.join(CUDA_DIR, "*"))}
    ops = ("noise", "langevin", "gmm", "chain", "dsm", "dsm_vp")
    expected = {f"{op}_{part}" for op in ops for part in ("kernels.cu", "launchers.h", "cuda.cpp")}
    assert expected | {"gmm_device.cuh", "cuda_device.h"} <= names


@pytest.mark.parametrize("path", TORCH_FREE, ids=_rel)
def test_device_code_is_torch_free(path):
    with open(path, encoding="utf-8") as f:
        found = TORCH_INCLUDE.findall(f.read())
    assert not found, f"{_rel(path)} includes torch-side headers ({', '.join(sorted(set(found)))})"


def test_no_fast_math_in_build():
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        text = f.read()
    assert not FAST_MATH.search(text), "setup.py must not build the kernels with fast math"


@pytest.mark.parametrize("path", CU_FILES, ids=_rel)
def test_cu_compiles_with_nvcc(nvcc, path, tmp_path):
    obj = tmp_path / (os.path.basename(path) + ".o")
    cmd = [
        nvcc,
        "-c",
        "-std=c++17",
        "-O3",
        f"-arch={ARCH}",
        "--expt-relaxed-constexpr",
        "-DSCOREFAST_WITH_CUDA",
        "-Xptxas",
        "-v",
        "-I",
        os.path.join(CSRC, "include"),
        "-I",
        CSRC,
        "-o",
        str(obj),
        path,
    ]
    proc = _run(cmd)
    assert proc.returncode == 0 and obj.is_file(), _report(cmd, proc)
    # Register spills in a bandwidth-bound kernel are a performance bug.
    spills = re.findall(r"(\d+) bytes spill stores", proc.stdout + proc.stderr)
    assert all(int(n) == 0 for n in spills), "register spills:\n" + _report(cmd, proc)


@pytest.mark.parametrize("path", GLUE_FILES, ids=_rel)
def test_cuda_glue_syntax_checks(nvcc, path):
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        _missing("no host C++ compiler (g++)")
    cuda_inc = cuda_include_dir(nvcc)
    if cuda_inc is None:
        _missing("CUDA include directory (cuda_runtime_api.h) not found; set CUDA_HOME")
    from torch.utils.cpp_extension import include_paths

    cmd = [cxx, "-fsyntax-only", "-std=c++17", "-DSCOREFAST_WITH_CUDA"]
    for inc in [*include_paths(), cuda_inc, os.path.join(CSRC, "include"), CSRC]:
        cmd += ["-I", inc]
    cmd.append(path)
    proc = _run(cmd)
    assert proc.returncode == 0, _report(cmd, proc)
