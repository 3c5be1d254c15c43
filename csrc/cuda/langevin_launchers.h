// Host launchers of the langevin_step kernels (langevin_kernels.cu); conventions and
// step_counter as in noise_launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "scorefast/langevin.h"

namespace scorefast {
namespace cuda {

// Per-particle score multiplier min(1, max_norm / ||g_p||) (NaN when the norm is NaN),
// g = s + w (s_c - s), norm accumulated in double. `factors` is [P] of the acc type
// (double for float64 storage, float otherwise), as LangevinArgs::score_factor expects.
cudaError_t launch_score_clip_factors(const LangevinArgs& args, double max_norm, void* factors, cudaStream_t stream);

// The fused update over all P x D elements into args.out (which may equal args.x).
cudaError_t launch_langevin(const LangevinArgs& args, cudaStream_t stream, const int64_t* step_counter = nullptr);

}  // namespace cuda
}  // namespace scorefast
