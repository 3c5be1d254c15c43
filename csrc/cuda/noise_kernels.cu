// CUDA kernels of the noise contract: philox_fill_ (raw Philox words) and normal_fill_
// (standard normals). philox_fill_: one thread per (particle, group of 4), one Philox call
// giving the group's four words. normal_fill_: the tensor draws the noise of its flat
// [P D / 4, 4] view whatever D is (scorefast/philox.h), so one thread per counter of that
// run of the stream, one Philox call giving four consecutive elements.
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

// out[e], out[e + 1] = Box-Muller of (word_a, word_b), those of the two in [0, n); nothing is
// drawn when neither is.
template <typename T>
__device__ __forceinline__ void store_pair_in_run(T* out, int64_t e, int64_t n, uint32_t word_a, uint32_t word_b) {
  const bool first = e >= 0 && e < n, second = e + 1 >= 0 && e + 1 < n;
  if (!first && !second) return;
  float z_cos, z_sin;
  box_muller(word_a, word_b, z_cos, z_sin);
  if (first) Storage<T>::store(out + e, z_cos);
  if (second) Storage<T>::store(out + e + 1, z_sin);
}

// out[0 .. n) is the run of the stream's elements that starts at output `head` of counter
// first_counter (noise_site of the first particle). Thread i takes counter first_counter + i,
// whose output j is out[4 i + j - head]; only the first and last counters are partial. `vec`
// (float32, head == 0, 16-byte aligned base): one float4 store per full counter.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    normal_fill_kernel(T* out, int64_t num_counters, int64_t n, uint64_t first_counter, int head, bool vec,
                       uint64_t seed, uint32_t step_arg, const int64_t* step_counter) {
  const uint32_t step = current_step(step_arg, step_counter);
  for (int64_t i = global_thread_id(); i < num_counters; i += grid_stride()) {
    const PhiloxWords w = noise_words(seed, first_counter + static_cast<uint64_t>(i), step, 0u);
    const int64_t e = 4 * i - head;  // out index of the counter's output 0
    if constexpr (std::is_same<T, float>::value) {
      if (vec && e + 4 <= n) {
        const Normal4 z = normals_from_words(w);
        *reinterpret_cast<float4*>(out + e) = make_float4(z.z0, z.z1, z.z2, z.z3);
        continue;
      }
    }
    store_pair_in_run(out, e, n, w.w0, w.w1);
    store_pair_in_run(out, e + 2, n, w.w2, w.w3);
  }
}

template <typename T>
cudaError_t normal_fill_typed(T* out, int64_t num_particles, int64_t particle_size, uint64_t seed, uint32_t step,
                              uint64_t particle_offset, cudaStream_t stream, const int64_t* step_counter) {
  const NoiseSite first = noise_site(particle_offset, static_cast<uint64_t>(particle_size), 0);
  const int64_t n = num_particles * particle_size;
  const int64_t num_counters = (first.output + n + 3) / 4;
  unsigned int blocks = 0;
  const cudaError_t err = grid_size(num_counters, kThreads, blocks);
  if (err != cudaSuccess) return err;
  const bool vec = std::is_same<T, float>::value && first.output == 0 && is_aligned(out, 16);
  normal_fill_kernel<T><<<blocks, kThreads, 0, stream>>>(out, num_counters, n, first.counter, first.output, vec, seed,
                                                         step, step_counter);
  return cudaGetLastError();
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
#define SF_FILL(T)                                                                                           \
  normal_fill_typed(static_cast<T*>(out), num_particles, particle_size, seed, step, particle_offset, stream, \
                    step_counter)
  switch (type) {
    case StorageType::kFloat32:
      return SF_FILL(float);
    case StorageType::kFloat64:
      return SF_FILL(double);
    case StorageType::kFloat16:
      return SF_FILL(f16_t);
    case StorageType::kBFloat16:
      return SF_FILL(bf16_t);
  }
#undef SF_FILL
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace scorefast
