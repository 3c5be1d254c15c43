// CUDA kernels of reverse_step and snr_corrector_step:
//
//   out = clamp(c_x x + c_s c_p g + b z),   g = s + w (s_c - s)
//   corrector: c_x = 1, c_s = eps_p, b = sqrt(2 eps_p), eps_p = 2 (snr ||z_p|| / ||g_p||)^2
//
// * step kernel: one thread per (particle, group of 4 elements), which draws the group's
//   normals from the one or two Philox calls they lie in (the layouts of contract_noise.cuh);
//   128-bit loads/stores when D % 4 == 0 and every buffer is aligned, scalar otherwise;
//   grid-stride, int64 indexing.
// * particle kernel: one warp (small D) or one block (large D) per particle. It sums the
//   float64 squares of g and, for the corrector, of the contract normals regenerated group
//   by group (never stored), in a fixed order (deterministic), and then writes the clip
//   factor, the two sums (batch-mean corrector), or eps_p and the particle's step (per-sample
//   corrector: both passes over the particle in one kernel).
// * batch kernel (batch-mean corrector): one block reduces the norms of every particle to one
//   eps; the step kernel then runs with it. The means need every particle first, hence
//   separate launches.
//
// Arithmetic is explicitly rounded (__fadd_rn, __fmul_rn, ...) so nvcc does not contract it
// into FMAs, as in langevin_kernels.cu; do not build with -use_fast_math.
#include <cuda_runtime.h>

#include <cstdint>

#include "contract_noise.cuh"
#include "diffusion_launchers.h"
#include "kernel_common.cuh"
#include "quad_io.cuh"
#include "scorefast/diffusion.h"
#include "scorefast/langevin.h"  // clamp_keep_nan
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

template <typename Acc>
struct StepParams {
  const void* x;
  const void* score;
  const void* score_cond;  // null: no guidance
  void* out;               // may equal x
  const Acc* cx_pp;        // null: scalar c_x
  const Acc* a_pp;         // null: scalar c_s
  const Acc* b_pp;         // null: scalar b
  const Acc* factor;       // null: no clipping
  const void* noise;       // explicit noise (kExplicitNoise)
  StorageType noise_dtype;
  bool noise_vec;  // explicit noise is float32 and 16-byte aligned with D % 4 == 0
  Acc cx, a, b, w, lo, hi;
  int64_t particle_size;  // D
  int64_t num_groups;     // ceil(D / 4)
  int64_t total;          // P * num_groups
  bool index32;
  uint64_t seed;
  uint64_t flat_offset;  // particle_offset D (contract_noise.cuh)
  uint32_t step;
};

// g = s + w (s_c - s) for the n elements of a group at e.
template <typename T, bool kVec, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ void guided4(const T* score, const T* score_cond, Acc w, int64_t e, int n, Acc (&g)[4]) {
  load4<T, kVec>(score + e, n, g);
  if (score_cond != nullptr) {
    Acc cv[4];
    load4<T, kVec>(score_cond + e, n, cv);
#pragma unroll
    for (int j = 0; j < 4; ++j) g[j] = add_rn(g[j], mul_rn(w, sub_rn(cv[j], g[j])));
  }
}

// out = clamp(c_x x + a g (+ b z)) for the n elements of a group at e.
template <typename T, bool kVec, bool kNoise, typename Acc = typename Storage<T>::acc>
__device__ __forceinline__ void step4(const T* x, T* out, int64_t e, int n, Acc cx, Acc a, Acc b, const Acc (&g)[4],
                                      const Acc (&z)[4], Acc lo, Acc hi) {
  Acc xv[4], v[4];
  load4<T, kVec>(x + e, n, xv);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    Acc r = add_rn(mul_rn(cx, xv[j]), mul_rn(a, g[j]));
    if (kNoise) r = add_rn(r, mul_rn(b, z[j]));
    v[j] = clamp_keep_nan(r, lo, hi);
  }
  store4<T, kVec>(out + e, n, v);
}

