// Kernels that check the CUDA emulator itself (tests/test_cuda_emulator.py): warp
// shuffles of every kind and width, block barriers with shared memory, dynamic shared
// memory and its launch limit, and the errors for lanes that left a warp. Written in
// CUDA as the scorefast kernels are; compiled only into the emulator.
#include <cuda_runtime.h>

#include <cstdint>

namespace scorefast {
namespace emulator_test {
namespace {

constexpr unsigned int kFull = 0xffffffffu;

// out[t] = the value thread t reads: mode 0 down, 1 up, 2 xor, 3 indexed; values are t.
__global__ void shuffle_kernel(float* out, int mode, int arg, int width) {
  const float v = static_cast<float>(threadIdx.x);
  float r = 0.0f;
  switch (mode) {
    case 0:
      r = __shfl_down_sync(kFull, v, static_cast<unsigned int>(arg), width);
      break;
    case 1:
      r = __shfl_up_sync(kFull, v, static_cast<unsigned int>(arg), width);
      break;
    case 2:
      r = __shfl_xor_sync(kFull, v, arg, width);
      break;
    default:
      r = __shfl_sync(kFull, v, arg, width);
      break;
  }
  out[threadIdx.x] = r;
}

// out[b] = sum of in[i] over the elements block b visits in a grid-stride loop, reduced
// through shared memory with a barrier per halving.
__global__ void block_sum_kernel(const double* in, int64_t n, double* out) {
  __shared__ double part[1024];
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    acc += in[i];
  part[threadIdx.x] = acc;
  __syncthreads();
  for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}

// out[t] = t of the mirrored thread, through dynamic shared memory.
__global__ void mirror_kernel(float* out) {
  extern __shared__ __align__(16) float buffer[];
  buffer[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

// The upper half-warp returns, then the lower half shuffles with a full mask: undefined
// on a GPU, an error in the emulator.
__global__ void exited_lane_kernel(float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(kFull, 1.0f, 1);
}

}  // namespace

cudaError_t launch_shuffle(float* out, int threads, int mode, int arg, int width) {
  shuffle_kernel<<<1, threads>>>(out, mode, arg, width);
  return cudaGetLastError();
}

cudaError_t launch_block_sum(const double* in, int64_t n, double* out, int blocks, int threads) {
  block_sum_kernel<<<blocks, threads>>>(in, n, out);
  return cudaGetLastError();
}

// opt_in: raise the kernel's dynamic shared memory limit to what the launch needs first.
cudaError_t launch_mirror(float* out, int threads, size_t smem_bytes, bool opt_in) {
  if (opt_in) {
    const cudaError_t err =
        cudaFuncSetAttribute(mirror_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes));
    if (err != cudaSuccess) return err;
  }
  mirror_kernel<<<1, threads, smem_bytes>>>(out);
  return cudaGetLastError();
}

cudaError_t launch_exited_lane(float* out) {
  exited_lane_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

}  // namespace emulator_test
}  // namespace scorefast
