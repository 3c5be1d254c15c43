// gmm_chain on the CPU for particles [begin, end): each particle runs all T steps with its
// state in a local buffer. Included inside an ISA namespace by isa_*.cpp after
// noise_kernels.h (fill_normals) and gmm_kernels.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <type_traits>
#include <vector>

#include "scorefast/chain.h"
#include "scorefast/philox.h"
#include "scorefast/storage.h"

namespace chain_detail {

using scorefast::ChainArgs;
using scorefast::GmmArgs;
using scorefast::round_to_storage;
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


// ---- D <= 4, float32: kChainLanes (8 or 16) particles per vector (gmm_kernels.h's vector
// types), per-step precisions tabulated once per range ------------------------------------

using gmm_detail::noised_precisions;
using gmm_detail::small_eval;
using gmm_detail::splat_as;
using gmm_detail::vexp;
using gmm_detail::vexp_nonpos;
using gmm_detail::vlog;
using ChainVec = std::conditional_t<kChainLanes == 16, gmm_detail::v16f, gmm_detail::v8f>;


// Particles p0 .. p0 + L G - 1 of the range (L = kChainLanes; the first nb of them real, the
// rest repeat particle p0, computed and dropped) through all T steps.
template <int D, bool kFull, bool kIso, int G>
static inline void chain_block(const ChainArgs& c, const ChainNoise& noise, const float* h, const float* cst,
                               ChainVec* lbuf, int64_t p0, int64_t nb) {
  using V = ChainVec;
  constexpr int L = kChainLanes;
  const GmmArgs& g = c.mixture;
  const int64_t K = g.num_components, VC = g.var_cols, T = c.num_steps, N = g.num_points;
  const float* a_t = static_cast<const float*>(c.step_size);
  float* x = static_cast<float*>(c.x);
  float* traj = static_cast<float*>(c.trajectory);
  const int64_t Q = (D + 3) / 4;
  V xs[G][D], sx[G][D], y[G][D], sy[G][D], lpx[G], lpy[G];
  for (int gi = 0; gi < G; ++gi)
    for (int bl = 0; bl < L; ++bl) {
      const int64_t b = L * gi + bl;
      for (int d = 0; d < D; ++d) xs[gi][d][bl] = x[(p0 + (b < nb ? b : 0)) * D + d];
    }
  if (c.mala) small_eval<V, D, kFull, kIso, G, true>(g, h, cst, xs, sx, lpx, lbuf);
  int64_t accepted[L * G] = {};
  alignas(64) float z[L * G * D];
  for (int64_t s = 0; s < T; ++s) {
    const uint32_t step = c.step_offset + static_cast<uint32_t>(s);
    const float a = a_t[s], b = std::sqrt(2.0f * a);
    // element d of the L particles of group gi at z[(gi * D + d) * L ...]
    normals_planar<D, G>(noise, c.particle_offset + static_cast<uint64_t>(p0), step, z);
    V zv[G][D];
    std::memcpy(zv, z, sizeof(zv));
    const V av = splat_as<V>(a), bv = splat_as<V>(b);
    if (!c.mala) {
      small_eval<V, D, kFull, kIso, G, false>(g, h + s * K * VC, cst + s * K, xs, sx, lpx, lbuf);
      for (int gi = 0; gi < G; ++gi)
        for (int d = 0; d < D; ++d) xs[gi][d] = xs[gi][d] + av * sx[gi][d] + bv * zv[gi][d];
    } else {
      for (int gi = 0; gi < G; ++gi)
        for (int d = 0; d < D; ++d) y[gi][d] = xs[gi][d] + av * sx[gi][d] + bv * zv[gi][d];
      small_eval<V, D, kFull, kIso, G, true>(g, h, cst, y, sy, lpy, lbuf);
      for (int64_t pb = 0; pb < nb; ++pb) {
        const int gi = static_cast<int>(pb / L), bl = static_cast<int>(pb % L);
        double back = 0, fwd = 0;
        for (int d = 0; d < D; ++d) {
          const double r = static_cast<double>(xs[gi][d][bl]) - y[gi][d][bl] - static_cast<double>(a) * sy[gi][d][bl];
          back += r * r;
          fwd += static_cast<double>(zv[gi][d][bl]) * zv[gi][d][bl];
        }
        const double log_alpha = static_cast<double>(lpy[gi][bl]) - lpx[gi][bl] - back / (4.0 * a) + 0.5 * fwd;
        const scorefast::PhiloxWords w = scorefast::noise_words(
            c.seed, c.particle_offset + static_cast<uint64_t>(p0 + pb), step, static_cast<uint32_t>(Q));
        if (std::log(static_cast<double>(scorefast::uint32_to_uniform(w.w0))) < log_alpha) {
          for (int d = 0; d < D; ++d) {
            xs[gi][d][bl] = y[gi][d][bl];
            sx[gi][d][bl] = sy[gi][d][bl];
          }
          lpx[gi][bl] = lpy[gi][bl];
          ++accepted[pb];
        }
      }
    }
    if (c.trajectory_every > 0 && (s + 1) % c.trajectory_every == 0) {
      float* row = traj + ((s + 1) / c.trajectory_every - 1) * N * D;
      for (int64_t pb = 0; pb < nb; ++pb)
        for (int d = 0; d < D; ++d) row[(p0 + pb) * D + d] = xs[pb / L][d][pb % L];
    }
  }
  for (int64_t pb = 0; pb < nb; ++pb) {
    for (int d = 0; d < D; ++d) x[(p0 + pb) * D + d] = xs[pb / L][d][pb % L];
    if (c.accepted) c.accepted[p0 + pb] = accepted[pb];
  }
}

template <int D, bool kFull, bool kIso>
static void chain_small(const ChainArgs& c, int64_t begin, int64_t end) {
  const GmmArgs& g = c.mixture;
  const int64_t K = g.num_components, VC = g.var_cols, T = c.num_steps;
  const float* s2_t = static_cast<const float*>(c.sigma2);
  // the precisions and log-constants of every step
  std::vector<float> h(static_cast<size_t>(T) * K * VC), cst(static_cast<size_t>(T) * K);
  for (int64_t s = 0; s < T; ++s)
    noised_precisions(g, s2_t[s], h.data() + s * K * VC, cst.data() + s * K);
  constexpr int L = kChainLanes, G = 4;  // 4 vectors at a time: their latencies overlap
  // per-component l and u of the G vectors (floats, 64-byte aligned by hand: the allocator
  // need not honour the vector type's alignment)
  std::vector<float> lmem(static_cast<size_t>(K) * G * (D + 1) * L + 16);
  ChainVec* lbuf = reinterpret_cast<ChainVec*>((reinterpret_cast<uintptr_t>(lmem.data()) + 63) & ~uintptr_t{63});
  const ChainNoise noise(c.seed);
  int64_t p0 = begin;
  for (; end - p0 >= L * G; p0 += L * G) chain_block<D, kFull, kIso, G>(c, noise, h.data(), cst.data(), lbuf, p0, L * G);
  for (; p0 < end; p0 += L)
    chain_block<D, kFull, kIso, 1>(c, noise, h.data(), cst.data(), lbuf, p0, end - p0 < L ? end - p0 : L);
}

// ---- D > 4, float32: blocks of particles through an evaluator of the mixture:
// gmm_kernels.h's two-pass evaluator (isotropic or diagonal) or gmm_full_block.h's
// (full covariances); either re-forms its precisions only when sigma^2 changes --------------

// The two-pass evaluator in the interface chain_blocks expects (as FullBlockEval's).
template <bool kIso>
class TwoPassEval {
 public:
  static constexpr int kBlock = gmm_detail::kTwoPassBlock;