// kNoise: an UpdateNoise or, for the contract's noise, its NoiseLayout (contract_noise.cuh).
template <typename T, int kNoise, bool kVec>
__global__ void __launch_bounds__(kThreads) reverse_step_kernel(const StepParams<typename Storage<T>::acc> prm) {
  using Acc = typename Storage<T>::acc;
  const T* x = static_cast<const T*>(prm.x);
  T* out = static_cast<T*>(prm.out);
  const int64_t D = prm.particle_size;
  for (int64_t i = global_thread_id(); i < prm.total; i += grid_stride()) {
    int64_t p, q;
    particle_group<kNoise>(i, prm.num_groups, prm.index32, p, q);
    const int64_t d0 = 4 * q;
    const int64_t rest = D - d0;
    const int n = kVec ? 4 : (rest < 4 ? static_cast<int>(rest) : 4);
    const int64_t e = p * D + d0;
    Acc g[4];
    guided4<T, kVec>(static_cast<const T*>(prm.score), static_cast<const T*>(prm.score_cond), prm.w, e, n, g);
    const Acc cx = prm.cx_pp != nullptr ? prm.cx_pp[p] : prm.cx;
    Acc a = prm.a_pp != nullptr ? prm.a_pp[p] : prm.a;
    if (prm.factor != nullptr) a = mul_rn(a, prm.factor[p]);
    Acc z[4] = {Acc(0), Acc(0), Acc(0), Acc(0)};
    Acc b = Acc(0);
    if (kNoise != kNoNoise) b = prm.b_pp != nullptr ? prm.b_pp[p] : prm.b;
    if constexpr (is_contract_noise(kNoise)) {
      contract_normals4<kNoise>(prm.seed, prm.flat_offset + static_cast<uint64_t>(e), prm.step, n, z);
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
    step4<T, kVec, kNoise != kNoNoise>(x, out, e, n, cx, a, b, g, z, prm.lo, prm.hi);
  }
}

// ---------------------------------------------------------------------------------------
// Per-particle kernels: one warp or one block per particle.

enum ParticleMode : int { kClipFactor = 0, kNormSums = 1, kCorrect = 2 };

template <typename Acc>
struct ParticleParams {
  StepParams<Acc> step;  // x, out, scores, w, lo, hi, counter, sizes
  int64_t num_particles;
  double max_norm;   // kClipFactor
  double snr;        // kCorrect
  Acc* factor_out;   // kClipFactor: [P]
  Acc* eps_out;      // kCorrect: [P]
  double* g_sq_out;  // kNormSums: [P]
  double* z_sq_out;  // kNormSums: [P]
};

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of v over the group (a warp, or the block), returned to every thread of it.
template <bool kWarp>
__device__ __forceinline__ double group_sum(double v, double* partial) {
  v = warp_sum(v);
  if (kWarp) return __shfl_sync(0xffffffffu, v, 0);
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0;
    s = warp_sum(s);
    if (lane == 0) partial[kThreads / 32] = s;
  }
  __syncthreads();
  const double total = partial[kThreads / 32];
  __syncthreads();  // partial[] is reused by the next sum
  return total;
}

// kLayout: the NoiseLayout of the contract's normals (contract_noise.cuh; any for kClipFactor,
// which draws none).
template <typename T, bool kWarp, int kMode, int kLayout>
__global__ void __launch_bounds__(kThreads) particle_kernel(const ParticleParams<typename Storage<T>::acc> prm) {
  using Acc = typename Storage<T>::acc;
  __shared__ double partial[kThreads / 32 + 1];
  const StepParams<Acc>& sp = prm.step;
  const T* score = static_cast<const T*>(sp.score);
  const T* score_cond = static_cast<const T*>(sp.score_cond);
  const int64_t D = sp.particle_size, Q = sp.num_groups;
  const int64_t lane = kWarp ? (threadIdx.x & 31) : threadIdx.x;
  const int64_t width = kWarp ? 32 : blockDim.x;
  const int64_t first = kWarp ? (static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32)
                              : static_cast<int64_t>(blockIdx.x);
  const int64_t stride = kWarp ? static_cast<int64_t>(gridDim.x) * (blockDim.x / 32) : gridDim.x;
  for (int64_t p = first; p < prm.num_particles; p += stride) {
    double g_sq = 0.0, z_sq = 0.0;
    for (int64_t q = lane; q < Q; q += width) {
      const int64_t rest = D - 4 * q;
      const int n = rest < 4 ? static_cast<int>(rest) : 4;
      const int64_t e = p * D + 4 * q;
      Acc g[4];
      guided4<T, false>(score, score_cond, sp.w, e, n, g);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < n) g_sq += static_cast<double>(g[j]) * static_cast<double>(g[j]);
      }
      if (kMode != kClipFactor) {
        Acc z[4];
        contract_normals4<kLayout>(sp.seed, sp.flat_offset + static_cast<uint64_t>(e), sp.step, n, z);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (j < n) z_sq += static_cast<double>(z[j]) * static_cast<double>(z[j]);
        }
      }
    }
    g_sq = group_sum<kWarp>(g_sq, partial);
    if (kMode != kClipFactor) z_sq = group_sum<kWarp>(z_sq, partial);
    if (kMode == kClipFactor) {
      if (lane == 0) prm.factor_out[p] = static_cast<Acc>(clip_factor_of(g_sq, prm.max_norm));
    } else if (kMode == kNormSums) {
      if (lane == 0) prm.g_sq_out[p] = g_sq, prm.z_sq_out[p] = z_sq;
    } else {
      // Every thread holds the same sums, hence the same eps: the second pass needs no sync.
      const double eps = snr_step_size(sqrt(g_sq), sqrt(z_sq), prm.snr);
      if (lane == 0) prm.eps_out[p] = static_cast<Acc>(eps);
      const Acc a = static_cast<Acc>(eps), b = static_cast<Acc>(sqrt(2.0 * eps));
      const T* x = static_cast<const T*>(sp.x);
      T* out = static_cast<T*>(sp.out);
      for (int64_t q = lane; q < Q; q += width) {
        const int64_t rest = D - 4 * q;
        const int n = rest < 4 ? static_cast<int>(rest) : 4;
        const int64_t e = p * D + 4 * q;
        Acc g[4], z[4];
        guided4<T, false>(score, score_cond, sp.w, e, n, g);
        contract_normals4<kLayout>(sp.seed, sp.flat_offset + static_cast<uint64_t>(e), sp.step, n, z);
        step4<T, false, true>(x, out, e, n, Acc(1), a, b, g, z, sp.lo, sp.hi);
      }
    }
  }
}

