// Host launchers of the CUDA kernels (csrc/cuda/*.cu). Torch-free: raw device pointers,
// sizes, the shared LangevinArgs / DsmArgs / GmmArgs / ChainArgs, a stream; each returns the launch's cudaError_t
// (cudaSuccess, or the error cudaGetLastError reports after the launch). Every launch is
// asynchronous on `stream`; the caller keeps the buffers alive until it completes.
//
// step_counter (the noise launchers): null, or an int64 in device memory whose low 32 bits
// the kernel reads as the step when it runs, in place of `step`. A CUDA graph bakes kernel
// arguments in; with the step read from memory, a captured step replays with fresh noise
// once the counter is advanced.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "scorefast/chain.h"
#include "scorefast/dsm.h"
#include "scorefast/gmm.h"
#include "scorefast/langevin.h"

namespace scorefast {
namespace cuda {

// Philox words of the noise contract for P particles x Q groups: out is int64 [P, Q, 4]
// (contiguous, device memory), entry [p, q, :] = Philox(lo32(p'), hi32(p'), step, q).
cudaError_t launch_philox_fill(int64_t* out, int64_t num_particles, int64_t num_groups,
                               uint64_t seed, uint32_t step, uint64_t particle_offset,
                               cudaStream_t stream, const int64_t* step_counter = nullptr);

// Standard normals of the noise contract: out is float32 [P, D] (contiguous).
cudaError_t launch_normal_fill(float* out, int64_t num_particles, int64_t particle_size,
                               uint64_t seed, uint32_t step, uint64_t particle_offset,
                               cudaStream_t stream, const int64_t* step_counter = nullptr);

// Per-particle score multiplier min(1, max_norm / ||g_p||) (NaN when the norm is NaN),
// g = s + w (s_c - s), norm accumulated in double. `factors` is [P] of the acc type
// (double for float64 storage, float otherwise), as LangevinArgs::score_factor expects.
cudaError_t launch_score_clip_factors(const LangevinArgs& args, double max_norm, void* factors,
                                      cudaStream_t stream);

// The fused update over all P x D elements into args.out (which may equal args.x).
cudaError_t launch_langevin(const LangevinArgs& args, cudaStream_t stream,
                            const int64_t* step_counter = nullptr);

// ---------------------------------------------------------------------------------------
// Denoising score matching (scorefast/dsm.h); z is regenerated from the noise contract.
// args.input is [B, D] contiguous of args.dtype; args.sigma (and args.grad_per_sample) [B]
// of the acc type (double for float64 storage, float otherwise).

// args.out [B, D] of args.dtype: x + sigma_b z.
cudaError_t launch_dsm_perturb(const DsmArgs& args, cudaStream_t stream);

// args.out [B] of the acc type: the per-sample losses, accumulated in double (0 when D == 0
// is the caller's job: nothing is launched for an empty batch or D == 0).
cudaError_t launch_dsm_loss(const DsmArgs& args, cudaStream_t stream);

// args.out [B, D] of args.dtype: the gradient of sum_b g_b l_b w.r.t. the prediction.
cudaError_t launch_dsm_loss_backward(const DsmArgs& args, cudaStream_t stream);

// gmm_score (scorefast/gmm.h): args.score [N, D] and args.log_prob [N] from the mixture in
// kernel form; every buffer in device memory, contiguous. cudaErrorInvalidValue when D is
// too large for a warp's slice of shared memory (D > ~29k for float math, ~14k for double).
cudaError_t launch_gmm_score(const GmmArgs& args, cudaStream_t stream);

// gmm_chain (scorefast/chain.h): T steps for every particle, in place on args.x; every
// buffer in device memory, contiguous. D > 4 needs a device workspace of
// gmm_chain_workspace_size bytes (0 for D <= 4, or nothing to do), valid until the launch
// completes; launch_gmm_chain returns cudaErrorInvalidValue when it is missing or smaller.
cudaError_t gmm_chain_workspace_size(const ChainArgs& args, size_t& bytes);
cudaError_t launch_gmm_chain(const ChainArgs& args, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace scorefast
