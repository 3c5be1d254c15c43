// gmm_score on the CPU for points [begin, end). Included inside an ISA namespace by
// isa_*.cpp, so the loops below vectorise for that ISA. Two layouts:
//  - small D (<= 4, float math): 8 points side by side, each component's log-joint and
//    score evaluated for the 8 at once (the loops over the 8 lanes vectorise), with a
//    polynomial exp; two passes over components (running max, then sum of exp(l - max))
//    so each (point, component) costs one exp;
//  - any D: a block of points against one component at a time, the online log-sum-exp
//    state of the block kept in a small buffer, so a component's parameters (a D x D
//    factor) are read once per block, not once per point.
// Nothing of size N x K x D is formed. See scorefast/gmm.h for the math.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "scorefast/gmm.h"
#include "scorefast/storage.h"

namespace gmm_detail {

using scorefast::GmmArgs;
using scorefast::Storage;

// Portable 8-lane float vectors (GCC/Clang vector extensions): the same source is SSE2 in
// the generic build and AVX2 in the AVX2 build, without relying on the auto-vectoriser.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

typedef float v16f __attribute__((vector_size(64)));

static inline v8f splat(float v) { return v8f{v, v, v, v, v, v, v, v}; }
// v in every lane of a vector of type V (v8f or v16f).
template <typename V>
static inline V splat_as(float v) {
  return V{} + v;
}
static inline v8i splat_i(int32_t v) { return v8i{v, v, v, v, v, v, v, v}; }

// The core of exp (Cephes expf polynomial, ~1 ulp) for xc clamped to the finite range:
// returns p = exp(xc) / 2^n with n = round(xc / ln 2) in ni, by the 1.5 * 2^23 trick (the
// low mantissa bits of xc / ln 2 + 1.5 * 2^23 are n).
template <typename V, typename I>
static inline V exp_core(V xc, I& ni) {
  const V magic = splat_as<V>(12582912.0f);  // 1.5 * 2^23
  const V t = xc * splat_as<V>(1.44269504088896341f) + magic;
  ni = (I)t - (I)magic;
  const V n = t - magic;
  V r = xc - n * splat_as<V>(0.693359375f);
  r = r - n * splat_as<V>(-2.12194440e-4f);
  V p = splat_as<V>(1.9875691500e-4f);
  p = p * r + splat_as<V>(1.3981999507e-3f);
  p = p * r + splat_as<V>(8.3334519073e-3f);
  p = p * r + splat_as<V>(4.1665795894e-2f);
  p = p * r + splat_as<V>(1.6666665459e-1f);
  p = p * r + splat_as<V>(5.0000001201e-1f);
  return p * r * r + r + splat_as<V>(1.0f);
}

// exp, ~1 ulp. exp(-inf) = 0 (below -104 the result underflows), NaN stays NaN.
static inline v8f vexp(v8f x) {
  const v8i nan = x != x;
  v8f xc = x < splat(-104.0f) ? splat(-104.0f) : x;
  xc = xc > splat(88.5f) ? splat(88.5f) : xc;
  v8i ni;
  const v8f p = exp_core(xc, ni);
  ni = nan ? splat_i(0) : ni;
  // 2^n in two halves so n down to -151 (subnormal results) stays representable
  const v8i n1 = ni >> 1, n2 = ni - n1;
  const v8f s1 = (v8f)((n1 + 127) << 23), s2 = (v8f)((n2 + 127) << 23);
  const v8f out = p * s1 * s2;
  return nan ? x : out;
}

// log for positive normal floats (Cephes logf, ~1 ulp); S >= 1 and 1/S here. NaN stays NaN,
// 0 gives -inf.
template <typename V>
static inline V vlog(V x) {
  using I = decltype(x != x);
  const I nan = x != x, zero = x == splat_as<V>(0.0f);
  const I xi = (I)x;
  V e = __builtin_convertvector((xi >> 23) - 126, V);
  V m = (V)((xi & static_cast<int32_t>(0x807FFFFFu)) | 0x3F000000);  // mantissa in [0.5, 1)
  const I small = m < splat_as<V>(0.707106781186547524f);
  e = small ? e - splat_as<V>(1.0f) : e;
  m = (small ? m + m : m) - splat_as<V>(1.0f);
  const V z = m * m;
  V y = splat_as<V>(7.0376836292e-2f);
  y = y * m + splat_as<V>(-1.1514610310e-1f);
  y = y * m + splat_as<V>(1.1676998740e-1f);
  y = y * m + splat_as<V>(-1.2420140846e-1f);
  y = y * m + splat_as<V>(1.4249322787e-1f);
  y = y * m + splat_as<V>(-1.6668057665e-1f);
  y = y * m + splat_as<V>(2.0000714765e-1f);
  y = y * m + splat_as<V>(-2.4999993993e-1f);
  y = y * m + splat_as<V>(3.3333331174e-1f);
  y = y * m * z;
  y = y + e * splat_as<V>(-2.12194440e-4f);
  y = y - splat_as<V>(0.5f) * z;
  const V out = m + y + e * splat_as<V>(0.693359375f);
  return nan ? x : (zero ? splat_as<V>(-std::numeric_limits<float>::infinity()) : out);
}

// exp(x) for x <= 0, as in a log-sum-exp after subtracting the max: vexp's polynomial
// without its overflow and NaN guards (NaN still propagates through the arithmetic).
// Bit-equal to vexp where the result is a normal float; 0 below -87 (results < 2^-125,
// which cannot move a sum that holds a 1).
template <typename V>
static inline V vexp_nonpos(V x) {
  using I = decltype(x != x);  // the integer vector of V's lanes
  const I tiny = x < splat_as<V>(-87.0f);
  I ni;
  const V p = exp_core(tiny ? splat_as<V>(-87.0f) : x, ni);
  const V out = p * (V)((ni + 127) << 23);
  return tiny ? splat_as<V>(0.0f) : out;
}

static inline float exp_scalar(float x) { return vexp(splat(x))[0]; }
static inline double exp_scalar(double x) { return std::exp(x); }

// ---- small D, float math: 8 points per step ----------------------------------------------

// Score (into sc) and log p (into lp, if kLogp) of the mixture for G vectors of 8 points,
// given the precisions h (K x VC) and log-constants c (K) of every component. The G vectors are independent work, interleaved per component so
// their latencies overlap. Two passes over the components: the max of the log-joints, then
// the weights (no rescaling of the running sums).
template <typename V, int D, bool kFull, bool kIso, int G, bool kLogp>
static inline void small_eval(const GmmArgs& g, const float* h, const float* c, const V (&xs)[G][D],
                              V (&sc)[G][D], V (&lp)[G], V* lbuf) {
  const int64_t K = g.num_components, VC = g.var_cols;
  const float* means = static_cast<const float*>(g.means);
  const float* factor = static_cast<const float*>(g.factor);
  const V neg_inf = splat_as<V>(-std::numeric_limits<float>::infinity());
  V m[G];
  for (int gi = 0; gi < G; ++gi) m[gi] = neg_inf;
  for (int64_t k = 0; k < K; ++k) {
    const float* mu = means + k * D;
    for (int gi = 0; gi < G; ++gi) {
      V t[D];
      for (int d = 0; d < D; ++d) t[d] = xs[gi][d] - splat_as<V>(mu[d]);
      if (kFull) {
        const float* F = factor + k * D * D;
        V tt[D];
        for (int j = 0; j < D; ++j) {
          V sum = splat_as<V>(0.0f);
          for (int i = 0; i < D; ++i) sum += splat_as<V>(F[i * D + j]) * t[i];
          tt[j] = sum;
        }
        for (int j = 0; j < D; ++j) t[j] = tt[j];
      }
      V* slot = lbuf + (k * G + gi) * (D + 1);
      V quad = splat_as<V>(0.0f);
      for (int d = 0; d < D; ++d) {
        const V u = splat_as<V>(h[k * VC + (kIso ? 0 : d)]) * t[d];
        slot[1 + d] = u;
        quad += u * t[d];
      }
      const V l = splat_as<V>(c[k]) - splat_as<V>(0.5f) * quad;
      slot[0] = l;
      m[gi] = (l > m[gi]) | (l != l) ? l : m[gi];
    }
  }
  V S[G], acc[G][D];
  for (int gi = 0; gi < G; ++gi) {
    S[gi] = splat_as<V>(0.0f);
    for (int d = 0; d < D; ++d) acc[gi][d] = splat_as<V>(0.0f);
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* F = kFull ? factor + k * D * D : nullptr;
    for (int gi = 0; gi < G; ++gi) {
      const V* slot = lbuf + (k * G + gi) * (D + 1);
      const V e = slot[0] == neg_inf ? splat_as<V>(0.0f) : vexp_nonpos(slot[0] - m[gi]);
      S[gi] += e;
      if (kFull) {
        for (int i = 0; i < D; ++i) {
          V sum = splat_as<V>(0.0f);
          for (int j = 0; j < D; ++j) sum += splat_as<V>(F[i * D + j]) * slot[1 + j];
          acc[gi][i] -= e * sum;
        }
      } else {
        for (int d = 0; d < D; ++d) acc[gi][d] -= e * slot[1 + d];
      }
    }
  }
  for (int gi = 0; gi < G; ++gi) {
    const V inv_S = splat_as<V>(1.0f) / S[gi];
    for (int d = 0; d < D; ++d) sc[gi][d] = acc[gi][d] * inv_S;
    if (kLogp) lp[gi] = m[gi] + vlog(S[gi]);
  }
}

// Fixed sigma: 16 points at a time through small_eval.
template <typename T, int D, bool kFull, bool kIso>
static void gmm_small_fixed(const GmmArgs& a, int64_t begin, int64_t end) {
  constexpr int G = 2;
  const T* x = static_cast<const T*>(a.x);
  const float* inv_var = static_cast<const float*>(a.inv_var);
  const float* log_const = static_cast<const float*>(a.log_const);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  std::vector<float> lmem(static_cast<size_t>(a.num_components) * G * (D + 1) * 8 + 8);
  v8f* lbuf = reinterpret_cast<v8f*>((reinterpret_cast<uintptr_t>(lmem.data()) + 31) & ~uintptr_t{31});
  for (int64_t n0 = begin; n0 < end; n0 += 8 * G) {
    const int64_t nb = end - n0 < 8 * G ? end - n0 : 8 * G;
    v8f xs[G][D], sc[G][D], lp[G];
    for (int64_t b = 0; b < 8 * G; ++b) {
      const int64_t n = n0 + (b < nb ? b : 0);  // pad with a real point; results dropped
      for (int d = 0; d < D; ++d) xs[b / 8][d][b % 8] = Storage<T>::load(x + n * D + d);
    }
    small_eval<v8f, D, kFull, kIso, G, true>(a, inv_var, log_const, xs, sc, lp, lbuf);
    for (int64_t b = 0; b < nb; ++b) {
      for (int d = 0; d < D; ++d) Storage<T>::store(score + (n0 + b) * D + d, sc[b / 8][d][b % 8]);
      Storage<T>::store(log_prob + n0 + b, lp[b / 8][b % 8]);
    }
  }
}

template <typename T, int D, bool kFull, bool kPerPointSigma, bool kIso>
static void gmm_small(const GmmArgs& a, int64_t begin, int64_t end) {
  if constexpr (!kPerPointSigma) {
    return gmm_small_fixed<T, D, kFull, kIso>(a, begin, end);
  }
  // Per-point sigma: 8 points at a time, precisions formed per point.
  const int64_t K = a.num_components, VC = a.var_cols;
  const T* x = static_cast<const T*>(a.x);
  const float* means = static_cast<const float*>(a.means);
  const float* var = static_cast<const float*>(a.var);
  const float* inv_var = static_cast<const float*>(a.inv_var);
  const float* factor = static_cast<const float*>(a.factor);
  const float* log_const = static_cast<const float*>(a.log_const);
  const float* sigma2 = static_cast<const float*>(a.sigma2);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> lbuf(static_cast<size_t>(K) * 8 * (D + 1));  // l and u per component; plain floats

  // Component k's log-joint l and precision-weighted residual u = h . t for the 8 points.
  auto component = [&](int64_t k, const v8f* xs, v8f s2, v8f* u) -> v8f {
    const float* mu = means + k * D;
    v8f t[D];
    for (int d = 0; d < D; ++d) t[d] = xs[d] - splat(mu[d]);
    if (kFull) {
      const float* F = factor + k * D * D;
      v8f tt[D];
      for (int j = 0; j < D; ++j) {
        v8f sum = splat(0.0f);
        for (int i = 0; i < D; ++i) sum += splat(F[i * D + j]) * t[i];
        tt[j] = sum;
      }
      for (int j = 0; j < D; ++j) t[j] = tt[j];
    }
    v8f quad = splat(0.0f), log_det = splat(0.0f);
    for (int d = 0; d < D; ++d) {
      const int64_t j = kIso ? 0 : d;
      v8f h;
      if (kPerPointSigma) {
        const v8f v = splat(var[k * VC + j]) + s2;
        h = splat(1.0f) / v;
        if (!kIso || d == 0)
          for (int b = 0; b < 8; ++b) log_det[b] += std::log(v[b]);
      } else {
        h = splat(inv_var[k * VC + j]);
      }
      u[d] = h * t[d];
      quad += u[d] * t[d];
    }
    if (kIso && kPerPointSigma) log_det = log_det * splat(static_cast<float>(D));
    return splat(log_const[k]) - splat(0.5f) * (quad + log_det);
  };

  for (int64_t n0 = begin; n0 < end; n0 += 8) {
    const int64_t nb = end - n0 < 8 ? end - n0 : 8;
    v8f xs[D], s2 = splat(0.0f);
    for (int b = 0; b < 8; ++b) {
      const int64_t n = n0 + (b < nb ? b : 0);  // pad with a real point; results dropped
      for (int d = 0; d < D; ++d) xs[d][b] = Storage<T>::load(x + n * D + d);
      if (kPerPointSigma) s2[b] = sigma2[n];
    }
    // Pass 1: every component's log-joint and residual (kept for pass 2), the running max
    // (NaN sticks).
    v8f m = splat(neg_inf);
    for (int64_t k = 0; k < K; ++k) {
      v8f u[D];
      const v8f l = component(k, xs, s2, u);
      std::memcpy(&lbuf[k * 8 * (D + 1)], &l, sizeof(l));
      std::memcpy(&lbuf[k * 8 * (D + 1) + 8], u, sizeof(u));
      m = (l > m) | (l != l) ? l : m;
    }
    // Pass 2: S = sum exp(l - m), acc = sum exp(l - m) * score_k.
    v8f S = splat(0.0f), acc[D];
    for (int d = 0; d < D; ++d) acc[d] = splat(0.0f);
    for (int64_t k = 0; k < K; ++k) {
      v8f u[D], l;
      std::memcpy(&l, &lbuf[k * 8 * (D + 1)], sizeof(l));
      std::memcpy(u, &lbuf[k * 8 * (D + 1) + 8], sizeof(u));
      const v8f e = l == splat(neg_inf) ? splat(0.0f) : vexp(l - m);  // weight 0 / infinitely far: nothing
      S += e;
      if (kFull) {
        const float* F = factor + k * D * D;
        for (int i = 0; i < D; ++i) {
          v8f sum = splat(0.0f);
          for (int j = 0; j < D; ++j) sum += splat(F[i * D + j]) * u[j];
          acc[i] -= e * sum;
        }
      } else {
        for (int d = 0; d < D; ++d) acc[d] -= e * u[d];
      }
    }
    const v8f inv_S = splat(1.0f) / S;
    const v8f lp = m + vlog(S);
    for (int d = 0; d < D; ++d) acc[d] *= inv_S;
    for (int b = 0; b < nb; ++b) {
      for (int d = 0; d < D; ++d) Storage<T>::store(score + (n0 + b) * D + d, acc[d][b]);
      Storage<T>::store(log_prob + n0 + b, lp[b]);
    }
  }
}

// Sums with 8 independent partial sums, so they vectorise without reassociation flags.
template <typename Acc>
static inline Acc dot(const Acc* __restrict a, const Acc* __restrict b, int64_t n) {
  Acc part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[i + j] * b[i + j];
  for (; i < n; ++i) part[0] += a[i] * b[i];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// ---- any D: blocks of points, one component at a time ------------------------------------

constexpr int64_t kBlock = 32;

template <typename T, bool kFull, bool kPerPointSigma, bool kIso>
static void gmm_blocked(const GmmArgs& a, int64_t begin, int64_t end) {
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

  std::vector<Acc> buf(static_cast<size_t>(kBlock) * 2 * D + 3 * D + 2 * kBlock);
  Acc* __restrict xs = buf.data();     // [kBlock][D] the block's points
  Acc* __restrict acc = xs + kBlock * D;  // [kBlock][D] sum_k e_k score_k (scaled to m)
  Acc* __restrict t = acc + kBlock * D;   // [D]
  Acc* __restrict u = t + D;              // [D]
  Acc* __restrict h = u + D;              // [D] this point's precisions (per-point sigma)
  Acc* __restrict m = h + D;              // [kBlock] running max
  Acc* __restrict S = m + kBlock;         // [kBlock] running sum

  for (int64_t n0 = begin; n0 < end; n0 += kBlock) {
    const int64_t nb = end - n0 < kBlock ? end - n0 : kBlock;
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t d = 0; d < D; ++d) xs[b * D + d] = Storage<T>::load(x + (n0 + b) * D + d);
      for (int64_t d = 0; d < D; ++d) acc[b * D + d] = 0;
      m[b] = neg_inf;
      S[b] = 0;
    }
    for (int64_t k = 0; k < K; ++k) {
      const Acc* __restrict mu = means + k * D;
      const Acc* __restrict F = kFull ? factor + k * D * D : nullptr;
      for (int64_t b = 0; b < nb; ++b) {
        const Acc* __restrict xb = xs + b * D;
        Acc* __restrict ab = acc + b * D;
        const Acc* __restrict hk = inv_var + k * VC;
        Acc log_det = 0;
        if (kPerPointSigma) {
          const Acc s2 = sigma2[n0 + b];
          for (int64_t j = 0; j < VC; ++j) {
            const Acc v = var[k * VC + j] + s2;
            h[j] = Acc(1) / v;
            log_det += std::log(v);
          }
          if (kIso) log_det *= static_cast<Acc>(D);
          hk = h;
        }
        if (kFull) {
          for (int64_t j = 0; j < D; ++j) t[j] = 0;
          for (int64_t i = 0; i < D; ++i) {
            const Acc di = xb[i] - mu[i];
            const Acc* __restrict row = F + i * D;
            for (int64_t j = 0; j < D; ++j) t[j] += di * row[j];
          }
        } else {
          for (int64_t d = 0; d < D; ++d) t[d] = xb[d] - mu[d];
        }
        Acc quad = 0;
        if (kIso) {
          const Acc h0 = hk[0];
          quad = dot(t, t, D) * h0;
          for (int64_t d = 0; d < D; ++d) u[d] = h0 * t[d];
        } else {
          for (int64_t d = 0; d < D; ++d) u[d] = hk[d] * t[d];
          quad = dot(u, t, D);
        }
        const Acc l = log_const[k] - Acc(0.5) * (quad + log_det);
        if (l == neg_inf) continue;  // weight 0, or infinitely far: contributes nothing
        if (l > m[b]) {              // new running max: rescale what is accumulated
          const Acc r = exp_scalar(m[b] - l);
          S[b] *= r;
          for (int64_t d = 0; d < D; ++d) ab[d] *= r;
          m[b] = l;
        }
        const Acc e = exp_scalar(l - m[b]);  // NaN l gives NaN e: the point's result is NaN
        S[b] += e;
        if (kFull) {
          for (int64_t i = 0; i < D; ++i) {
            ab[i] -= e * dot(F + i * D, u, D);
          }
        } else {
          for (int64_t d = 0; d < D; ++d) ab[d] -= e * u[d];
        }
      }
    }
    for (int64_t b = 0; b < nb; ++b) {
      const Acc inv_S = Acc(1) / S[b];
      for (int64_t d = 0; d < D; ++d) Storage<T>::store(score + (n0 + b) * D + d, acc[b * D + d] * inv_S);
      Storage<T>::store(log_prob + n0 + b, m[b] + std::log(S[b]));
    }
  }
}

