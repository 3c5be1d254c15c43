// CUDA implementation of scorefast::gmm_chain_ (argument checks in csrc/chain_op.h), through
// the torch-free launchers of chain_kernels.cu.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "../chain_op.h"
#include "../ops_library.h"
#include "chain_launchers.h"
#include "cuda_device.h"

namespace scorefast {
namespace {

void gmm_chain_cuda_(at::Tensor& x, const at::Tensor& means, const at::Tensor& var, const at::Tensor& log_const,
                     const std::optional<at::Tensor>& factor, const at::Tensor& step_size, const at::Tensor& sigma2,
                     bool mala, int64_t seed, int64_t step_offset, int64_t particle_offset, int64_t trajectory_every,
                     const std::optional<at::Tensor>& trajectory, const std::optional<at::Tensor>& accepted) {
  CudaDevice::check(x, "x");
  // The mixture's .contiguous() copies, the workspace and the kernel: x's device and stream.
  const c10::DeviceGuard guard(x.device());
  const ChainCall call = prepare_chain_call(x, means, var, log_const, factor, step_size, sigma2, mala, seed,
                                            step_offset, particle_offset, trajectory_every, trajectory, accepted);
  const ChainArgs& c = call.args;
  if (c.mixture.num_points == 0 || c.num_steps == 0) return;
  size_t bytes = 0;
  check_cuda_result(cuda::gmm_chain_workspace_size(c, bytes), "gmm_chain_ (workspace size)");
  at::Tensor workspace;  // freed after the launch: the caching allocator orders reuse on this stream
  if (bytes > 0) workspace = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
  check_cuda_result(
      cuda::launch_gmm_chain(c, bytes > 0 ? workspace.data_ptr() : nullptr, bytes, current_stream(x.device())),
      "gmm_chain_");
}

}  // namespace

TORCH_LIBRARY_IMPL(SCOREFAST_OPS_LIBRARY, SCOREFAST_CUDA_DISPATCH_KEY, m) { m.impl("gmm_chain_", &gmm_chain_cuda_); }

}  // namespace scorefast