// One block: the batch means of the norms, eps and sqrt(2 eps) for every particle.
template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    batch_coefficients_kernel(int64_t P, const double* g_sq, const double* z_sq, double snr, Acc* eps_out, Acc* b_out) {
  __shared__ double partial[kThreads / 32 + 1];
  double g = 0.0, z = 0.0;
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) g += sqrt(g_sq[p]), z += sqrt(z_sq[p]);
  g = group_sum<false>(g, partial);
  z = group_sum<false>(z, partial);
  const double eps = snr_step_size(g / static_cast<double>(P), z / static_cast<double>(P), snr);
  const Acc a = static_cast<Acc>(eps), b = static_cast<Acc>(sqrt(2.0 * eps));
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) eps_out[p] = a, b_out[p] = b;
}

// Particles with at most this many elements get one warp, larger ones a block.
constexpr int64_t kWarpPerParticleMaxD = 2048;

template <typename Acc>
StepParams<Acc> step_params(const ReverseArgs& args) {
  StepParams<Acc> prm;
  prm.x = args.x;
  prm.score = args.score;
  prm.score_cond = args.score_cond;
  prm.out = args.out;
  prm.cx_pp = static_cast<const Acc*>(args.x_coef_per_particle);
  prm.a_pp = static_cast<const Acc*>(args.score_coef_per_particle);
  prm.b_pp = static_cast<const Acc*>(args.noise_scale_per_particle);
  prm.factor = static_cast<const Acc*>(args.score_factor);
  prm.noise = args.noise;
  prm.noise_dtype = args.noise_dtype;
  prm.noise_vec = false;
  prm.cx = static_cast<Acc>(args.x_coef);
  prm.a = static_cast<Acc>(args.score_coef);
  prm.b = static_cast<Acc>(args.noise_scale);
  prm.w = static_cast<Acc>(args.guidance);
  // Without a clamp the bounds are -inf / +inf, which leave every value (NaN too) unchanged.
  prm.lo = args.has_clamp ? static_cast<Acc>(args.clamp_min) : static_cast<Acc>(-INFINITY);
  prm.hi = args.has_clamp ? static_cast<Acc>(args.clamp_max) : static_cast<Acc>(INFINITY);
  prm.particle_size = args.particle_size;
  prm.num_groups = (args.particle_size + 3) / 4;
  prm.total = args.num_particles * prm.num_groups;
  prm.index32 = prm.total <= static_cast<int64_t>(UINT32_MAX);
  prm.seed = args.seed;
  prm.flat_offset = flat_offset(args.particle_offset, args.particle_size);
  prm.step = args.step;
  return prm;
}

template <typename T>
cudaError_t reverse_step_typed(const ReverseArgs& args, cudaStream_t stream) {
  using Acc = typename Storage<T>::acc;
  if (args.num_particles == 0 || args.particle_size == 0) return cudaSuccess;
  StepParams<Acc> prm = step_params<Acc>(args);
  const int64_t D = args.particle_size;
  // b == 0 for every particle: no noise is drawn (nor an explicit noise tensor read).
  const int mode = !reverse_needs_noise(args) ? kNoNoise : args.noise != nullptr ? kExplicitNoise : noise_layout(D);
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
    reverse_step_kernel<T, kNoise, kVec><<<blocks, kThreads, 0, stream>>>(prm);
  });
  return cudaGetLastError();
}

