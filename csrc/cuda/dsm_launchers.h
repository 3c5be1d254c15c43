// Host launchers of the denoising score matching kernels (dsm_kernels.cu; scorefast/dsm.h);
// conventions as in noise_launchers.h. z is regenerated from the noise contract.
// args.input is [B, D] contiguous of args.dtype; args.sigma (and args.grad_per_sample) [B]
// of the acc type (double for float64 storage, float otherwise).
#pragma once

#include <cuda_runtime_api.h>

#include "scorefast/dsm.h"

namespace scorefast {
namespace cuda {

// args.out [B, D] of args.dtype: x + sigma_b z.
cudaError_t launch_dsm_perturb(const DsmArgs& args, cudaStream_t stream);

// args.out [B] of the acc type: the per-sample losses, accumulated in double (0 when D == 0
// is the caller's job: nothing is launched for an empty batch or D == 0).
cudaError_t launch_dsm_loss(const DsmArgs& args, cudaStream_t stream);

// args.out [B, D] of args.dtype: the gradient of sum_b g_b l_b w.r.t. the prediction.
cudaError_t launch_dsm_loss_backward(const DsmArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
