// CUDA kernels of the noise contract: philox_fill_ (raw Philox words) and normal_fill_
// (standard normals). One thread per (particle, group of 4): one Philox call gives the
// group's four words / normals.
//
// Precision: Box-Muller uses the precise logf / sqrtf / cosf / sinf (scorefast/philox.h),
// never the __logf / __sincosf intrinsics, and this file must not be built with
// -use_fast_math (or --ftz / --prec-div=false / --prec-sqrt=false): the contract requires
// the float32 result of every backend to match the reference to libm rounding.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernel_common.cuh"
#include "noise_launchers.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

// out[p, q, :] = the four words of (p + offset, step, q); `vec`: 16-byte stores.
__global__ void __launch_bounds__(kThreads)
    philox_fill_kernel(int64_t* out, int64_t total, int64_t num_groups, bool index32, bool vec, uint64_t seed,
                       uint32_t step_arg, uint64_t particle_offset, const int64_t* step_counter) {
  const uint32_t step = current_step(step_arg, step_counter);
  for (int64_t i = global_thread_id(); i < total; i += grid_stride()) {
    int64_t p, q;
    split_index(i, num_groups, index32, p, q);
    const PhiloxWords w = noise_words(seed, particle_offset + static_cast<uint64_t>(p), step, static_cast<uint32_t>(q));
    int64_t* dst = out + 4 * i;
    if (vec) {
      reinterpret_cast<longlong2*>(dst)[0] = make_longlong2(w.w0, w.w1);
      reinterpret_cast<longlong2*>(dst)[1] = make_longlong2(w.w2, w.w3);
    } else {
      dst[0] = w.w0;
      dst[1] = w.w1;
      dst[2] = w.w2;
      dst[3] = w.w3;
    }
  }
}

// out[p, 4q : 4q + 4] (clipped to D) = normals of (p + offset, step, q), rounded to T; `vec`
// (float32, D % 4 == 0 and a 16-byte aligned base): one float4 store per group.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    normal_fill_kernel(T* out, int64_t total, int64_t particle_size, int64_t num_groups, bool index32, bool vec,
                       uint64_t seed, uint32_t step_arg, uint64_t particle_offset, const int64_t* step_counter) {
  const uint32_t step = current_step(step_arg, step_counter);
  for (int64_t i = global_thread_id(); i < total; i += grid_stride()) {
    int64_t p, q;
    split_index(i, num_groups, index32, p, q);
    const PhiloxWords w = noise_words(seed, particle_offset + static_cast<uint64_t>(p), step, static_cast<uint32_t>(q));
    const int64_t d0 = 4 * q;
    T* dst = out + p * particle_size + d0;
    if constexpr (std::is_same<T, float>::value) {
      if (vec) {
        const Normal4 z = normals_from_words(w);
        *reinterpret_cast<float4*>(dst) = make_float4(z.z0, z.z1, z.z2, z.z3);
        continue;
      }
    }
    const int64_t rest = particle_size - d0;
    const int n = rest < 4 ? static_cast<int>(rest) : 4;
    float z0, z1;
    box_muller(w.w0, w.w1, z0, z1);
    Storage<T>::store(dst, z0);
    if (n > 1) Storage<T>::store(dst + 1, z1);
    if (n > 2) {  // the second pair only when the group uses it (D % 4 == 1 or 2 tails)
      float z2, z3;
      box_muller(w.w2, w.w3, z2, z3);
      Storage<T>::store(dst + 2, z2);
      if (n > 3) Storage<T>::store(dst + 3, z3);
    }
  }
}

}  // namespace

cudaError_t launch_philox_fill(int64_t* out, int64_t num_particles, int64_t num_groups, uint64_t seed, uint32_t step,
                               uint64_t particle_offset, cudaStream_t stream, const int64_t* step_counter) {
  const int64_t total = num_particles * num_groups;
  if (total == 0) return cudaSuccess;
  unsigned int blocks = 0;
  cudaError_t err = grid_size(total, kThreads, blocks);
  if (err != cudaSuccess) return err;
  const bool index32 = total <= static_cast<int64_t>(UINT32_MAX);
  const bool vec = is_aligned(out, 16);
  philox_fill_kernel<<<blocks, kThreads, 0, stream>>>(out, total, num_groups, index32, vec, seed, step, particle_offset,
                                                      step_counter);
  return cudaGetLastError();
}

cudaError_t launch_normal_fill(void* out, StorageType type, int64_t num_particles, int64_t particle_size, uint64_t seed,
                               uint32_t step, uint64_t particle_offset, cudaStream_t stream,
                               const int64_t* step_counter) {
  if (num_particles == 0 || particle_size == 0) return cudaSuccess;
  const int64_t num_groups = (particle_size + 3) / 4;
  const int64_t total = num_particles * num_groups;
  unsigned int blocks = 0;
  cudaError_t err = grid_size(total, kThreads, blocks);
  if (err != cudaSuccess) return err;
  const bool index32 = total <= static_cast<int64_t>(UINT32_MAX);
  const bool vec = type == StorageType::kFloat32 && particle_size % 4 == 0 && is_aligned(out, 16);
#define SF_LAUNCH(T)                                                                                             \
  normal_fill_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<T*>(out), total, particle_size, num_groups, \
                                                         index32, vec, seed, step, particle_offset, step_counter)
  switch (type) {
    case StorageType::kFloat32:
      SF_LAUNCH(float);
      break;
    case StorageType::kFloat64:
      SF_LAUNCH(double);
      break;
    case StorageType::kFloat16:
      SF_LAUNCH(f16_t);
      break;
    case StorageType::kBFloat16:
      SF_LAUNCH(bf16_t);
      break;
  }
#undef SF_LAUNCH
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace scorefast
