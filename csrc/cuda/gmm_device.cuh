// Device code of the mixture evaluation shared by gmm_kernels.cu (gmm_score) and
// chain_kernels.cu (gmm_chain): precise exp / log / sqrt in the math type, and the
// one-thread-per-point loop over components for D <= kSmallMaxD, whose parameters the
// block stages in shared memory a tile at a time (every thread reads them as broadcasts).
// The update per component is the online log-sum-exp of scorefast/gmm.h:
//
//   l_k = log_const_k - 1/2 (sum_d h_kd t_d^2 + log_det_k),   t = F_k^T (x - mu_k) or x - mu_k
//   skip l_k == -inf; on l_k > m rescale (S, acc) by exp(m - l_k); e = exp(l_k - m);
//   S += e; acc -= e F_k (h_k . t)
//
// A NaN l_k is not skipped: it makes e, S and the point's results NaN. Torch-free.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace scorefast {
namespace cuda {

__device__ __forceinline__ float sf_exp(float v) { return expf(v); }
__device__ __forceinline__ double sf_exp(double v) { return exp(v); }
__device__ __forceinline__ float sf_log(float v) { return logf(v); }
__device__ __forceinline__ double sf_log(double v) { return log(v); }
__device__ __forceinline__ float sf_sqrt(float v) { return sqrtf(v); }
__device__ __forceinline__ double sf_sqrt(double v) { return sqrt(v); }

template <typename Acc>
__device__ __forceinline__ Acc neg_inf() {
  return static_cast<Acc>(-INFINITY);
}

constexpr int kSmallMaxD = 4;
constexpr int kTileComponents = 64;

// A tile of components for D = kD: per component mu[kD], var or inv_var[kD] (the first
// var_cols used), factor[kD * kD] (full only), log_const.
template <typename Acc, int kD, bool kFull>
struct SmallTile {
  static constexpr int kStride = 2 * kD + (kFull ? kD * kD : 0) + 1;
  static constexpr int kOffV = kD, kOffF = 2 * kD, kOffC = kStride - 1;
  static constexpr int kSize = kTileComponents * kStride;  // elements of the shared array

  // Components [k0, k0 + tk) into tile, by every thread of the block; the caller
  // synchronises before (the previous tile is no longer read) and after.
  static __device__ __forceinline__ void stage(Acc* tile, int64_t k0, int tk, const Acc* means, const Acc* vv,
                                               int64_t VC, const Acc* factor, const Acc* log_const) {
    for (int e = threadIdx.x; e < tk * kStride; e += blockDim.x) {
      const int kk = e / kStride, f = e - kk * kStride;
      const int64_t k = k0 + kk;
      Acc v;
      if (f < kOffV) {
        v = means[k * kD + f];
      } else if (f < kOffF) {
        const int j = f - kOffV;
        v = j < VC ? vv[k * VC + j] : Acc(0);
      } else if (f < kOffC) {
        v = factor[k * (kD * kD) + (f - kOffF)];
      } else {
        v = log_const[k];
      }
      tile[e] = v;
    }
  }

  // Adds the tile's first tk components to the running (m, S, acc) of the point xr.
  // per_point: the tile holds variances and h = 1 / (var + s2) is formed here; otherwise
  // it holds h itself (and log_const includes the log-determinant).
  static __device__ __forceinline__ void accumulate(const Acc* tile, int tk, bool per_point, bool iso, Acc s2,
                                                    const Acc (&xr)[kD], Acc& m, Acc& S, Acc (&acc)[kD]) {
    const Acc ninf = neg_inf<Acc>();
    for (int kk = 0; kk < tk; ++kk) {
      const Acc* c = tile + kk * kStride;
      Acc h[kD];
      Acc log_det = 0;
      if (per_point) {
        if (iso) {
          const Acc v = c[kOffV] + s2;
          h[0] = Acc(1) / v;
          log_det = sf_log(v) * static_cast<Acc>(kD);
        } else {
#pragma unroll
          for (int j = 0; j < kD; ++j) {
            const Acc v = c[kOffV + j] + s2;
            h[j] = Acc(1) / v;
            log_det += sf_log(v);
          }
        }
      } else {
#pragma unroll
        for (int j = 0; j < kD; ++j) h[j] = c[kOffV + j];
      }
      if (iso) {
#pragma unroll
        for (int j = 1; j < kD; ++j) h[j] = h[0];
      }

      Acc t[kD];
      if (kFull) {
#pragma unroll
        for (int j = 0; j < kD; ++j) t[j] = 0;
#pragma unroll
        for (int i = 0; i < kD; ++i) {
          const Acc di = xr[i] - c[i];
#pragma unroll
          for (int j = 0; j < kD; ++j) t[j] += di * c[kOffF + i * kD + j];
        }
      } else {
#pragma unroll
        for (int d = 0; d < kD; ++d) t[d] = xr[d] - c[d];
      }
      Acc quad = 0;
      if (iso) {
        Acc sq = 0;
#pragma unroll
        for (int d = 0; d < kD; ++d) sq += t[d] * t[d];
        quad = sq * h[0];
      } else {
#pragma unroll
        for (int d = 0; d < kD; ++d) quad += h[d] * t[d] * t[d];
      }
      const Acc l = c[kOffC] - Acc(0.5) * (quad + log_det);
      if (l == ninf) continue;  // weight 0, or infinitely far: contributes nothing
      if (l > m) {              // new running max: rescale what is accumulated
        const Acc r = sf_exp(m - l);
        S *= r;
#pragma unroll
        for (int d = 0; d < kD; ++d) acc[d] *= r;
        m = l;
      }
      const Acc e = sf_exp(l - m);  // NaN l gives NaN e: the point's result is NaN
      S += e;
      Acc u[kD];
#pragma unroll
      for (int d = 0; d < kD; ++d) u[d] = h[d] * t[d];
      if (kFull) {
#pragma unroll
        for (int i = 0; i < kD; ++i) {
          Acc s = 0;
#pragma unroll
          for (int j = 0; j < kD; ++j) s += c[kOffF + i * kD + j] * u[j];
          acc[i] -= e * s;
        }
      } else {
#pragma unroll
        for (int d = 0; d < kD; ++d) acc[d] -= e * u[d];
      }
    }
  }
};

}  // namespace cuda
}  // namespace scorefast