  explicit TwoPassEval(const GmmArgs& g)
      : g_(g), tb_(g, kIso), h_(static_cast<size_t>(g.num_components * g.var_cols)),
        cst_(static_cast<size_t>(g.num_components)), work_(static_cast<size_t>(2 * kBlock * tb_.Kp)) {}

  void set_sigma2(float s2) {
    if (s2 == s2_now_) return;
    s2_now_ = s2;
    noised_precisions(g_, s2, h_.data(), cst_.data());
    tb_.set_precisions(static_cast<const float*>(g_.var), h_.data(), cst_.data());
  }

  void eval(const float* xs, int64_t np, float* score, float* log_prob) {
    gmm_detail::two_pass_block<false, kIso>(tb_, xs, nullptr, np, score, log_prob, work_.data());
  }

 private:
  const GmmArgs& g_;
  gmm_detail::TwoPassTables tb_;
  std::vector<float> h_, cst_, work_;
  float s2_now_ = std::numeric_limits<float>::quiet_NaN();  // no tables yet
};

template <class Eval>
static void chain_blocks(const ChainArgs& c, int64_t begin, int64_t end) {
  constexpr int P = Eval::kBlock;
  const GmmArgs& g = c.mixture;
  const int64_t D = g.dim, T = c.num_steps, N = g.num_points;
  const float* a_t = static_cast<const float*>(c.step_size);
  const float* s2_t = static_cast<const float*>(c.sigma2);
  float* x = static_cast<float*>(c.x);
  float* traj = static_cast<float*>(c.trajectory);
  const int64_t Q = (D + 3) / 4;
  Eval ev(g);
  std::vector<float> buf(5 * P * D);
  float *xs = buf.data(), *sx = xs + P * D, *y = sx + P * D, *sy = y + P * D, *z = sy + P * D;
  float lpx[P], lpy[P];
  for (int64_t p0 = begin; p0 < end; p0 += P) {
    const int64_t np = end - p0 < P ? end - p0 : P;
    for (int64_t p = 0; p < P; ++p)  // pad with a real particle; never updated, results dropped
      for (int64_t d = 0; d < D; ++d) xs[p * D + d] = x[(p0 + (p < np ? p : 0)) * D + d];
    std::fill(z, z + P * D, 0.0f);
    if (c.mala) {
      ev.set_sigma2(s2_t[0]);
      ev.eval(xs, np, sx, lpx);
    }
    int64_t accepted[P] = {};
    for (int64_t s = 0; s < T; ++s) {
      const uint32_t step = c.step_offset + static_cast<uint32_t>(s);
      const float a = a_t[s], b = std::sqrt(2.0f * a);
      fill_normals(z, D, c.seed, step, c.particle_offset, p0 * D, np * D);
      ev.set_sigma2(s2_t[s]);
      if (!c.mala) {
        ev.eval(xs, np, sx, lpx);
        for (int64_t i = 0; i < np * D; ++i) xs[i] = xs[i] + a * sx[i] + b * z[i];
      } else {
        for (int64_t i = 0; i < P * D; ++i) y[i] = xs[i] + a * sx[i] + b * z[i];
        ev.eval(y, np, sy, lpy);
        for (int64_t p = 0; p < np; ++p) {
          double back = 0, fwd = 0;
          for (int64_t d = 0; d < D; ++d) {
            const int64_t i = p * D + d;
            const double r = static_cast<double>(xs[i]) - y[i] - static_cast<double>(a) * sy[i];
            back += r * r;
            fwd += static_cast<double>(z[i]) * z[i];
          }
          const double log_alpha = static_cast<double>(lpy[p]) - lpx[p] - back / (4.0 * a) + 0.5 * fwd;
          const scorefast::PhiloxWords w = scorefast::noise_words(
              c.seed, c.particle_offset + static_cast<uint64_t>(p0 + p), step, static_cast<uint32_t>(Q));
          if (std::log(static_cast<double>(scorefast::uint32_to_uniform(w.w0))) < log_alpha) {
            std::copy(y + p * D, y + (p + 1) * D, xs + p * D);
            std::copy(sy + p * D, sy + (p + 1) * D, sx + p * D);
            lpx[p] = lpy[p];
            ++accepted[p];
          }
        }
      }
      if (c.trajectory_every > 0 && (s + 1) % c.trajectory_every == 0)
        std::copy(xs, xs + np * D, traj + ((s + 1) / c.trajectory_every - 1) * N * D + p0 * D);
    }
    std::copy(xs, xs + np * D, x + p0 * D);
    if (c.accepted)
      for (int64_t p = 0; p < np; ++p) c.accepted[p0 + p] = accepted[p];
  }
}

template <bool kFull, bool kIso>
static bool chain_small_dispatch(const ChainArgs& c, int64_t begin, int64_t end) {
  switch (c.mixture.dim) {
    case 1: chain_small<1, kFull, kIso>(c, begin, end); return true;
    case 2: chain_small<2, kFull, kIso>(c, begin, end); return true;
    case 3: chain_small<3, kFull, kIso>(c, begin, end); return true;
    case 4: chain_small<4, kFull, kIso>(c, begin, end); return true;
    default: return false;
  }
}

}  // namespace chain_detail