template <typename T, int kMode>
cudaError_t particle_typed(const ReverseArgs& args, ParticleParams<typename Storage<T>::acc> prm, cudaStream_t stream) {
  using Acc = typename Storage<T>::acc;
  const int64_t P = args.num_particles;
  if (P == 0) return cudaSuccess;
  prm.step = step_params<Acc>(args);
  prm.num_particles = P;
  const int64_t D = args.particle_size;
  const bool warp = D <= kWarpPerParticleMaxD;
  unsigned int blocks = 0;
  const cudaError_t err = grid_size(warp ? P * 32 : P * kThreads, kThreads, blocks);
  if (err != cudaSuccess) return err;
#define SF_LAUNCH(WARP, LAYOUT) particle_kernel<T, WARP, kMode, LAYOUT><<<blocks, kThreads, 0, stream>>>(prm)
  if constexpr (kMode == kClipFactor) {  // draws no noise: one layout, whatever D is
    if (warp)
      SF_LAUNCH(true, kAlignedNoise);
    else
      SF_LAUNCH(false, kAlignedNoise);
  } else if (warp) {
    with_noise_layout(D, [&](auto layout) {
      constexpr int kLayout = decltype(layout)::value;
      SF_LAUNCH(true, kLayout);
    });
  } else {  // D > kWarpPerParticleMaxD: never packed
    with_noise_layout(
        D,
        [&](auto layout) {
          constexpr int kLayout = decltype(layout)::value;
          SF_LAUNCH(false, kLayout);
        },
        false);
  }
#undef SF_LAUNCH
  return cudaGetLastError();
}

template <int kMode>
cudaError_t particle_dispatch(const ReverseArgs& args, double max_norm, double snr, void* acc_out, double* g_sq,
                              double* z_sq, cudaStream_t stream) {
  switch (args.dtype) {
#define SF_CASE(STORAGE, T)                                                                \
  case StorageType::STORAGE: {                                                             \
    using Acc = typename Storage<T>::acc;                                                  \
    ParticleParams<Acc> prm{};                                                             \
    prm.max_norm = max_norm, prm.snr = snr, prm.g_sq_out = g_sq, prm.z_sq_out = z_sq;      \
    prm.factor_out = static_cast<Acc*>(acc_out), prm.eps_out = static_cast<Acc*>(acc_out); \
    return particle_typed<T, kMode>(args, prm, stream);                                    \
  }
    SF_CASE(kFloat32, float)
    SF_CASE(kFloat64, double)
    SF_CASE(kFloat16, f16_t)
    SF_CASE(kBFloat16, bf16_t)
#undef SF_CASE
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t launch_reverse_step(const ReverseArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case StorageType::kFloat32:
      return reverse_step_typed<float>(args, stream);
    case StorageType::kFloat64:
      return reverse_step_typed<double>(args, stream);
    case StorageType::kFloat16:
      return reverse_step_typed<f16_t>(args, stream);
    case StorageType::kBFloat16:
      return reverse_step_typed<bf16_t>(args, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_reverse_clip_factors(const ReverseArgs& args, double max_norm, void* factors, cudaStream_t stream) {
  return particle_dispatch<kClipFactor>(args, max_norm, 0.0, factors, nullptr, nullptr, stream);
}

cudaError_t launch_snr_corrector(const ReverseArgs& args, double snr, void* step_sizes, cudaStream_t stream) {
  return particle_dispatch<kCorrect>(args, 0.0, snr, step_sizes, nullptr, nullptr, stream);
}

cudaError_t launch_corrector_norms(const ReverseArgs& args, double* g_sq, double* z_sq, cudaStream_t stream) {
  return particle_dispatch<kNormSums>(args, 0.0, 0.0, nullptr, g_sq, z_sq, stream);
}

cudaError_t launch_corrector_batch_coefficients(int64_t num_particles, StorageType dtype, const double* g_sq,
                                                const double* z_sq, double snr, void* step_sizes, void* noise_scales,
                                                cudaStream_t stream) {
  if (num_particles == 0) return cudaSuccess;
  if (dtype == StorageType::kFloat64) {
    batch_coefficients_kernel<double><<<1, kThreads, 0, stream>>>(
        num_particles, g_sq, z_sq, snr, static_cast<double*>(step_sizes), static_cast<double*>(noise_scales));
  } else {
    batch_coefficients_kernel<float><<<1, kThreads, 0, stream>>>(
        num_particles, g_sq, z_sq, snr, static_cast<float*>(step_sizes), static_cast<float*>(noise_scales));
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace scorefast
