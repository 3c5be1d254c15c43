// Argument checks and ChainArgs construction shared by the CPU and CUDA implementations of
// scorefast::gmm_chain_ (only c10/ATen core headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

#include "gmm_op.h"
#include "op_checks.h"
#include "scorefast/chain.h"
#include "scorefast/philox.h"

namespace scorefast {

// The mixture's tensors (made contiguous) and the kernel arguments pointing into them and
// into x, step_size, sigma2, trajectory and accepted (checked contiguous, not copied).
struct ChainCall {
  GmmCall gmm;
  ChainArgs args;
};

inline void check_on_device_of_x(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x (", x.device(), "), got ", t.device());
}

inline ChainCall prepare_chain_call(const at::Tensor& x, const at::Tensor& means, const at::Tensor& var,
                                    const at::Tensor& log_const, const std::optional<at::Tensor>& factor,
                                    const at::Tensor& step_size, const at::Tensor& sigma2, bool mala, int64_t seed,
                                    int64_t step_offset, int64_t particle_offset, int64_t trajectory_every,
                                    const std::optional<at::Tensor>& trajectory,
                                    const std::optional<at::Tensor>& accepted) {
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous (the chain updates it in place)");
  ChainCall call;
  call.gmm = prepare_gmm_call(x, means, var, var, factor, log_const, std::nullopt);
  const int64_t N = x.size(0), D = x.size(1);
  const int64_t T = step_size.numel();
  const at::ScalarType acc = acc_dtype_of(x);
  check_on_device_of_x(step_size, x, "step_size");
  TORCH_CHECK(step_size.dim() == 1 && step_size.scalar_type() == acc && step_size.is_contiguous(),
              "step_size must be a contiguous [T] tensor of ", acc);
  check_on_device_of_x(sigma2, x, "sigma2");
  TORCH_CHECK(sigma2.dim() == 1 && sigma2.numel() == T && sigma2.scalar_type() == acc && sigma2.is_contiguous(),
              "sigma2 must be a contiguous [T] tensor of ", acc, " (one per step)");
  check_noise_counter(step_offset, particle_offset);
  check_noise_extent(particle_offset, x.size(0), x.dim() == 2 ? x.size(1) : 1);
  TORCH_CHECK(step_offset + T - 1 <= static_cast<int64_t>(kMaxStep) || T == 0,
              "step_offset + steps must stay below 2^32 (the step is a 32-bit counter word)");
  TORCH_CHECK(trajectory_every >= 0, "trajectory_every must be >= 0");
  if (trajectory_every > 0) {
    TORCH_CHECK(trajectory.has_value(), "trajectory must be given when trajectory_every > 0");
    check_on_device_of_x(*trajectory, x, "trajectory");
    TORCH_CHECK(trajectory->is_contiguous() && trajectory->scalar_type() == x.scalar_type() &&
                    trajectory->sizes() == at::IntArrayRef({T / trajectory_every, N, D}),
                "trajectory must be a contiguous [T / k, N, D] tensor of x's dtype");
  }
  if (mala) {
    TORCH_CHECK(accepted.has_value(), "accepted must be given for MALA");
    check_on_device_of_x(*accepted, x, "accepted");
    TORCH_CHECK(accepted->is_contiguous() && accepted->scalar_type() == at::kLong && accepted->numel() == N,
                "accepted must be a contiguous int64 [N] tensor for MALA");
  }
  ChainArgs& c = call.args;
  c.mixture = call.gmm.args;
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
  return call;
}

}  // namespace scorefast
