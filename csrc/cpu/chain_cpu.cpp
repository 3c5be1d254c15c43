// CPU implementation of scorefast::gmm_chain_ (argument checks in csrc/chain_op.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>

#include "../chain_op.h"
#include "cpu_device.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

void gmm_chain_cpu_(at::Tensor& x, const at::Tensor& means, const at::Tensor& var, const at::Tensor& log_const,
                    const std::optional<at::Tensor>& factor, const at::Tensor& step_size, const at::Tensor& sigma2,
                    bool mala, int64_t seed, int64_t step_offset, int64_t particle_offset, int64_t trajectory_every,
                    const std::optional<at::Tensor>& trajectory, const std::optional<at::Tensor>& accepted) {
  CpuDevice::check(x, "x");
  const ChainCall call = prepare_chain_call(x, means, var, log_const, factor, step_size, sigma2, mala, seed,
                                            step_offset, particle_offset, trajectory_every, trajectory, accepted);
  const ChainArgs& c = call.args;
  const int64_t N = c.mixture.num_points, T = c.num_steps;
  if (N == 0 || T == 0) return;
  const auto& k = cpu::kernels();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, T * c.mixture.num_components));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { k.gmm_chain(c, begin, end); });
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) { m.impl("gmm_chain_", &gmm_chain_cpu_); }

}  // namespace scorefast
