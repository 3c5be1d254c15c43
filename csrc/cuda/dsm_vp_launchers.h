// Host launchers of the diffusion forward process and loss kernels (dsm_vp_kernels.cu;
// scorefast/dsm_vp.h); conventions as in noise_launchers.h. z is regenerated from the noise
// contract. args.input (and args.data when set) is [B, D] contiguous of args.dtype; the
// coefficients and args.grad_per_sample [B] of the acc type (double for float64 storage, float
// otherwise), args.weight [B] double.
#pragma once

#include <cuda_runtime_api.h>

#include "scorefast/dsm_vp.h"

namespace scorefast {
namespace cuda {

// args.out [B, D] of args.dtype: alpha_b x + sigma_b z (coef_a = alpha, coef_c = sigma).
cudaError_t launch_dsm_vp_perturb(const DsmVpArgs& args, cudaStream_t stream);

// args.out [B] of the acc type: the per-sample losses, accumulated in double (nothing is
// launched for an empty batch or D == 0: zeros are the caller's job).
cudaError_t launch_dsm_vp_loss(const DsmVpArgs& args, cudaStream_t stream);

// args.out [B, D] of args.dtype: the gradient of sum_b g_b l_b w.r.t. the prediction.
cudaError_t launch_dsm_vp_loss_backward(const DsmVpArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
