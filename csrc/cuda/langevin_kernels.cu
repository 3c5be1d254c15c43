// CUDA kernels of langevin_step:
//
//   out = clamp(x + a_p * c_p * g + b_p * z),   g = s + w (s_c - s)
//
// * update kernel: one thread per (particle, group of 4 elements), which draws the group's
//   normals from the one or two Philox calls they lie in (the layouts of contract_noise.cuh);
//   128-bit loads/stores (64-bit for 16-bit storage) when D % 4 == 0 and every buffer is
//   aligned, scalar otherwise; grid-stride, int64 indexing.
// * clip-factor kernel (only with max_score_norm): c_p = min(1, max_norm / ||g_p||) per
//   particle, one warp (small D) or one block (large D) per particle, accumulated in double.
//
// Arithmetic matches the C++ CPU kernels operation for operation: the update uses
// explicitly rounded adds/multiplies (__fadd_rn, __fmul_rn, ...) so nvcc does not contract
// them into FMAs, and Box-Muller uses the precise logf / sqrtf / cosf / sinf. Do not build
// with -use_fast_math (or --ftz, --prec-div=false, --prec-sqrt=false): the noise contract
// requires float32 results equal to the reference to libm rounding.
#include <cuda_runtime.h>

#include <cstdint>

#include "contract_noise.cuh"
#include "kernel_common.cuh"
#include "langevin_launchers.h"
#include "quad_io.cuh"
#include "scorefast/langevin.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------------------
// The update.

template <typename Acc>
struct UpdateParams {
  const void* x;
  const void* score;
  const void* score_cond;  // null: no guidance
  void* out;               // may equal x
  const Acc* step_pp;      // null: scalar a
  const Acc* noise_pp;     // null: scalar b
  const Acc* factor;       // null: no clipping
  const void* noise;       // explicit noise (kExplicitNoise)
  StorageType noise_dtype;
  bool noise_vec;  // explicit noise is float32 and 16-byte aligned with D % 4 == 0
  Acc a, b, w, lo, hi;
  int64_t particle_size;  // D
  int64_t num_groups;     // ceil(D / 4)
  int64_t total;          // P * num_groups
  bool index32;
  uint64_t seed;
  uint64_t flat_offset;  // particle_offset D (contract_noise.cuh)
  uint32_t step;
  const int64_t* step_counter;  // null: step (see noise_launchers.h)
};

// kNoise: an UpdateNoise or, for the contract's noise, its NoiseLayout (contract_noise.cuh).
template <typename T, int kNoise, bool kVec>
__global__ void __launch_bounds__(kThreads) langevin_kernel(const UpdateParams<typename Storage<T>::acc> prm) {
  using Acc = typename Storage<T>::acc;
  const T* x = static_cast<const T*>(prm.x);
  const T* score = static_cast<const T*>(prm.score);
  const T* score_cond = static_cast<const T*>(prm.score_cond);
  T* out = static_cast<T*>(prm.out);
  const int64_t D = prm.particle_size;
  constexpr bool kDraws = is_contract_noise(kNoise);
  const uint32_t step = kDraws ? current_step(prm.step, prm.step_counter) : 0u;

  for (int64_t i = global_thread_id(); i < prm.total; i += grid_stride()) {
    int64_t p, q;
    particle_group<kNoise>(i, prm.num_groups, prm.index32, p, q);
    const int64_t d0 = 4 * q;
    const int64_t rest = D - d0;
    const int n = kVec ? 4 : (rest < 4 ? static_cast<int>(rest) : 4);
    const int64_t e = p * D + d0;

    Acc xv[4], g[4];
    load4<T, kVec>(x + e, n, xv);
    load4<T, kVec>(score + e, n, g);
    if (score_cond != nullptr) {
      Acc cv[4];
      load4<T, kVec>(score_cond + e, n, cv);
#pragma unroll
      for (int j = 0; j < 4; ++j) g[j] = add_rn(g[j], mul_rn(prm.w, sub_rn(cv[j], g[j])));
    }

    Acc a = prm.step_pp != nullptr ? prm.step_pp[p] : prm.a;
    if (prm.factor != nullptr) a = mul_rn(a, prm.factor[p]);

    Acc z[4] = {Acc(0), Acc(0), Acc(0), Acc(0)};
    Acc b = Acc(0);
    if (kNoise != kNoNoise) b = prm.noise_pp != nullptr ? prm.noise_pp[p] : prm.b;
    if constexpr (kDraws) {
      contract_normals4<kNoise>(prm.seed, prm.flat_offset + static_cast<uint64_t>(e), step, n, z);
    } else if constexpr (kNoise == kExplicitNoise) {
      if (prm.noise_vec) {
        const float4 r = *reinterpret_cast<const float4*>(static_cast<const float*>(prm.noise) + e);
        z[0] = static_cast<Acc>(r.x), z[1] = static_cast<Acc>(r.y);
        z[2] = static_cast<Acc>(r.z), z[3] = static_cast<Acc>(r.w);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j < n) z[j] = load_as<Acc>(prm.noise, prm.noise_dtype, e + j);
        }
      }
    }

    Acc v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      Acc r = add_rn(xv[j], mul_rn(a, g[j]));
      if (kNoise != kNoNoise) r = add_rn(r, mul_rn(b, z[j]));
      v[j] = clamp_keep_nan(r, prm.lo, prm.hi);
    }
    store4<T, kVec>(out + e, n, v);
  }
}