// Isotropic (any sigma) and diagonal (fixed sigma) mixtures, float math, larger D: two
// passes over the components for a block of P points, vectorised over components in pass 1
// (the means transposed once, so quad_k for W components accumulates over d with no
// horizontal sums) and over coordinates in pass 2, which turns the l_k into weights
// w_k = e_k h_k and forms score = sum_k w_k mu_k - (sum_k w_k) x (diagonal:
// sum_k e_k (h_k mu_k) - x sum_k e_k h_k), P accumulators in registers. Shared by gmm_score
// and the chain kernel (chain_kernels.h), which re-forms the precisions when sigma changes.

using TwoPassVec = std::conditional_t<kChainLanes == 16, v16f, v8f>;
constexpr int kTwoPassBlock = 4;  // points per block

// The mixture in the evaluator's layout: components padded to whole vectors.
struct TwoPassTables {
  int64_t D = 0, K = 0, Kp = 0;
  bool iso = true;
  std::vector<float> mem;
  float* cst = nullptr;   // [Kp] log-constants, -inf for the padding
  float* vpad = nullptr;  // [Kp] isotropic variances (per-point sigma)
  float* ipad = nullptr;  // [Kp] isotropic precisions
  float* muT = nullptr;   // [D][Kp] the means, transposed
  float* hT = nullptr;    // [D][Kp] diagonal precisions, transposed
  float* hm = nullptr;    // [K][D] h_k mu_k (diagonal)
  float* hrow = nullptr;  // [K][D] diagonal precisions
  const float* means = nullptr;  // [K][D] the means, as given

