#!/usr/bin/env bash
# Build the full extension (C++ CPU + CUDA kernels) against a CUDA build of torch, on any
# machine with nvcc, GPU or not, and check that it loads. Catches what a CPU-only build cannot:
# the CUDA glue and kernels compiled by the real toolchain against torch's CUDA headers, and
# build flags that a newer torch rejects (e.g. a forced C++ standard).
#
#   bash tools/build_against_cuda_torch.sh                 # torch 2.14.1, sm_90
#   TORCH_SPEC="torch==2.11.0" ARCH="8.0;9.0" bash tools/build_against_cuda_torch.sh
#
# Works on a copy of the committed tree in a temporary folder, with its own venv (a CUDA torch
# is several GB), so the checkout and its .venv are untouched. Needs nvcc whose CUDA major
# matches the torch build's.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1}
ARCH=${ARCH:-9.0}
WORK=${WORK:-$(mktemp -d /tmp/scorefast-cuda-build.XXXXXX)}
VENV=${VENV:-$WORK/venv}

echo "tree: $(git -C "$ROOT" rev-parse --short HEAD), torch: $TORCH_SPEC, arch: $ARCH, in $WORK"
command -v nvcc >/dev/null || { echo "nvcc not found"; exit 1; }
nvcc --version | tail -2

mkdir -p "$WORK/src"
git -C "$ROOT" archive HEAD | tar -x -C "$WORK/src"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "$TORCH_SPEC" numpy tqdm ninja "setuptools>=70" wheel
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

cd "$WORK/src"
TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-2} "$VENV/bin/pip" install --no-build-isolation --no-deps -e . 2>&1 \
    | grep -v "^WARNING: Location" | tail -20

cd "$WORK"
"$VENV/bin/python" - <<'PY'
import scorefast
ext = scorefast._extension.extension()
assert ext is not None, scorefast._extension.extension_error()
assert ext.built_with_cuda(), "the extension was built without its CUDA kernels"
import torch
ops = [op for op in scorefast.ops.schemas() if torch._C._dispatch_has_kernel_for_dispatch_key(f"scorefast::{op}", "CUDA")]
missing = sorted(set(scorefast.ops.schemas()) - set(ops))
assert not missing, f"no CUDA kernel for {missing}"
print(f"ok: scorefast._C built with CUDA kernels for {len(ops)} ops; CPU ISAs {ext.supported_cpu_isas()}")
PY
