// CUDA implementation of scorefast::reverse_step, reverse_step_, snr_corrector_step and
// snr_corrector_step_ (entry points and checks in csrc/diffusion_op.h), through the
// torch-free launchers of diffusion_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../diffusion_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "diffusion_launchers.h"

namespace scorefast {
namespace {

struct DiffusionCuda : CudaDevice {
  // Runs reverse_step for a prepared call on x's device, writing into `out` (contiguous, same
  // device; may alias x).
  static void run(ReverseCall& call, const at::Tensor& out) {
    ReverseArgs args = call.args;
    args.out = out.data_ptr();
    if (args.num_particles * args.particle_size == 0) return;
    const c10::DeviceGuard guard(call.x.device());
    const cudaStream_t stream = current_stream(call.x.device());
    at::Tensor factors;  // freed after the launches: the caching allocator orders reuse on this stream
    if (call.max_score_norm.has_value()) {
      factors = at::empty({args.num_particles}, call.x.options().dtype(acc_dtype_of(call.x)));
      check_cuda_result(cuda::launch_reverse_clip_factors(args, *call.max_score_norm, factors.data_ptr(), stream),
                        "reverse_step (score clip factors)");
      args.score_factor = factors.data_ptr();
    }
    check_cuda_result(cuda::launch_reverse_step(args, stream), "reverse_step");
  }

  // Runs snr_corrector_step: per sample one kernel (norms, then the particle's step); with the
  // batch means, the norms of every particle, one block for the means, then the step.
  static void run_corrector(ReverseCall& call, const at::Tensor& out, const at::Tensor& step_sizes) {
    ReverseArgs args = call.args;
    args.out = out.data_ptr();
    const int64_t P = args.num_particles;
    if (P == 0) return;
    const c10::DeviceGuard guard(call.x.device());
    const cudaStream_t stream = current_stream(call.x.device());
    if (!call.batch_mean) {
      check_cuda_result(cuda::launch_snr_corrector(args, call.snr, step_sizes.data_ptr(), stream),
                        "snr_corrector_step");
      return;
    }
    at::Tensor norms = at::empty({2, P}, call.x.options().dtype(at::kDouble));
    double* g_sq = norms.data_ptr<double>();
    double* z_sq = g_sq + P;
    check_cuda_result(cuda::launch_corrector_norms(args, g_sq, z_sq, stream), "snr_corrector_step (norms)");
    at::Tensor noise_scales = at::empty({P}, step_sizes.options());
    check_cuda_result(cuda::launch_corrector_batch_coefficients(P, args.dtype, g_sq, z_sq, call.snr,
                                                                step_sizes.data_ptr(), noise_scales.data_ptr(), stream),
                      "snr_corrector_step (batch means)");
    args.x_coef = 1.0;
    args.score_coef_per_particle = step_sizes.data_ptr();
    args.noise_scale_per_particle = noise_scales.data_ptr();
    check_cuda_result(cuda::launch_reverse_step(args, stream), "snr_corrector_step");
  }
};

using Ops = DiffusionOps<DiffusionCuda>;

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("reverse_step", &Ops::reverse_step);
  m.impl("reverse_step_", &Ops::reverse_step_);
  m.impl("snr_corrector_step", &Ops::snr_corrector_step);
  m.impl("snr_corrector_step_", &Ops::snr_corrector_step_);
}

}  // namespace scorefast
