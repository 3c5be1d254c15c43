// CUDA implementations of scorefast::dsm_vp_perturb, dsm_vp_loss, dsm_vp_loss_backward (argument
// checks in csrc/dsm_vp_op.h), through the torch-free launchers of dsm_vp_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

#include "../dsm_vp_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "dsm_vp_launchers.h"

namespace scorefast {
namespace {

at::Tensor dsm_vp_perturb_cuda(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& sigma, int64_t seed,
                               int64_t step, int64_t particle_offset) {
  CudaDevice::check(x, "x");
  // The guard also covers the .contiguous() copies (on the input's device and current stream).
  const c10::DeviceGuard guard(x.device());
  DsmVpCall call = prepare_dsm_vp_perturb(x, alpha, sigma, seed, step, particle_offset);
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmVpArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_vp_perturb(args, current_stream(x.device())), "dsm_vp_perturb");
  return out;
}

at::Tensor dsm_vp_loss_cuda(const at::Tensor& pred, const std::optional<at::Tensor>& x, const at::Tensor& a,
                            const at::Tensor& c, const at::Tensor& weight, int64_t seed, int64_t step,
                            int64_t particle_offset) {
  CudaDevice::check(pred, "pred");
  const c10::DeviceGuard guard(pred.device());
  DsmVpCall call = prepare_dsm_vp_loss(pred, x, a, c, weight, seed, step, particle_offset);
  at::Tensor out = at::empty({call.args.batch}, pred.options().dtype(acc_dtype_of(pred)));
  if (call.args.batch == 0) return out;
  if (call.args.sample_size == 0) return out.zero_();
  DsmVpArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_vp_loss(args, current_stream(pred.device())), "dsm_vp_loss");
  return out;
}

at::Tensor dsm_vp_loss_backward_cuda(const at::Tensor& grad_per_sample, const at::Tensor& pred,
                                     const std::optional<at::Tensor>& x, const at::Tensor& a, const at::Tensor& c,
                                     const at::Tensor& weight, int64_t seed, int64_t step, int64_t particle_offset) {
  CudaDevice::check(pred, "pred");
  const c10::DeviceGuard guard(pred.device());
  DsmVpCall call = prepare_dsm_vp_loss(pred, x, a, c, weight, seed, step, particle_offset);
  check_dsm_vp_grad_per_sample(grad_per_sample, pred);
  at::Tensor g = grad_per_sample.contiguous();
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmVpArgs args = call.args;
  args.grad_per_sample = g.data_ptr();
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_vp_loss_backward(args, current_stream(pred.device())), "dsm_vp_loss_backward");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("dsm_vp_perturb", &dsm_vp_perturb_cuda);
  m.impl("dsm_vp_loss", &dsm_vp_loss_cuda);
  m.impl("dsm_vp_loss_backward", &dsm_vp_loss_backward_cuda);
}

}  // namespace scorefast