static void gmm_chain_range(const scorefast::ChainArgs& c, int64_t begin, int64_t end) {
  using scorefast::StorageType;
  if (c.mixture.dtype == StorageType::kFloat32 && c.mixture.dim <= 4) {
    const bool full = c.mixture.factor != nullptr, iso = c.mixture.var_cols == 1;
    if (full ? (iso ? chain_detail::chain_small_dispatch<true, true>(c, begin, end)
                    : chain_detail::chain_small_dispatch<true, false>(c, begin, end))
             : (iso ? chain_detail::chain_small_dispatch<false, true>(c, begin, end)
                    : chain_detail::chain_small_dispatch<false, false>(c, begin, end)))
      return;
  }
  if (c.mixture.dtype == StorageType::kFloat32) {
    if (c.mixture.factor != nullptr) return chain_detail::chain_blocks<gmm_detail::FullBlockEval>(c, begin, end);
    return c.mixture.var_cols == 1 ? chain_detail::chain_blocks<chain_detail::TwoPassEval<true>>(c, begin, end)
                                   : chain_detail::chain_blocks<chain_detail::TwoPassEval<false>>(c, begin, end);
  }
  switch (c.mixture.dtype) {
    case StorageType::kFloat32: return chain_detail::chain_impl<float>(c, begin, end);
    case StorageType::kFloat64: return chain_detail::chain_impl<double>(c, begin, end);
    case StorageType::kFloat16: return chain_detail::chain_impl<scorefast::f16_t>(c, begin, end);
    case StorageType::kBFloat16: return chain_detail::chain_impl<scorefast::bf16_t>(c, begin, end);
  }
}