  TwoPassTables(const GmmArgs& a, bool isotropic)
      : D(a.dim), K(a.num_components), iso(isotropic), means(static_cast<const float*>(a.means)) {
    constexpr int W = kChainLanes;
    Kp = (K + W - 1) / W * W;
    mem.assign(3 * Kp + (iso ? 1 : 2) * D * Kp + (iso ? 0 : 2 * K * D), 0.0f);
    cst = mem.data();
    vpad = cst + Kp;
    ipad = vpad + Kp;
    muT = ipad + Kp;
    hT = muT + D * Kp;
    hm = iso ? hT : hT + D * Kp;
    hrow = iso ? hm : hm + K * D;
    for (int64_t k = 0; k < Kp; ++k)
      for (int64_t d = 0; d < D; ++d) muT[d * Kp + k] = k < K ? means[k * D + d] : 0.0f;
    for (int64_t k = K; k < Kp; ++k) vpad[k] = ipad[k] = 1.0f;
  }

  // Precisions h (K x VC) and log-constants c (K) of the mixture at hand.
  void set_precisions(const float* var, const float* h, const float* c) {
    for (int64_t k = 0; k < Kp; ++k) cst[k] = k < K ? c[k] : -std::numeric_limits<float>::infinity();
    if (iso) {
      for (int64_t k = 0; k < K; ++k) {
        vpad[k] = var[k];
        ipad[k] = h[k];
      }
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t d = 0; d < D; ++d) {
          hT[d * Kp + k] = hrow[k * D + d] = h[k * D + d];
          hm[k * D + d] = h[k * D + d] * means[k * D + d];
        }
    }
  }
};

