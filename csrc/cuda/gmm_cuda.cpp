// CUDA implementation of scorefast::gmm_score (argument checks in csrc/gmm_op.h), through
// the torch-free launcher of gmm_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../gmm_op.h"
#include "../ops_library.h"
#include "cuda_device.h"
#include "gmm_launchers.h"

namespace scorefast {
namespace {

// prepare_gmm_call checks that every tensor is on x's device; x must be a CUDA one.
std::tuple<at::Tensor, at::Tensor> gmm_score_cuda(const at::Tensor& x, const at::Tensor& means, const at::Tensor& var,
                                                  const at::Tensor& inv_var, const std::optional<at::Tensor>& factor,
                                                  const at::Tensor& log_const,
                                                  const std::optional<at::Tensor>& sigma2) {
  CudaDevice::check(x, "x");
  // .contiguous() copies and the kernel run on x's device and its current stream.
  const c10::DeviceGuard guard(x.device());
  GmmCall call = prepare_gmm_call(x, means, var, inv_var, factor, log_const, sigma2);
  const int64_t N = call.args.num_points, D = call.args.dim;
  at::Tensor score = at::empty({N, D}, x.options());
  at::Tensor log_prob = at::empty({N}, x.options());
  if (N == 0) return {score, log_prob};
  GmmArgs args = call.args;
  args.score = score.data_ptr();
  args.log_prob = log_prob.data_ptr();
  check_cuda_result(cuda::launch_gmm_score(args, current_stream(x.device())), "gmm_score");
  return {score, log_prob};
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) { m.impl("gmm_score", &gmm_score_cuda); }

}  // namespace scorefast
