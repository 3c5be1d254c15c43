// The emulator's self-test ops (self_test.cu). The scorefast op schemas are declared in the
// emulator's library from Python (scorefast/ops/); csrc/cuda/*_cuda.cpp, compiled for the
// emulator, registers the CUDA kernels there under the CPU key.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cuda_runtime.h>

#include "ops_library.h"

namespace scorefast {
namespace emulator_test {
cudaError_t launch_shuffle(float* out, int threads, int mode, int arg, int width);
cudaError_t launch_block_sum(const double* in, int64_t n, double* out, int blocks, int threads);
cudaError_t launch_mirror(float* out, int threads, size_t smem_bytes, bool opt_in);
cudaError_t launch_exited_lane(float* out);

namespace {

void check(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "launch failed: ", cudaGetErrorName(err)); }

void shuffle(at::Tensor& out, int64_t mode, int64_t arg, int64_t width) {
  check(launch_shuffle(out.data_ptr<float>(), static_cast<int>(out.numel()), static_cast<int>(mode),
                       static_cast<int>(arg), static_cast<int>(width)));
}

void block_sum(const at::Tensor& in, at::Tensor& out, int64_t threads) {
  check(launch_block_sum(in.const_data_ptr<double>(), in.numel(), out.data_ptr<double>(), static_cast<int>(out.numel()),
                         static_cast<int>(threads)));
}

void mirror(at::Tensor& out, int64_t smem_bytes, bool opt_in) {
  check(launch_mirror(out.data_ptr<float>(), static_cast<int>(out.numel()), static_cast<size_t>(smem_bytes), opt_in));
}

void exited_lane(at::Tensor& out) { check(launch_exited_lane(out.data_ptr<float>())); }

}  // namespace
}  // namespace emulator_test
}  // namespace scorefast

TORCH_LIBRARY_FRAGMENT(SCOREFAST_OPS_LIBRARY, m) {
  m.def("emulator_shuffle_(Tensor(a!) out, int mode, int arg, int width) -> ()");
  m.def("emulator_block_sum_(Tensor values, Tensor(a!) out, int threads) -> ()");
  m.def("emulator_mirror_(Tensor(a!) out, int smem_bytes, bool opt_in) -> ()");
  m.def("emulator_exited_lane_(Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, CPU, m) {
  m.impl("emulator_shuffle_", &scorefast::emulator_test::shuffle);
  m.impl("emulator_block_sum_", &scorefast::emulator_test::block_sum);
  m.impl("emulator_mirror_", &scorefast::emulator_test::mirror);
  m.impl("emulator_exited_lane_", &scorefast::emulator_test::exited_lane);
}
