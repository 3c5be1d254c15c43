// gmm_score: score and log-density of a Gaussian mixture in one pass over components.
//
// Component k has precision F_k diag(h_k) F_k^T (F_k = I without a factor) with
//   h_kd = 1 / (var_kd + sigma_n^2)     (per-particle sigma: computed in the kernel)
//   h_kd = inv_var_kd                   (no or scalar sigma: folded in on the host)
// and log w_k N(x) = log_const_k - (1/2) sum_d h_kd t_d^2 [- (1/2) sum_d log(var_kd + sigma_n^2)],
// t = F_k^T (x - mu_k). The score sum_k r_k (-F_k (h_k . t)) and log p = logsumexp_k
// come from an online log-sum-exp over k, so nothing of size N x K x D is formed.
// Torch-free: shared by the CPU kernels and the CUDA launchers.
#pragma once

#include <cstdint>

#include "scorefast/storage.h"

namespace scorefast {

// Full covariances with one sigma go through explicit precisions P_k = F_k diag(h_k) F_k^T
// (one D x D product per component instead of the factor form's two): in the CPU's float
// register tiles from D = kGmmPrecisionTileMinDim while the K precisions stay in a core's L2
// cache (K D^2 <= kGmmTilePrecisionFloats, 2 MB; below that D, the small-D tiles), and in
// blocked GEMMs, which reuse each precision across many points, from D = kGmmPrecisionMinDim
// in float64 or where the tiles' precisions do not fit.
constexpr int64_t kGmmPrecisionMinDim = 32;
constexpr int64_t kGmmPrecisionTileMinDim = 9;
constexpr int64_t kGmmTilePrecisionFloats = int64_t{1} << 19;

struct GmmArgs {
  int64_t num_points = 0;                     // N
  int64_t dim = 0;                            // D
  int64_t num_components = 0;                 // K
  StorageType dtype = StorageType::kFloat32;  // of x, score and log_prob

  const void* x = nullptr;  // [N, D] contiguous, dtype
  // Parameters in the math type (double for float64 x, float otherwise), contiguous.
  const void* means = nullptr;      // [K, D]
  const void* var = nullptr;        // [K, var_cols]: variances (before sigma^2)
  const void* inv_var = nullptr;    // [K, var_cols]: 1 / (var + sigma^2) when sigma is not per-particle
  int64_t var_cols = 1;             // 1 (isotropic) or D (diagonal, or eigenvalues of a full covariance)
  const void* factor = nullptr;     // [K, D, D] row-major F_k, or null
  const void* log_const = nullptr;  // [K]: log w_k - D/2 log(2 pi) + log|det F_k| [- 1/2 sum log(var + sigma^2)]
  const void* sigma2 = nullptr;     // [N] per-particle sigma^2, or null

  void* score = nullptr;     // [N, D] contiguous, dtype
  void* log_prob = nullptr;  // [N] contiguous, dtype
};

// Whether the CPU's float register tiles of explicit precisions take a mixture (the rule above):
// full covariances, D >= kGmmPrecisionTileMinDim, K D^2 <= kGmmTilePrecisionFloats.
inline bool gmm_precision_tiles_fit(const GmmArgs& a) {
  return a.factor != nullptr && a.dim >= kGmmPrecisionTileMinDim &&
         a.num_components * a.dim * a.dim <= kGmmTilePrecisionFloats;
}

}  // namespace scorefast