// ---------------------------------------------------------------------------------------
// Per-particle clip factors.

template <typename T, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ double guided_square(const T* score, const T* score_cond, Acc w, int64_t e) {
  Acc g = Storage<T>::load(score + e);
  if (score_cond != nullptr) g = add_rn(g, mul_rn(w, sub_rn(Storage<T>::load(score_cond + e), g)));
  const double gd = static_cast<double>(g);
  return gd * gd;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

template <typename Acc>
__device__ __forceinline__ Acc clip_factor(double sum_sq, double max_norm) {
  const double norm = sqrt(sum_sq);
  // A NaN norm gives a NaN factor: the whole particle's update is undefined.
  return static_cast<Acc>(!(norm <= max_norm) ? max_norm / norm : 1.0);
}

// One warp per particle (small D).
template <typename T, typename Acc = typename Storage<T>::acc>
__global__ void __launch_bounds__(kThreads)
    clip_factor_warp_kernel(const T* score, const T* score_cond, Acc w, int64_t P, int64_t D, double max_norm,
                            Acc* factors) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x / 32;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t p = first; p < P; p += stride) {
    double sum_sq = 0.0;
    for (int64_t d = lane; d < D; d += 32) sum_sq += guided_square(score, score_cond, w, p * D + d);
    sum_sq = warp_sum(sum_sq);
    if (lane == 0) factors[p] = clip_factor<Acc>(sum_sq, max_norm);
  }
}

// One block per particle (large D).
template <typename T, typename Acc = typename Storage<T>::acc>
__global__ void __launch_bounds__(kThreads)
    clip_factor_block_kernel(const T* score, const T* score_cond, Acc w, int64_t P, int64_t D, double max_norm,
                             Acc* factors) {
  __shared__ double partial[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  for (int64_t p = blockIdx.x; p < P; p += gridDim.x) {
    double sum_sq = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      sum_sq += guided_square(score, score_cond, w, p * D + d);
    }
    sum_sq = warp_sum(sum_sq);
    if (lane == 0) partial[warp] = sum_sq;
    __syncthreads();
    if (warp == 0) {
      double s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0;
      s = warp_sum(s);
      if (lane == 0) factors[p] = clip_factor<Acc>(s, max_norm);
    }
    __syncthreads();  // partial[] is reused by the next particle
  }
}

// Particles with at most this many elements get one warp, larger ones a block.
constexpr int64_t kWarpPerParticleMaxD = 2048;

