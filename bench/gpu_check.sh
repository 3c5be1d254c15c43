#!/usr/bin/env bash
# The GPU check: one script for a short GPU lease (under 8 minutes on one H100/H200).
#
#   bash bench/gpu_check.sh            # from the repository root, on a machine with a GPU
#
# 1. builds the extension for the visible GPU (TORCH_CUDA_ARCH_LIST from the device),
# 2. `scorefast backends` must report cuda and triton available (on CUDA tensors),
# 3. runs the CUDA runtime tests and the Triton and kernel tests on the GPU (no emulator,
#    no interpreter: tests/conftest.py only turns those on when no GPU is visible),
# 4. runs the benchmarks at reduced sizes on the GPU, writing JSON to bench/results/.
# Uses the python on PATH (or $PYTHON) with torch, triton and numba installed: no network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${GPU_CHECK_LOG:-bench/results/gpu_check.log}
mkdir -p bench/results
exec > >(tee "$LOG") 2>&1

step() { echo; echo "== $* ($(date +%T))"; }

step "device"
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU visible"
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__} (CUDA {torch.version.cuda})")
PY
ARCH=$("$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.major}.{p.minor}')")

step "build for sm_${ARCH/./}"
unset TRITON_INTERPRET SCOREFAST_CUDA_EMULATOR
TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-16} "$PY" -m pip install -q --no-build-isolation --no-deps -e .

step "backends"
"$PY" -m scorefast backends
"$PY" - <<'PY'
import scorefast
b = scorefast.backends()
for name in ("cpp", "cuda", "triton"):
    assert b[name].available and (name == "cpp" or "cuda" in b[name].devices), f"{name}: {b[name].reason}"
PY

step "CUDA runtime, Triton and kernel tests on the GPU"
export SCOREFAST_REQUIRE_BACKENDS=cpp,cuda,triton,numba SCOREFAST_REQUIRE_NVCC=1
"$PY" -m pytest -q -x -p no:cacheprovider tests/test_cuda_runtime.py tests/test_triton_noise.py \
    tests/test_gmm_triton.py tests/test_compile_counter.py tests/test_architecture.py
"$PY" -m pytest -q -x -p no:cacheprovider tests/test_langevin.py tests/test_noise.py tests/test_gmm.py \
    tests/test_dsm.py tests/test_dsm_vp.py tests/test_dsm_vp_diffusers.py tests/test_chain.py tests/test_step_graphs.py \
    -k "cuda or triton"

step "benchmarks (reduced sizes)"
"$PY" bench/bench_langevin.py --device cuda --min-log2 16 --max-log2 26
"$PY" bench/bench_langevin.py --device cuda --min-log2 20 --max-log2 26 --particle-size 2
"$PY" bench/bench_noise.py --device cuda --min-log2 20 --max-log2 28
"$PY" bench/bench_gmm.py --device cuda --quick
"$PY" bench/bench_dsm.py --device cuda --quick
"$PY" bench/bench_chain.py --device cuda --quick
"$PY" bench/bench_samplers.py --device cuda --quick

step "done"