// Score (score[p * D ...]) and log p of the P points xs[p * D ...] (np of them real); s2:
// per-point sigma^2 (isotropic, kPerPointSigma). work: 2 P Kp floats.
template <bool kPerPointSigma, bool kIso>
static void two_pass_block(const TwoPassTables& tb, const float* __restrict xs, const float* s2, int64_t np,
                           float* __restrict score, float* __restrict log_prob, float* __restrict work) {
  using V = TwoPassVec;
  constexpr int W = kChainLanes, P = kTwoPassBlock;
  const int64_t D = tb.D, K = tb.K, Kp = tb.Kp;
  const int64_t DW = D - D % W;
  const float* __restrict cst = tb.cst;
  const float* __restrict vpad = tb.vpad;
  const float* __restrict ipad = tb.ipad;
  const float* __restrict muT = tb.muT;
  const float* __restrict hT = tb.hT;
  const float* __restrict hm = tb.hm;
  const float* __restrict hrow = tb.hrow;
  const float* __restrict means = tb.means;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float* __restrict l = work;        // [P][Kp] log-joints, then e_k
  float* __restrict h = l + P * Kp;  // [P][Kp] isotropic precisions, then weights
  auto loadv = [](const float* q) { V v; std::memcpy(&v, q, sizeof(v)); return v; };
    // Pass 1: quad for P points x W components, accumulated over d.
    for (int64_t kb = 0; kb < Kp; kb += W) {
      V q[P];
      for (int p = 0; p < P; ++p) q[p] = V{};
      for (int64_t d = 0; d < D; ++d) {
        const V mu = loadv(muT + d * Kp + kb);
        if (kIso) {
          for (int p = 0; p < P; ++p) {
            const V diff = xs[p * D + d] - mu;
            q[p] += diff * diff;
          }
        } else {
          const V hv = loadv(hT + d * Kp + kb);
          for (int p = 0; p < P; ++p) {
            const V diff = xs[p * D + d] - mu;
            q[p] += hv * diff * diff;
          }
        }
      }
      const V c = loadv(cst + kb);
      for (int p = 0; p < P; ++p) {
        V hk = splat_as<V>(1.0f), log_det = V{};
        if (kIso) {
          if (kPerPointSigma) {
            const V v = loadv(vpad + kb) + s2[p];
            hk = splat_as<V>(1.0f) / v;
            log_det = static_cast<float>(D) * vlog(v);
          } else {
            hk = loadv(ipad + kb);
          }
          q[p] *= hk;
        }
        const V lv = c - 0.5f * (q[p] + log_det);
        std::memcpy(h + p * Kp + kb, &hk, sizeof(hk));
        std::memcpy(l + p * Kp + kb, &lv, sizeof(lv));
      }
    }
    // Pass 2: per point the max (NaN sticks), e_k = exp(l_k - m), and the weights, W lanes
    // at a time (the padding holds l = -inf: e = 0, w = 0).
    float m[P], S[P], Wsum[P];
    const V ninf = splat_as<V>(neg_inf);
    auto lanes_sum = [](V v) {
      float t[W];
      std::memcpy(t, &v, sizeof(v));
      for (int w = W / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) t[i] += t[i + w];
      return t[0];
    };
    for (int p = 0; p < P; ++p) {
      float* lp = l + p * Kp;
      float* hp = h + p * Kp;
      V mv = ninf;
      for (int64_t kb = 0; kb < Kp; kb += W) {
        const V lk = loadv(lp + kb);
        mv = (lk > mv) | (lk != lk) ? lk : mv;
      }
      float mp = neg_inf;
      for (int w = 0; w < W; ++w) mp = (mv[w] > mp || mv[w] != mv[w]) ? mv[w] : mp;
      m[p] = mp;
      V sv = V{}, wv = V{};
      for (int64_t kb = 0; kb < Kp; kb += W) {
        const V lk = loadv(lp + kb);
        const V e = lk == ninf ? V{} : vexp_nonpos(lk - mp);
        std::memcpy(lp + kb, &e, sizeof(e));  // l now holds e_k
        sv += e;
        if (kIso) {
          const V w = e * loadv(hp + kb);  // w_k = e_k h_k
          std::memcpy(hp + kb, &w, sizeof(w));
          wv += w;
        }
      }
      S[p] = lanes_sum(sv);
      Wsum[p] = kIso ? lanes_sum(wv) : 0.0f;
    }
    // score = (sum_k w_k mu_k - W x) / S (isotropic); (sum_k e_k hm_k - x . sum_k e_k h_k) / S.
    const float* wts = kIso ? h : l;
    float inv_S[P];
    for (int p = 0; p < P; ++p) inv_S[p] = 1.0f / S[p];
    for (int64_t d = 0; d < DW; d += W) {
      V acc[P], bsum[P];
      for (int p = 0; p < P; ++p) acc[p] = bsum[p] = V{};
      for (int64_t k = 0; k < K; ++k) {
        const V mu = loadv((kIso ? means : hm) + k * D + d);
        if (kIso) {
          for (int p = 0; p < P; ++p) acc[p] += wts[p * Kp + k] * mu;
        } else {
          const V hv = loadv(hrow + k * D + d);
          for (int p = 0; p < P; ++p) {
            acc[p] += wts[p * Kp + k] * mu;
            bsum[p] += wts[p * Kp + k] * hv;
          }
        }
      }
      for (int p = 0; p < np; ++p) {
        const V xv = loadv(xs + p * D + d);
        const V sd = (kIso ? acc[p] - Wsum[p] * xv : acc[p] - bsum[p] * xv) * inv_S[p];
        for (int w = 0; w < W; ++w) score[p * D + d + w] = sd[w];
      }
    }
    for (int64_t d = DW; d < D; ++d)
      for (int p = 0; p < np; ++p) {
        float acc = 0.0f, bsum = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const float w = wts[p * Kp + k];
          acc += w * (kIso ? means : hm)[k * D + d];
          if (!kIso) bsum += w * hT[d * Kp + k];
        }
        const float sd = kIso ? acc - Wsum[p] * xs[p * D + d] : acc - bsum * xs[p * D + d];
        score[p * D + d] = sd * inv_S[p];
      }
    for (int p = 0; p < np; ++p) log_prob[p] = m[p] + std::log(S[p]);
}

