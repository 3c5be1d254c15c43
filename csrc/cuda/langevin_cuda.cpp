// CUDA implementation of scorefast::langevin_step, langevin_step_ and langevin_step_counter_
// (entry points and checks in csrc/langevin_op.h), through the torch-free launchers of
// langevin_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../langevin_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "langevin_launchers.h"

namespace scorefast {
namespace {

struct LangevinCuda : CudaDevice {
  // Runs the kernels for a prepared call on x's device, writing into `out` (contiguous, same
  // device; may alias x). step_counter: null, or a device int64 read as the step when the
  // kernel runs.
  static void run(LangevinCall& call, const at::Tensor& out, const int64_t* step_counter) {
    LangevinArgs args = call.args;
    args.out = out.data_ptr();
    if (args.num_particles * args.particle_size == 0) return;
    const c10::DeviceGuard guard(call.x.device());
    const cudaStream_t stream = current_stream(call.x.device());
    at::Tensor factors;  // freed after the launches: the caching allocator orders reuse on this stream
    if (call.max_score_norm.has_value()) {
      factors = at::empty({args.num_particles}, call.x.options().dtype(acc_dtype_of(call.x)));
      check_cuda_result(cuda::launch_score_clip_factors(args, *call.max_score_norm, factors.data_ptr(), stream),
                        "langevin_step (score clip factors)");
      args.score_factor = factors.data_ptr();
    }
    check_cuda_result(cuda::launch_langevin(args, stream, step_counter), "langevin_step");
  }
};

using Ops = LangevinOps<LangevinCuda>;

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("langevin_step", &Ops::langevin_step);
  m.impl("langevin_step_", &Ops::langevin_step_);
  m.impl("langevin_step_counter_", &Ops::langevin_step_counter_);
}

}  // namespace scorefast