template <typename T>
cudaError_t clip_factors_typed(const LangevinArgs& args, double max_norm, void* factors, cudaStream_t stream) {
  using Acc = typename Storage<T>::acc;
  const int64_t P = args.num_particles, D = args.particle_size;
  if (P == 0) return cudaSuccess;
  const T* score = static_cast<const T*>(args.score);
  const T* score_cond = static_cast<const T*>(args.score_cond);
  const Acc w = static_cast<Acc>(args.guidance);
  Acc* out = static_cast<Acc*>(factors);
  unsigned int blocks = 0;
  cudaError_t err;
  if (D <= kWarpPerParticleMaxD) {
    err = grid_size(P * 32, kThreads, blocks);
    if (err != cudaSuccess) return err;
    clip_factor_warp_kernel<T><<<blocks, kThreads, 0, stream>>>(score, score_cond, w, P, D, max_norm, out);
  } else {
    err = grid_size(P * kThreads, kThreads, blocks);
    if (err != cudaSuccess) return err;
    clip_factor_block_kernel<T><<<blocks, kThreads, 0, stream>>>(score, score_cond, w, P, D, max_norm, out);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t langevin_typed(const LangevinArgs& args, cudaStream_t stream, const int64_t* step_counter) {
  using Acc = typename Storage<T>::acc;
  const int64_t P = args.num_particles, D = args.particle_size;
  if (P == 0 || D == 0) return cudaSuccess;

  UpdateParams<Acc> prm;
  prm.x = args.x;
  prm.score = args.score;
  prm.score_cond = args.score_cond;
  prm.out = args.out;
  prm.step_pp = static_cast<const Acc*>(args.step_size_per_particle);
  prm.noise_pp = static_cast<const Acc*>(args.noise_scale_per_particle);
  prm.factor = static_cast<const Acc*>(args.score_factor);
  prm.noise = args.noise;
  prm.noise_dtype = args.noise_dtype;
  prm.a = static_cast<Acc>(args.step_size);
  prm.b = static_cast<Acc>(args.noise_scale);
  prm.w = static_cast<Acc>(args.guidance);
  // Without a clamp the bounds are -inf / +inf, which leave every value (NaN too) unchanged.
  prm.lo = args.has_clamp ? static_cast<Acc>(args.clamp_min) : static_cast<Acc>(-INFINITY);
  prm.hi = args.has_clamp ? static_cast<Acc>(args.clamp_max) : static_cast<Acc>(INFINITY);
  prm.particle_size = D;
  prm.num_groups = (D + 3) / 4;
  prm.total = P * prm.num_groups;
  prm.index32 = prm.total <= static_cast<int64_t>(UINT32_MAX);
  prm.seed = args.seed;
  prm.flat_offset = flat_offset(args.particle_offset, D);
  prm.step = args.step;
  prm.step_counter = step_counter;

  // b == 0 for every particle: no noise is drawn (nor an explicit noise tensor read).
  const int mode = !needs_noise(args) ? kNoNoise : args.noise != nullptr ? kExplicitNoise : noise_layout(D);
  const uintptr_t align = quad_alignment<T>();
  const bool vec = D % 4 == 0 && is_aligned(args.x, align) && is_aligned(args.score, align) &&
                   is_aligned(args.out, align) && (args.score_cond == nullptr || is_aligned(args.score_cond, align));
  prm.noise_vec =
      mode == kExplicitNoise && args.noise_dtype == StorageType::kFloat32 && D % 4 == 0 && is_aligned(args.noise, 16);

  unsigned int blocks = 0;
  cudaError_t err = grid_size(prm.total, kThreads, blocks);
  if (err != cudaSuccess) return err;
  with_update_noise(mode, vec, [&](auto noise, auto quads) {
    constexpr int kNoise = decltype(noise)::value;
    constexpr bool kVec = decltype(quads)::value;
    langevin_kernel<T, kNoise, kVec><<<blocks, kThreads, 0, stream>>>(prm);
  });
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_score_clip_factors(const LangevinArgs& args, double max_norm, void* factors, cudaStream_t stream) {
  switch (args.dtype) {
    case StorageType::kFloat32:
      return clip_factors_typed<float>(args, max_norm, factors, stream);
    case StorageType::kFloat64:
      return clip_factors_typed<double>(args, max_norm, factors, stream);
    case StorageType::kFloat16:
      return clip_factors_typed<f16_t>(args, max_norm, factors, stream);
    case StorageType::kBFloat16:
      return clip_factors_typed<bf16_t>(args, max_norm, factors, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_langevin(const LangevinArgs& args, cudaStream_t stream, const int64_t* step_counter) {
  switch (args.dtype) {
    case StorageType::kFloat32:
      return langevin_typed<float>(args, stream, step_counter);
    case StorageType::kFloat64:
      return langevin_typed<double>(args, stream, step_counter);
    case StorageType::kFloat16:
      return langevin_typed<f16_t>(args, stream, step_counter);
    case StorageType::kBFloat16:
      return langevin_typed<bf16_t>(args, stream, step_counter);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace scorefast