// Points [begin, end) of x in blocks of P through eval(xs, s2, np, score, log_prob): float
// copies of the block's points (a short block padded with a real point, whose results are
// dropped), their sigma^2 (0 without a per-point sigma), and where the block's results go.
template <typename T, int P, typename Eval>
static void gmm_in_blocks(const GmmArgs& a, int64_t begin, int64_t end, Eval eval) {
  const int64_t D = a.dim;
  const T* x = static_cast<const T*>(a.x);
  const float* sigma2 = static_cast<const float*>(a.sigma2);
  T* score = static_cast<T*>(a.score);
  T* log_prob = static_cast<T*>(a.log_prob);
  std::vector<float> buf(2 * P * D);
  float* xs = buf.data();  // [P][D] the block's points
  float* sc = xs + P * D;  // [P][D] their scores
  float lp[P], s2[P];
  for (int64_t n0 = begin; n0 < end; n0 += P) {
    const int64_t np = end - n0 < P ? end - n0 : P;
    for (int p = 0; p < P; ++p) {
      const int64_t n = n0 + (p < np ? p : 0);
      for (int64_t d = 0; d < D; ++d) xs[p * D + d] = Storage<T>::load(x + n * D + d);
      s2[p] = sigma2 != nullptr ? sigma2[n] : 0.0f;
    }
    eval(xs, s2, np, sc, lp);
    for (int64_t p = 0; p < np; ++p) {
      for (int64_t d = 0; d < D; ++d) Storage<T>::store(score + (n0 + p) * D + d, sc[p * D + d]);
      Storage<T>::store(log_prob + n0 + p, lp[p]);
    }
  }
}

