// CUDA implementations of scorefast::dsm_perturb, dsm_loss, dsm_loss_backward (argument
// checks in csrc/dsm_op.h), through the torch-free launchers of dsm_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>

#include "../dsm_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "dsm_launchers.h"

namespace scorefast {
namespace {

// prepare_dsm_call checks that sigma is on the input's device; the input must be a CUDA one.
// The guard also covers the .contiguous() copies (on the input's device and current stream).
DsmCall prepare_dsm_cuda_call(const at::Tensor& input, const char* input_name, const at::Tensor& sigma, double power,
                              bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
  CudaDevice::check(input, input_name);
  const c10::DeviceGuard guard(input.device());
  return prepare_dsm_call(input, input_name, sigma, power, eps_form, seed, step, particle_offset);
}

at::Tensor dsm_perturb_cuda(const at::Tensor& x, const at::Tensor& sigma, int64_t seed, int64_t step,
                            int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(x, "x", sigma, 2.0, false, seed, step, particle_offset);
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_perturb(args, current_stream(call.input.device())), "dsm_perturb");
  return out;
}

at::Tensor dsm_loss_cuda(const at::Tensor& pred, const at::Tensor& sigma, double power, bool eps_form, int64_t seed,
                         int64_t step, int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor out = at::empty({call.args.batch}, call.input.options().dtype(acc_dtype_of(call.input)));
  if (call.args.batch == 0) return out;
  if (call.args.sample_size == 0) {
    out.zero_();
    return out;
  }
  DsmArgs args = call.args;
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_loss(args, current_stream(call.input.device())), "dsm_loss");
  return out;
}

at::Tensor dsm_loss_backward_cuda(const at::Tensor& grad_per_sample, const at::Tensor& pred, const at::Tensor& sigma,
                                  double power, bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
  DsmCall call = prepare_dsm_cuda_call(pred, "pred", sigma, power, eps_form, seed, step, particle_offset);
  TORCH_CHECK(grad_per_sample.dim() == 1 && grad_per_sample.size(0) == call.args.batch,
              "grad_per_sample must have shape [B] = [", call.args.batch, "], got ", grad_per_sample.sizes());
  TORCH_CHECK(grad_per_sample.scalar_type() == acc_dtype_of(pred), "grad_per_sample must be ", acc_dtype_of(pred),
              ", got ", grad_per_sample.scalar_type());
  TORCH_CHECK(grad_per_sample.device() == pred.device(), "grad_per_sample must be on the device of pred (",
              pred.device(), "), got ", grad_per_sample.device());
  const c10::DeviceGuard guard(call.input.device());
  at::Tensor g = grad_per_sample.contiguous();
  at::Tensor out = at::empty_like(call.input, at::MemoryFormat::Contiguous);
  DsmArgs args = call.args;
  args.grad_per_sample = g.data_ptr();
  args.out = out.data_ptr();
  check_cuda_result(cuda::launch_dsm_loss_backward(args, current_stream(call.input.device())), "dsm_loss_backward");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) {
  m.impl("dsm_perturb", &dsm_perturb_cuda);
  m.impl("dsm_loss", &dsm_loss_cuda);
  m.impl("dsm_loss_backward", &dsm_loss_backward_cuda);
}

}  // namespace scorefast
