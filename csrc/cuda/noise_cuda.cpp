// CUDA implementations of the noise-contract ops (philox_fill_, normal_fill_ and their
// *_counter_ variants; entry points and checks in csrc/noise_op.h), through the torch-free
// launchers of noise_kernels.cu.
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../noise_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "noise_launchers.h"

namespace scorefast {
namespace {

// step_counter: null, or a device int64 read as the step when the kernel runs.
struct NoiseCuda : CudaDevice {
  static void philox_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                          const int64_t* step_counter) {
    check(out, "out");
    check_philox_fill(out, step, particle_offset);
    if (out.numel() == 0) return;
    const c10::DeviceGuard guard(out.device());
    check_cuda_result(
        cuda::launch_philox_fill(out.data_ptr<int64_t>(), out.size(0), out.size(1), static_cast<uint64_t>(seed),
                                 static_cast<uint32_t>(step), static_cast<uint64_t>(particle_offset),
                                 current_stream(out.device()), step_counter),
        "philox_fill_");
  }

  static void normal_fill(at::Tensor& out, int64_t seed, int64_t step, int64_t particle_offset,
                          const int64_t* step_counter) {
    check(out, "out");
    check_normal_fill(out, step, particle_offset);
    if (out.numel() == 0) return;
    const int64_t D = out.numel() / out.size(0);
    const c10::DeviceGuard guard(out.device());
    check_cuda_result(
        cuda::launch_normal_fill(out.data_ptr(), storage_type_of(out, "out"), out.size(0), D,
                                 static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
                                 static_cast<uint64_t>(particle_offset), current_stream(out.device()), step_counter),
        "normal_fill_");
  }
};

using Ops = NoiseOps<NoiseCuda>;

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("philox_fill_", &Ops::philox_fill_);
  m.impl("normal_fill_", &Ops::normal_fill_);
  m.impl("philox_fill_counter_", &Ops::philox_fill_counter_);
  m.impl("normal_fill_counter_", &Ops::normal_fill_counter_);
}

}  // namespace scorefast