template <typename T, bool kPerPointSigma, bool kIso>
static void gmm_two_pass(const GmmArgs& a, int64_t begin, int64_t end) {
  TwoPassTables tb(a, kIso);
  tb.set_precisions(static_cast<const float*>(a.var), static_cast<const float*>(a.inv_var),
                    static_cast<const float*>(a.log_const));
  std::vector<float> work(2 * kTwoPassBlock * tb.Kp);
  gmm_in_blocks<T, kTwoPassBlock>(a, begin, end, [&](const float* xs, const float* s2, int64_t np, float* sc, float* lp) {
    two_pass_block<kPerPointSigma, kIso>(tb, xs, s2, np, sc, lp, work.data());
  });
}

// The float32 precisions h = 1 / (var + s2) (K x VC) and log-constants
// c = log_const - (1/2) log det(var + s2) (K) of the mixture noised by s2, for the vector
// chain paths and FullBlockEval (isotropic: VC = 1, the determinant over all D coordinates).
static inline void noised_precisions(const GmmArgs& g, float s2, float* h, float* c) {
  const int64_t K = g.num_components, VC = g.var_cols;
  const float* var = static_cast<const float*>(g.var);
  const float* log_const = static_cast<const float*>(g.log_const);
  for (int64_t k = 0; k < K; ++k) {
    float log_det = 0;
    for (int64_t j = 0; j < VC; ++j) {
      const float v = var[k * VC + j] + s2;
      h[k * VC + j] = 1.0f / v;
      log_det += std::log(v);
    }
    if (VC == 1) log_det *= static_cast<float>(g.dim);
    c[k] = log_const[k] - 0.5f * log_det;
  }
}

}  // namespace gmm_detail

