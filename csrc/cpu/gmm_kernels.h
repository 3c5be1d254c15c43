// gmm_score on the CPU for points [begin, end): one point at a time, components streamed
// with an online log-sum-exp (see scorefast/gmm.h). Included inside an ISA namespace by
// isa_*.cpp, so the inner loops over D vectorise for the ISA.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "scorefast/gmm.h"
#include "scorefast/storage.h"

namespace gmm_detail {

using scorefast::GmmArgs;
using scorefast::Storage;

template <typename T, bool kFull, bool kPerPointSigma>
static void gmm_range_impl(const GmmArgs& a, int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  const int64_t D = a.dim, K = a.num_components, VC = a.var_cols;
  const T* x = static_cast<const T*>(a.x);
  const Acc* means = static_cast<const Acc*>(a.means);
  const Acc* var = static_cast<const Acc*>(a.var);
  const Acc* inv_var = static_cast<const Acc*>(a.inv_var);
  const Acc* factor = static_cast<const Acc*>(a.factor);
  const Acc* log_const = static_cast<const Acc*>(a.log_const);
  const Acc* sigma2 = static_cast<const Acc*>(a.sigma2);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();

  std::vector<Acc> buf(4 * D + VC);
  Acc* xa = buf.data();  // the point
  Acc* t = xa + D;       // F^T (x - mu), or x - mu
  Acc* u = t + D;        // h . t
  Acc* acc = u + D;      // sum_k e_k * score_k
  Acc* h = acc + D;      // this component's precisions (per-point sigma)

  for (int64_t n = begin; n < end; ++n) {
    for (int64_t d = 0; d < D; ++d) xa[d] = Storage<T>::load(x + n * D + d);
    for (int64_t d = 0; d < D; ++d) acc[d] = 0;
    const Acc s2 = kPerPointSigma ? sigma2[n] : Acc(0);
    Acc m = neg_inf, S = 0;
    for (int64_t k = 0; k < K; ++k) {
      const Acc* mu = means + k * D;
      const Acc* hk;
      Acc log_det = 0;
      if (kPerPointSigma) {
        for (int64_t j = 0; j < VC; ++j) {
          const Acc v = var[k * VC + j] + s2;
          h[j] = Acc(1) / v;
          log_det += std::log(v);
        }
        if (VC == 1) log_det *= static_cast<Acc>(D);
        hk = h;
      } else {
        hk = inv_var + k * VC;
      }
      if (kFull) {
        const Acc* F = factor + k * D * D;
        for (int64_t j = 0; j < D; ++j) t[j] = 0;
        for (int64_t i = 0; i < D; ++i) {
          const Acc di = xa[i] - mu[i];
          const Acc* row = F + i * D;
          for (int64_t j = 0; j < D; ++j) t[j] += di * row[j];
        }
      } else {
        for (int64_t d = 0; d < D; ++d) t[d] = xa[d] - mu[d];
      }
      Acc quad = 0;
      if (VC == 1) {
        Acc sq = 0;
        for (int64_t d = 0; d < D; ++d) sq += t[d] * t[d];
        quad = sq * hk[0];
      } else {
        for (int64_t d = 0; d < D; ++d) quad += hk[d] * t[d] * t[d];
      }
      const Acc l = log_const[k] - Acc(0.5) * (quad + log_det);
      if (l == neg_inf) continue;  // weight 0, or infinitely far: contributes nothing
      if (l > m) {                 // new running max: rescale what is accumulated
        const Acc r = std::exp(m - l);
        S *= r;
        for (int64_t d = 0; d < D; ++d) acc[d] *= r;
        m = l;
      }
      const Acc e = std::exp(l - m);  // NaN l gives NaN e: the point's result is NaN
      S += e;
      for (int64_t d = 0; d < D; ++d) u[d] = (VC == 1 ? hk[0] : hk[d]) * t[d];
      if (kFull) {
        const Acc* F = factor + k * D * D;
        for (int64_t i = 0; i < D; ++i) {
          const Acc* row = F + i * D;
          Acc s = 0;
          for (int64_t j = 0; j < D; ++j) s += row[j] * u[j];
          acc[i] -= e * s;
        }
      } else {
        for (int64_t d = 0; d < D; ++d) acc[d] -= e * u[d];
      }
    }
    const Acc inv_S = Acc(1) / S;
    for (int64_t d = 0; d < D; ++d) Storage<T>::store(score + n * D + d, acc[d] * inv_S);
    Storage<T>::store(log_prob + n, m + std::log(S));
  }
}

template <typename T>
static void gmm_range_typed(const GmmArgs& a, int64_t begin, int64_t end) {
  const bool full = a.factor != nullptr, per_point = a.sigma2 != nullptr;
  if (full && per_point) return gmm_range_impl<T, true, true>(a, begin, end);
  if (full) return gmm_range_impl<T, true, false>(a, begin, end);
  if (per_point) return gmm_range_impl<T, false, true>(a, begin, end);
  return gmm_range_impl<T, false, false>(a, begin, end);
}

}  // namespace gmm_detail

static void gmm_score_range(const scorefast::GmmArgs& a, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  switch (a.dtype) {
    case StorageType::kFloat32:
      return gmm_detail::gmm_range_typed<float>(a, begin, end);
    case StorageType::kFloat64:
      return gmm_detail::gmm_range_typed<double>(a, begin, end);
    case StorageType::kFloat16:
      return gmm_detail::gmm_range_typed<scorefast::f16_t>(a, begin, end);
    case StorageType::kBFloat16:
      return gmm_detail::gmm_range_typed<scorefast::bf16_t>(a, begin, end);
  }
}
