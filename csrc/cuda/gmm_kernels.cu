// CUDA kernels of gmm_score (see scorefast/gmm.h): per point, stream over the components
// with an online log-sum-exp, exactly as the CPU kernel (csrc/cpu/isa_gmm_kernels.inc) does (the
// update per component is spelled out in gmm_device.cuh).
//
// Two designs:
// * D <= 4: one thread per point, D a template parameter (everything in registers); the
//   block stages the components' parameters in shared memory, a tile at a time, and every
//   thread of the block reads them as broadcasts.
// * D > 4: one warp per point. Lane l owns coordinates d = l + 32 c; x, the accumulated
//   score and t live in registers (kPerLane = c-slots per lane, a power of two) or, for very
//   large D, in shared memory. quad and log_det are summed over lanes with xor-butterfly
//   shuffles, which leave the same bits in every lane, so every lane takes the same
//   branches. With a factor, t_j = sum_i (x_i - mu_i) F_ij is accumulated row by row of F
//   (coalesced), and F u is formed 32 rows at a time: each lane sums its columns of the 32
//   rows, then a transposing shuffle reduction leaves row 32 c + l's total in lane l.
//
// Math in float (double for float64 storage) with the precise expf/logf (or exp/log);
// do not build with fast math. Sums are taken in a different order than on the CPU, so
// results agree to rounding, not bitwise. int64 indexing throughout.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "gmm_device.cuh"
#include "gmm_launchers.h"
#include "kernel_common.cuh"
#include "scorefast/gmm.h"
#include "scorefast/storage.h"

