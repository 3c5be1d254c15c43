// Helpers shared by the CUDA kernels (device code and launch configuration).
// Torch-free; included only by csrc/cuda/*.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace scorefast {
namespace cuda {

constexpr int kThreads = 256;
// Resident blocks per SM the grid-stride launches aim for (2048 threads on sm_80/sm_90).
constexpr int kBlocksPerSm = 8;
// The occupancy floor the per-sample loss kernels (dsm_kernels.cu, dsm_vp_kernels.cu) declare
// in their launch bounds (so at most 64 registers a thread). Without one, ptxas trades a few
// bytes of register spills for full occupancy in some of their instantiations (the noise
// contract's per-group Philox counters cost them a few registers); with it, none spills.
constexpr int kLossMinBlocks = 4;

// Blocks for `work` items of one thread each, capped so a grid-stride loop covers the rest.
inline cudaError_t grid_size(int64_t work, int threads, unsigned int& blocks) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int sms = 0;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  const int64_t needed = (work + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * kBlocksPerSm;
  blocks = static_cast<unsigned int>(needed < cap ? needed : cap);
  if (blocks == 0) blocks = 1;
  return cudaSuccess;
}

inline bool is_aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

// i -> (row, column) of a row-major [rows, cols] index space; 32-bit division when the
// whole space fits (the common case), 64-bit otherwise.
__device__ __forceinline__ void split_index(int64_t i, int64_t cols, bool index32, int64_t& row, int64_t& col) {
  if (index32) {
    const uint32_t ii = static_cast<uint32_t>(i), c = static_cast<uint32_t>(cols);
    const uint32_t r = ii / c;
    row = r;
    col = ii - r * c;
  } else {
    row = i / cols;
    col = i - row * cols;
  }
}

__device__ __forceinline__ int64_t global_thread_id() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The step of the noise counter: `step`, or the low 32 bits of *step_counter read now (a
// device value, so a replayed CUDA graph sees the current one; see noise_launchers.h).
__device__ __forceinline__ uint32_t current_step(uint32_t step, const int64_t* step_counter) {
  return step_counter != nullptr ? static_cast<uint32_t>(*step_counter) : step;
}

}  // namespace cuda
}  // namespace scorefast
