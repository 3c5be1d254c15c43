// Host launchers of the reverse_step and snr_corrector_step kernels (diffusion_kernels.cu);
// conventions as in noise_launchers.h. Per-particle outputs are [P] of the acc type (double
// for float64 storage, float otherwise) unless they say double.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "scorefast/diffusion.h"

namespace scorefast {
namespace cuda {

// The fused step c_x x + c_s c_p g + b z over all P x D elements into args.out (may be args.x).
cudaError_t launch_reverse_step(const ReverseArgs& args, cudaStream_t stream);

// Per-particle clip factors min(1, max_norm / ||g_p||) (NaN when the norm is NaN), acc type.
cudaError_t launch_reverse_clip_factors(const ReverseArgs& args, double max_norm, void* factors, cudaStream_t stream);

// The per-sample corrector in one kernel: per particle the float64 norms of g and of the
// contract z, eps_p = 2 (snr ||z_p|| / ||g_p||)^2 into step_sizes, then the particle's step.
cudaError_t launch_snr_corrector(const ReverseArgs& args, double snr, void* step_sizes, cudaStream_t stream);

// The batch-mean corrector's first pass: ||g_p||^2 and ||z_p||^2 per particle (double [P]).
cudaError_t launch_corrector_norms(const ReverseArgs& args, double* g_sq, double* z_sq, cudaStream_t stream);

// One block: eps = 2 (snr mean ||z|| / mean ||g||)^2 over the P particles, written as the acc
// type into step_sizes[p] and sqrt(2 eps) into noise_scales[p] for every p.
cudaError_t launch_corrector_batch_coefficients(int64_t num_particles, StorageType dtype, const double* g_sq,
                                                const double* z_sq, double snr, void* step_sizes, void* noise_scales,
                                                cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
