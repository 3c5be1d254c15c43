// CPU implementation of scorefast::gmm_score (argument checks in csrc/gmm_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "../gmm_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"
#include "gmm_precision_gemm.h"

namespace scorefast {
namespace {

std::tuple<at::Tensor, at::Tensor> gmm_score_cpu(const at::Tensor& x, const at::Tensor& means, const at::Tensor& var,
                                                 const at::Tensor& inv_var, const std::optional<at::Tensor>& factor,
                                                 const at::Tensor& log_const, const std::optional<at::Tensor>& sigma2) {
  CpuDevice::check(x, "x");
  GmmCall call = prepare_gmm_call(x, means, var, inv_var, factor, log_const, sigma2);
  const int64_t N = call.args.num_points, D = call.args.dim, K = call.args.num_components;
  at::Tensor score = at::empty({N, D}, x.options());
  at::Tensor log_prob = at::empty({N}, x.options());
  GmmArgs args = call.args;
  args.score = score.data_ptr();
  args.log_prob = log_prob.data_ptr();
  if (gmm_use_precision_gemm(args)) {
    gmm_precision_gemm(call.x, call.means, call.inv_var, call.factor, call.log_const, score, log_prob);
    return {score, log_prob};
  }
  const auto& k = cpu::kernels();
  // Work per point ~ K * D (K * D^2 with a factor): aim for ~64k operations per task.
  const int64_t work = K * D * (args.factor ? D : 1);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, work));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { k.gmm_score(args, begin, end); });
  return {score, log_prob};
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) { m.impl("gmm_score", &gmm_score_cpu); }

}  // namespace scorefast
