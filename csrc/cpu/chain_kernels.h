// gmm_chain on the CPU for particles [begin, end): each particle runs all T steps with its
// state in a local buffer. Included inside an ISA namespace by isa_*.cpp after
// noise_kernels.h (fill_normals) and gmm_kernels.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "scorefast/chain.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace chain_detail {

using scorefast::ChainArgs;
using scorefast::GmmArgs;
using scorefast::Storage;

// Score and log-density of one point (online log-sum-exp over components); precisions
// h = 1 / (var + s2) and their log-determinant are formed per component.
template <typename Acc>
static Acc gmm_point(const GmmArgs& g, const Acc* x, Acc s2, Acc* score, Acc* t, Acc* u) {
  const int64_t D = g.dim, K = g.num_components, VC = g.var_cols;
  const Acc* means = static_cast<const Acc*>(g.means);
  const Acc* var = static_cast<const Acc*>(g.var);
  const Acc* factor = static_cast<const Acc*>(g.factor);
  const Acc* log_const = static_cast<const Acc*>(g.log_const);
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  Acc m = neg_inf, S = 0;
  for (int64_t d = 0; d < D; ++d) score[d] = 0;
  for (int64_t k = 0; k < K; ++k) {
    const Acc* mu = means + k * D;
    if (factor) {
      const Acc* F = factor + k * D * D;
      for (int64_t j = 0; j < D; ++j) t[j] = 0;
      for (int64_t i = 0; i < D; ++i) {
        const Acc di = x[i] - mu[i];
        for (int64_t j = 0; j < D; ++j) t[j] += di * F[i * D + j];
      }
    } else {
      for (int64_t d = 0; d < D; ++d) t[d] = x[d] - mu[d];
    }
    Acc quad = 0, log_det = 0;
    for (int64_t d = 0; d < D; ++d) {
      const Acc v = var[k * VC + (VC == 1 ? 0 : d)] + s2;
      u[d] = t[d] / v;
      quad += u[d] * t[d];
      if (VC != 1 || d == 0) log_det += std::log(v);
    }
    if (VC == 1) log_det *= static_cast<Acc>(D);
    const Acc l = log_const[k] - Acc(0.5) * (quad + log_det);
    if (l == neg_inf) continue;
    if (l > m) {
      const Acc r = std::exp(m - l);
      S *= r;
      for (int64_t d = 0; d < D; ++d) score[d] *= r;
      m = l;
    }
    const Acc e = std::exp(l - m);
    S += e;
    if (factor) {
      const Acc* F = factor + k * D * D;
      for (int64_t i = 0; i < D; ++i) {
        Acc s = 0;
        for (int64_t j = 0; j < D; ++j) s += F[i * D + j] * u[j];
        score[i] -= e * s;
      }
    } else {
      for (int64_t d = 0; d < D; ++d) score[d] -= e * u[d];
    }
  }
  for (int64_t d = 0; d < D; ++d) score[d] /= S;
  return m + std::log(S);
}

// v rounded to the state's storage type (the state lives in storage between steps, as in
// T separate langevin_step calls).
template <typename T, typename Acc>
static inline Acc round_to_storage(Acc v) {
  T tmp;
  Storage<T>::store(&tmp, v);
  return Storage<T>::load(&tmp);
}

template <typename T>
static void chain_impl(const ChainArgs& c, int64_t begin, int64_t end) {
  using Acc = typename Storage<T>::acc;
  const GmmArgs& g = c.mixture;
  const int64_t D = g.dim, N = g.num_points;
  const Acc* a_t = static_cast<const Acc*>(c.step_size);
  const Acc* s2_t = static_cast<const Acc*>(c.sigma2);
  T* x = static_cast<T*>(c.x);
  T* traj = static_cast<T*>(c.trajectory);
  const int64_t Q = (D + 3) / 4;
  std::vector<Acc> buf(7 * D);
  Acc *xs = buf.data(), *sx = xs + D, *y = sx + D, *sy = y + D, *t = sy + D, *u = t + D, *zz = u + D;
  std::vector<float> z(D);
  for (int64_t p = begin; p < end; ++p) {
    for (int64_t d = 0; d < D; ++d) xs[d] = Storage<T>::load(x + p * D + d);
    Acc lpx = 0;
    if (c.mala) lpx = gmm_point<Acc>(g, xs, Acc(0), sx, t, u);
    int64_t accepted = 0;
    for (int64_t s = 0; s < c.num_steps; ++s) {
      const uint32_t step = c.step_offset + static_cast<uint32_t>(s);
      const Acc a = a_t[s];
      const Acc b = std::sqrt(Acc(2) * a);
      fill_normals(z.data(), D, c.seed, step, c.particle_offset, p * D, D);
      if (!c.mala) {
        gmm_point<Acc>(g, xs, s2_t[s], sx, t, u);
        // rounded as langevin_step: one step per storage round trip
        for (int64_t d = 0; d < D; ++d) {
          const Acc v = xs[d] + a * sx[d] + b * static_cast<Acc>(z[d]);
          xs[d] = round_to_storage<T>(v);
        }
      } else {
        for (int64_t d = 0; d < D; ++d) {
          zz[d] = static_cast<Acc>(z[d]);
          y[d] = round_to_storage<T>(xs[d] + a * sx[d] + b * zz[d]);
        }
        const Acc lpy = gmm_point<Acc>(g, y, Acc(0), sy, t, u);
        double back = 0, fwd = 0;
        for (int64_t d = 0; d < D; ++d) {
          const double r = static_cast<double>(xs[d]) - y[d] - static_cast<double>(a) * sy[d];
          back += r * r;
          fwd += static_cast<double>(zz[d]) * zz[d];
        }
        const double log_alpha = static_cast<double>(lpy) - lpx - back / (4.0 * a) + 0.5 * fwd;
        const scorefast::PhiloxWords w = scorefast::noise_words(c.seed, c.particle_offset + static_cast<uint64_t>(p),
                                                                step, static_cast<uint32_t>(Q));
        const double log_u = std::log(static_cast<double>(scorefast::uint32_to_uniform(w.w0)));
        if (log_u < log_alpha) {  // NaN: false, a rejection
          for (int64_t d = 0; d < D; ++d) {
            xs[d] = y[d];
            sx[d] = sy[d];
          }
          lpx = lpy;
          ++accepted;
        }
      }
      if (c.trajectory_every > 0 && (s + 1) % c.trajectory_every == 0) {
        T* row = traj + ((s + 1) / c.trajectory_every - 1) * N * D + p * D;
        for (int64_t d = 0; d < D; ++d) Storage<T>::store(row + d, xs[d]);
      }
    }
    for (int64_t d = 0; d < D; ++d) Storage<T>::store(x + p * D + d, xs[d]);
    if (c.accepted) c.accepted[p] = accepted;
  }
}

}  // namespace chain_detail

static void gmm_chain_range(const scorefast::ChainArgs& c, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  switch (c.mixture.dtype) {
    case StorageType::kFloat32: return chain_detail::chain_impl<float>(c, begin, end);
    case StorageType::kFloat64: return chain_detail::chain_impl<double>(c, begin, end);
    case StorageType::kFloat16: return chain_detail::chain_impl<scorefast::f16_t>(c, begin, end);
    case StorageType::kBFloat16: return chain_detail::chain_impl<scorefast::bf16_t>(c, begin, end);
  }
}
