// CPU implementation of scorefast::gmm_chain_.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cmath>

#include "../gmm_op.h"
#include "cpu_kernels.h"

namespace scorefast {
namespace {

void gmm_chain_cpu_(at::Tensor& x, const at::Tensor& means, const at::Tensor& var, const at::Tensor& log_const,
                    const std::optional<at::Tensor>& factor, const at::Tensor& step_size, const at::Tensor& sigma2,
                    bool mala, int64_t seed, int64_t step_offset, int64_t particle_offset, int64_t trajectory_every,
                    const std::optional<at::Tensor>& trajectory, const std::optional<at::Tensor>& accepted) {
  TORCH_CHECK(x.device().is_cpu(), "x must be a CPU tensor for the CPU kernel, got ", x.device());
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
  GmmCall call = prepare_gmm_call(x, means, var, var, factor, log_const, std::nullopt);
  const int64_t N = x.size(0), D = x.size(1);
  const int64_t T = step_size.numel();
  TORCH_CHECK(step_size.dim() == 1 && step_size.scalar_type() == acc_dtype_of(x) && step_size.is_contiguous(),
              "step_size must be a contiguous [T] tensor of ", acc_dtype_of(x));
  TORCH_CHECK(sigma2.dim() == 1 && sigma2.numel() == T && sigma2.scalar_type() == acc_dtype_of(x) &&
                  sigma2.is_contiguous(),
              "sigma2 must be a contiguous [T] tensor of ", acc_dtype_of(x), " (one per step)");
  check_noise_counter(step_offset, particle_offset);
  TORCH_CHECK(step_offset + T - 1 <= static_cast<int64_t>(kMaxStep) || T == 0,
              "step_offset + steps must stay below 2^32 (the step is a 32-bit counter word)");
  TORCH_CHECK(trajectory_every >= 0, "trajectory_every must be >= 0");
  if (trajectory_every > 0) {
    TORCH_CHECK(trajectory.has_value() && trajectory->is_contiguous() &&
                    trajectory->scalar_type() == x.scalar_type() &&
                    trajectory->sizes() == at::IntArrayRef({T / trajectory_every, N, D}),
                "trajectory must be a contiguous [T / k, N, D] tensor of x's dtype");
  }
  if (mala) {
    TORCH_CHECK(accepted.has_value() && accepted->is_contiguous() && accepted->scalar_type() == at::kLong &&
                    accepted->numel() == N,
                "accepted must be a contiguous int64 [N] tensor for MALA");
  }
  ChainArgs c;
  c.mixture = call.args;
  c.num_steps = T;
  c.step_size = step_size.data_ptr();
  c.sigma2 = sigma2.data_ptr();
  c.mala = mala;
  c.seed = static_cast<uint64_t>(seed);
  c.step_offset = static_cast<uint32_t>(step_offset);
  c.particle_offset = static_cast<uint64_t>(particle_offset);
  c.trajectory_every = trajectory_every;
  c.trajectory = trajectory_every > 0 ? trajectory->data_ptr() : nullptr;
  c.x = x.data_ptr();
  c.accepted = mala ? accepted->data_ptr<int64_t>() : nullptr;
  if (N == 0 || T == 0) return;
  const auto& k = cpu::kernels();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, T * call.args.num_components));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { k.gmm_chain(c, begin, end); });
}

}  // namespace

TORCH_LIBRARY_IMPL(scorefast, CPU, m) { m.impl("gmm_chain_", &gmm_chain_cpu_); }

}  // namespace scorefast
