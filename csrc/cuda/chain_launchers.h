// Host launchers of the gmm_chain kernels (chain_kernels.cu; scorefast/chain.h); conventions
// as in noise_launchers.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "scorefast/chain.h"

namespace scorefast {
namespace cuda {

// T steps for every particle, in place on args.x; every buffer in device memory,
// contiguous. D > 4 needs a device workspace of gmm_chain_workspace_size bytes (0 for
// D <= 4, or nothing to do), valid until the launch completes; launch_gmm_chain returns
// cudaErrorInvalidValue when it is missing or smaller.
cudaError_t gmm_chain_workspace_size(const ChainArgs& args, size_t& bytes);
cudaError_t launch_gmm_chain(const ChainArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