#include "gmm_full_block.h"

namespace gmm_detail {

// Full covariances, no per-point sigma, float math, D > 4: blocks of points through
// FullBlockEval.
template <typename T>
static void gmm_full_blocks(const GmmArgs& a, int64_t begin, int64_t end) {
  FullBlockEval ev(a);
  ev.set_folded(static_cast<const float*>(a.inv_var), static_cast<const float*>(a.log_const));
  gmm_in_blocks<T, FullBlockEval::kBlock>(a, begin, end,
                                          [&](const float* xs, const float*, int64_t np, float* sc, float* lp) {
                                            ev.eval(xs, np, sc, lp);
                                          });
}

template <typename T, bool kFull, bool kPerPointSigma, bool kIso>
static void gmm_dispatch_dim(const GmmArgs& a, int64_t begin, int64_t end) {
  if (std::is_same<typename Storage<T>::acc, double>::value) return gmm_blocked<T, kFull, kPerPointSigma, kIso>(a, begin, end);
  if (!kFull && (kIso || !kPerPointSigma) && a.dim > 4) return gmm_two_pass<T, kPerPointSigma, kIso>(a, begin, end);
  if (kFull && !kPerPointSigma && a.dim > 4) return gmm_full_blocks<T>(a, begin, end);
  switch (a.dim) {
    case 1: return gmm_small<T, 1, kFull, kPerPointSigma, kIso>(a, begin, end);
    case 2: return gmm_small<T, 2, kFull, kPerPointSigma, kIso>(a, begin, end);
    case 3: return gmm_small<T, 3, kFull, kPerPointSigma, kIso>(a, begin, end);
    case 4: return gmm_small<T, 4, kFull, kPerPointSigma, kIso>(a, begin, end);
    default: return gmm_blocked<T, kFull, kPerPointSigma, kIso>(a, begin, end);
  }
}

template <typename T>
static void gmm_range_typed(const GmmArgs& a, int64_t begin, int64_t end) {
  const bool full = a.factor != nullptr, per_point = a.sigma2 != nullptr, iso = a.var_cols == 1;
#define SF_GMM_CASE(F, P, I) \
  if (full == F && per_point == P && iso == I) return gmm_dispatch_dim<T, F, P, I>(a, begin, end);
  SF_GMM_CASE(false, false, true)
  SF_GMM_CASE(false, false, false)
  SF_GMM_CASE(false, true, true)
  SF_GMM_CASE(false, true, false)
  SF_GMM_CASE(true, false, true)
  SF_GMM_CASE(true, false, false)
  SF_GMM_CASE(true, true, true)
  SF_GMM_CASE(true, true, false)
#undef SF_GMM_CASE
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
