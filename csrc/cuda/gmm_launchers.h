// Host launcher of the gmm_score kernels (gmm_kernels.cu; scorefast/gmm.h); conventions as
// in noise_launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include "scorefast/gmm.h"

namespace scorefast {
namespace cuda {

// args.score [N, D] and args.log_prob [N] from the mixture in kernel form; every buffer in
// device memory, contiguous. cudaErrorInvalidValue when D is too large for a warp's slice of
// shared memory (D > ~29k for float math, ~14k for double).
cudaError_t launch_gmm_score(const GmmArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
