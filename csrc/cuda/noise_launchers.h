// Host launchers of the noise-contract kernels (noise_kernels.cu). Like every launcher in
// csrc/cuda/*_launchers.h: torch-free (raw device pointers, sizes, the shared argument
// structs of csrc/include/scorefast, a stream), asynchronous on `stream` (the caller keeps the
// buffers alive until the launch completes), returning the launch's cudaError_t (cudaSuccess,
// or the error cudaGetLastError reports after the launch).
//
// step_counter (here and in langevin_launchers.h): null, or an int64 in device memory whose
// low 32 bits the kernel reads as the step when it runs, in place of `step`. A CUDA graph
// bakes kernel arguments in; with the step read from memory, a captured step replays with
// fresh noise once the counter is advanced.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {

// Philox words of the noise contract for P particles x Q groups: out is int64 [P, Q, 4]
// (contiguous, device memory), entry [p, q, :] = Philox(lo32(p'), hi32(p'), step, q).
cudaError_t launch_philox_fill(int64_t* out, int64_t num_particles, int64_t num_groups, uint64_t seed, uint32_t step,
                               uint64_t particle_offset, cudaStream_t stream, const int64_t* step_counter = nullptr);

// Standard normals of the noise contract: out is [P, D] (contiguous) of storage type `type`,
// the float32 normals rounded to it.
cudaError_t launch_normal_fill(void* out, StorageType type, int64_t num_particles, int64_t particle_size, uint64_t seed,
                               uint32_t step, uint64_t particle_offset, cudaStream_t stream,
                               const int64_t* step_counter = nullptr);

}  // namespace cuda
}  // namespace scorefast