namespace scorefast {
namespace cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;

// Sum over the 32 lanes; every lane gets the same value (fp addition is commutative, so
// both partners of each butterfly step compute the same sum).
template <typename Acc>
__device__ __forceinline__ Acc warp_allsum(Acc v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// ---------------------------------------------------------------------------------------
// Small D: one thread per point.

template <typename T, int kD, bool kFull>
__global__ void __launch_bounds__(kThreads) gmm_small_kernel(const GmmArgs a) {
  using Acc = typename Storage<T>::acc;
  using Tile = SmallTile<Acc, kD, kFull>;
  __shared__ Acc tile[Tile::kSize];

  const int64_t N = a.num_points, K = a.num_components, VC = a.var_cols;
  const T* x = static_cast<const T*>(a.x);
  const Acc* means = static_cast<const Acc*>(a.means);
  const Acc* sigma2 = static_cast<const Acc*>(a.sigma2);
  const bool per_point = sigma2 != nullptr;
  // Per-point sigma: h = 1 / (var + sigma^2) here; otherwise inv_var from the host.
  const Acc* vv = static_cast<const Acc*>(per_point ? a.var : a.inv_var);
  const Acc* factor = static_cast<const Acc*>(a.factor);
  const Acc* log_const = static_cast<const Acc*>(a.log_const);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  const bool iso = VC == 1;
  const Acc ninf = neg_inf<Acc>();

  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < N;
       base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = base + threadIdx.x;
    const bool active = n < N;  // inactive threads still help stage the tiles
    Acc xr[kD], acc[kD];
#pragma unroll
    for (int d = 0; d < kD; ++d) {
      xr[d] = active ? Storage<T>::load(x + n * kD + d) : Acc(0);
      acc[d] = 0;
    }
    const Acc s2 = (per_point && active) ? sigma2[n] : Acc(0);
    Acc m = ninf, S = 0;

    for (int64_t k0 = 0; k0 < K; k0 += kTileComponents) {
      const int tk = static_cast<int>(K - k0 < kTileComponents ? K - k0 : kTileComponents);
      __syncthreads();  // the previous tile is no longer read
      Tile::stage(tile, k0, tk, means, vv, VC, factor, log_const);
      __syncthreads();
      if (!active) continue;
      Tile::accumulate(tile, tk, per_point, iso, s2, xr, m, S, acc);
    }

    if (active) {
      const Acc inv_S = Acc(1) / S;
#pragma unroll
      for (int d = 0; d < kD; ++d) Storage<T>::store(score + n * kD + d, acc[d] * inv_S);
      Storage<T>::store(log_prob + n, m + sf_log(S));
    }
  }
}

// ---------------------------------------------------------------------------------------
// D > 4: one warp per point.

// A lane's coordinates d = lane + 32 c, c < kPerLane: registers, or (kPerLane == 0) this
// warp's slice of shared memory, [chunks * 32].
template <typename Acc, int kPerLane>
struct LaneVec {
  Acc v[kPerLane];
  __device__ __forceinline__ Acc& operator()(int c, int) { return v[c]; }
};

template <typename Acc>
struct LaneVec<Acc, 0> {
  Acc* p;
  __device__ __forceinline__ Acc& operator()(int c, int lane) { return p[c * 32 + lane]; }
};

// One step of transpose_reduce: lanes with bit W keep rows [W, 2W) of the current block,
// the others rows [0, W), each adding its partner's copy (lane ^ W).
template <int W, typename Acc>
__device__ __forceinline__ void transpose_step(Acc (&v)[32], bool upper) {
#pragma unroll
  for (int j = 0; j < W; ++j) {
    const Acc send = upper ? v[j] : v[j + W];
    const Acc keep = upper ? v[j + W] : v[j];
    v[j] = keep + __shfl_xor_sync(kFullMask, send, W);
  }
}

// v[r] in every lane -> the lane's result: sum over lanes of v[lane] (31 shuffles).
template <typename Acc>
__device__ __forceinline__ Acc transpose_reduce(Acc (&v)[32], int lane) {
  transpose_step<16>(v, (lane & 16) != 0);
  transpose_step<8>(v, (lane & 8) != 0);
  transpose_step<4>(v, (lane & 4) != 0);
  transpose_step<2>(v, (lane & 2) != 0);
  transpose_step<1>(v, (lane & 1) != 0);
  return v[0];
}

template <typename T, bool kFull, int kPerLane>
__global__ void __launch_bounds__(kThreads, 1) gmm_warp_kernel(const GmmArgs a) {
  using Acc = typename Storage<T>::acc;
  constexpr bool kRegs = kPerLane > 0;
  // x in registers only where its own coordinates are all that is read (no factor).
  constexpr bool kXRegs = kRegs && !kFull;

  const int64_t N = a.num_points, D = a.dim, K = a.num_components, VC = a.var_cols;
  const T* x = static_cast<const T*>(a.x);
  const Acc* means = static_cast<const Acc*>(a.means);
  const Acc* sigma2 = static_cast<const Acc*>(a.sigma2);
  const bool per_point = sigma2 != nullptr;
  const Acc* vv = static_cast<const Acc*>(per_point ? a.var : a.inv_var);
  const Acc* factor = static_cast<const Acc*>(a.factor);
  const Acc* log_const = static_cast<const Acc*>(a.log_const);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  const bool iso = VC == 1;
  const Acc ninf = neg_inf<Acc>();
  const Acc Dacc = static_cast<Acc>(D);

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps_per_block = blockDim.x >> 5;
  const int chunks = kRegs ? kPerLane : static_cast<int>((D + 31) / 32);

  LaneVec<Acc, kPerLane> acc, t;  // t holds t, then u = h . t
  LaneVec<Acc, kXRegs ? kPerLane : 1> xr;
  if constexpr (!kRegs) {
    extern __shared__ __align__(16) unsigned char gmm_smem[];
    Acc* mine = reinterpret_cast<Acc*>(gmm_smem) + static_cast<int64_t>(warp) * 2 * chunks * 32;
    acc.p = mine;
    t.p = mine + chunks * 32;
  }

  for (int64_t n = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; n < N;
       n += static_cast<int64_t>(gridDim.x) * warps_per_block) {
    const T* xn = x + n * D;
#pragma unroll
    for (int c = 0; c < chunks; ++c) {
      const int64_t d = c * 32 + lane;
      acc(c, lane) = 0;
      if constexpr (kXRegs) xr(c, lane) = d < D ? Storage<T>::load(xn + d) : Acc(0);
    }
    const Acc s2 = per_point ? sigma2[n] : Acc(0);
    Acc m = ninf, S = 0;

    for (int64_t k = 0; k < K; ++k) {
      const Acc* mu = means + k * D;
      const Acc* hk = vv + k * VC;
      // t = F^T (x - mu) (row by row of F: coalesced), or x - mu.
      if constexpr (kFull) {
        const Acc* F = factor + k * D * D;
#pragma unroll
        for (int c = 0; c < chunks; ++c) t(c, lane) = 0;
        for (int64_t i = 0; i < D; ++i) {
          const Acc di = Storage<T>::load(xn + i) - mu[i];  // broadcast loads
          const Acc* row = F + i * D;
#pragma unroll
          for (int c = 0; c < chunks; ++c) {
            const int64_t j = c * 32 + lane;
            if (j < D) t(c, lane) += di * row[j];
          }
        }
      } else {
#pragma unroll
        for (int c = 0; c < chunks; ++c) {
          const int64_t d = c * 32 + lane;
          Acc xd;
          if constexpr (kXRegs) {
            xd = xr(c, lane);
          } else {
            xd = d < D ? Storage<T>::load(xn + d) : Acc(0);
          }
          t(c, lane) = d < D ? xd - mu[d] : Acc(0);
        }
      }
      // quad (and log_det over the lanes' coordinates); t becomes u = h . t.
      Acc quad = 0, log_det = 0;
      if (iso) {
        Acc h;
        if (per_point) {
          const Acc v = hk[0] + s2;
          h = Acc(1) / v;
          log_det = sf_log(v) * Dacc;
        } else {
          h = hk[0];
        }
        Acc sq = 0;
#pragma unroll
        for (int c = 0; c < chunks; ++c) {
          const Acc tc = t(c, lane);
          sq += tc * tc;
          t(c, lane) = h * tc;
        }
        quad = warp_allsum(sq) * h;
      } else {
        Acc lp = 0;
#pragma unroll
        for (int c = 0; c < chunks; ++c) {
          const int64_t d = c * 32 + lane;
          Acc h = 0;
          if (d < D) {
            if (per_point) {
              const Acc v = hk[d] + s2;
              h = Acc(1) / v;
              lp += sf_log(v);
            } else {
              h = hk[d];
            }
          }
          const Acc tc = t(c, lane);
          const Acc u = h * tc;
          quad += u * tc;
          t(c, lane) = u;
        }
        quad = warp_allsum(quad);
        if (per_point) log_det = warp_allsum(lp);
      }
      const Acc l = log_const[k] - Acc(0.5) * (quad + log_det);  // the same in every lane
      if (l == ninf) continue;                                   // weight 0, or infinitely far: contributes nothing
      if (l > m) {                                               // new running max: rescale what is accumulated
        const Acc r = sf_exp(m - l);
        S *= r;
#pragma unroll
        for (int c = 0; c < chunks; ++c) acc(c, lane) *= r;
        m = l;
      }
      const Acc e = sf_exp(l - m);  // NaN l gives NaN e: the point's result is NaN
      S += e;
      if constexpr (kFull) {
        // acc_i -= e (F u)_i, 32 rows at a time.
        const Acc* F = factor + k * D * D;
#pragma unroll 1
        for (int rc = 0; rc < chunks; ++rc) {
          Acc part[32];
#pragma unroll
          for (int r = 0; r < 32; ++r) {
            const int64_t i = static_cast<int64_t>(rc) * 32 + r;
            Acc s = 0;
            if (i < D) {
              const Acc* row = F + i * D;
#pragma unroll
              for (int c = 0; c < chunks; ++c) {
                const int64_t j = c * 32 + lane;
                if (j < D) s += row[j] * t(c, lane);
              }
            }
            part[r] = s;
          }
          const Acc fu = transpose_reduce(part, lane);  // row rc * 32 + lane
          if constexpr (kRegs) {
#pragma unroll
            for (int c = 0; c < chunks; ++c) {
              if (c == rc) acc(c, lane) -= e * fu;
            }
          } else {
            acc(rc, lane) -= e * fu;
          }
        }
      } else {
#pragma unroll
        for (int c = 0; c < chunks; ++c) acc(c, lane) -= e * t(c, lane);
      }
    }

    const Acc inv_S = Acc(1) / S;
#pragma unroll
    for (int c = 0; c < chunks; ++c) {
      const int64_t d = c * 32 + lane;
      if (d < D) Storage<T>::store(score + n * D + d, acc(c, lane) * inv_S);
    }
    if (lane == 0) Storage<T>::store(log_prob + n, m + sf_log(S));
    if constexpr (!kRegs) __syncwarp();  // shared slices are rewritten by the next point
  }
}

// ---------------------------------------------------------------------------------------
// Launch.

template <typename T, int kD>
cudaError_t launch_small(const GmmArgs& a, cudaStream_t stream) {
  unsigned int blocks = 0;
  cudaError_t err = grid_size(a.num_points, kThreads, blocks);
  if (err != cudaSuccess) return err;
  if (a.factor != nullptr) {
    gmm_small_kernel<T, kD, true><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    gmm_small_kernel<T, kD, false><<<blocks, kThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template <typename T, bool kFull, int kPerLane>
cudaError_t launch_warp(const GmmArgs& a, cudaStream_t stream) {
  unsigned int blocks = 0;
  cudaError_t err = grid_size(a.num_points * 32, kThreads, blocks);
  if (err != cudaSuccess) return err;
  gmm_warp_kernel<T, kFull, kPerLane><<<blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

// Very large D: acc and t of each warp in shared memory.
template <typename T, bool kFull>
cudaError_t launch_warp_shared(const GmmArgs& a, cudaStream_t stream) {
  using Acc = typename Storage<T>::acc;
  const auto kernel = gmm_warp_kernel<T, kFull, 0>;
  const int64_t per_warp = 2 * ((a.dim + 31) / 32) * 32 * static_cast<int64_t>(sizeof(Acc));
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  int optin = 0, sms = 0;
  err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err != cudaSuccess) return err;
  if (per_warp > optin) return cudaErrorInvalidValue;  // D too large for one warp's slice
  constexpr int64_t kDefaultSmem = 48 * 1024;
  int64_t warps = kThreads / 32;
  while (warps > 1 && warps * per_warp > kDefaultSmem) warps >>= 1;
  const int64_t bytes = warps * per_warp;
  if (bytes > kDefaultSmem) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const int threads = static_cast<int>(warps * 32);
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, static_cast<size_t>(bytes));
  if (err != cudaSuccess) return err;
  const int64_t needed = (a.num_points + warps - 1) / warps;
  const int64_t cap = static_cast<int64_t>(sms > 0 ? sms : 1) * (per_sm > 0 ? per_sm : 1);
  const unsigned int blocks = static_cast<unsigned int>(needed < cap ? needed : cap);
  kernel<<<blocks, threads, static_cast<size_t>(bytes), stream>>>(a);
  return cudaGetLastError();
}

// c-slots per lane kept in registers: up to 32 (D <= 1024), 16 with a factor (D <= 512,
// whose F u reduction needs 32 more registers); larger D use shared memory.
template <typename T, bool kFull>
cudaError_t launch_warp_sized(const GmmArgs& a, cudaStream_t stream) {
  const int64_t per_lane = (a.dim + 31) / 32;
  if (per_lane <= 1) return launch_warp<T, kFull, 1>(a, stream);
  if (per_lane <= 2) return launch_warp<T, kFull, 2>(a, stream);
  if (per_lane <= 4) return launch_warp<T, kFull, 4>(a, stream);
  if (per_lane <= 8) return launch_warp<T, kFull, 8>(a, stream);
  if (per_lane <= 16) return launch_warp<T, kFull, 16>(a, stream);
  if constexpr (!kFull) {
    if (per_lane <= 32) return launch_warp<T, kFull, 32>(a, stream);
  }
  return launch_warp_shared<T, kFull>(a, stream);
}

template <typename T>
cudaError_t gmm_typed(const GmmArgs& a, cudaStream_t stream) {
  if (a.num_points == 0) return cudaSuccess;
  if (a.num_components < 1 || a.dim < 1 || (a.var_cols != 1 && a.var_cols != a.dim)) {
    return cudaErrorInvalidValue;
  }
  switch (a.dim) {
    case 1:
      return launch_small<T, 1>(a, stream);
    case 2:
      return launch_small<T, 2>(a, stream);
    case 3:
      return launch_small<T, 3>(a, stream);
    case 4:
      return launch_small<T, 4>(a, stream);
    default:
      break;
  }
  static_assert(kSmallMaxD == 4, "launch_small covers D = 1..kSmallMaxD");
  if (a.factor != nullptr) return launch_warp_sized<T, true>(a, stream);
  return launch_warp_sized<T, false>(a, stream);
}

}  // namespace

cudaError_t launch_gmm_score(const GmmArgs& args, cudaStream_t stream) {
  switch (args.dtype) {
    case StorageType::kFloat32:
      return gmm_typed<float>(args, stream);
    case StorageType::kFloat64:
      return gmm_typed<double>(args, stream);
    case StorageType::kFloat16:
      return gmm_typed<f16_t>(args, stream);
    case StorageType::kBFloat16:
      return gmm_typed<bf16_t>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace scorefast
