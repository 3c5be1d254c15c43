// Full-covariance mixtures, float math, D > 4: the score and log-density of a block of P
// points, one component at a time, as two small matrix products vectorised over
// coordinates (t_p = F_k^T (x_p - mu_k), then F_k (h . t_p) through F_k^T stored row by row),
// P points sharing every load of a factor row. F_k is the eigenvector matrix of the
// component's covariance (scorefast/gmm.h), so a noise level sigma changes only the
// precisions h = 1 / (var + sigma^2): set_sigma2 re-forms them, the factors stay. (The
// evaluation itself needs only precision = F diag(h) F^T, so set_folded takes any factor.)
// Online log-sum-exp over components, as gmm_blocked. Used by gmm_score (no per-point
// sigma) and the chain kernel. Included inside an ISA namespace by gmm_kernels.h.
#pragma once

namespace gmm_detail {

using FullVec = std::conditional_t<kChainLanes == 16, v16f, v8f>;

class FullBlockEval {
 public:
  static constexpr int kBlock = 4;  // points per block: 4 x (D / W) accumulators in registers at D <= 64

  explicit FullBlockEval(const GmmArgs& a)
      : g_(a), D_(a.dim), K_(a.num_components), VC_(a.var_cols),
        Dp_((a.dim + kChainLanes - 1) / kChainLanes * kChainLanes), means_(static_cast<const float*>(a.means)) {
    const float* F = static_cast<const float*>(a.factor);
    // rows of F and of F^T, each padded with zeros to whole vectors; 64-byte aligned by hand
    mem_.assign(static_cast<size_t>(2 * K_ * D_ * Dp_ + K_ * Dp_ + 4 * kBlock * Dp_) + 16, 0.0f);
    float* base = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(mem_.data()) + 63) & ~uintptr_t{63});
    rows_ = base;
    cols_ = rows_ + K_ * D_ * Dp_;
    h_ = cols_ + K_ * D_ * Dp_;
    t_ = h_ + K_ * Dp_;
    u_ = t_ + kBlock * Dp_;
    acc_ = u_ + kBlock * Dp_;
    for (int64_t k = 0; k < K_; ++k)
      for (int64_t i = 0; i < D_; ++i)
        for (int64_t j = 0; j < D_; ++j) {
          const float f = F[(k * D_ + i) * D_ + j];
          rows_[(k * D_ + i) * Dp_ + j] = f;
          cols_[(k * D_ + j) * Dp_ + i] = f;
        }
    cst_.resize(static_cast<size_t>(K_));
  }

  // The mixture noised by sigma^2 (the precisions and log-constants re-formed when it changes).
  void set_sigma2(float s2) {
    if (s2 == s2_now_) return;
    noised_h_.resize(static_cast<size_t>(K_ * VC_));
    noised_c_.resize(static_cast<size_t>(K_));
    noised_precisions(g_, s2, noised_h_.data(), noised_c_.data());
    set_folded(noised_h_.data(), noised_c_.data());
    s2_now_ = s2;
  }

  // The precisions (K x VC) and log-constants (K) as given (gmm_score with no or one sigma:
  // folded in), the precisions spread over the padded rows.
  void set_folded(const float* inv_var, const float* log_const) {
    for (int64_t k = 0; k < K_; ++k) {
      for (int64_t j = 0; j < D_; ++j) h_[k * Dp_ + j] = inv_var[k * VC_ + (VC_ == 1 ? 0 : j)];
      cst_[k] = log_const[k];
    }
    s2_now_ = std::numeric_limits<float>::quiet_NaN();
  }

  // score[p * D ...] and log_prob[p] of the kBlock points xs[p * D ...]: all are computed
  // (np, the number of real ones, is not needed), each point's arithmetic its own,
  // whatever the others are.
  void eval(const float* __restrict xs, int64_t /*np*/, float* __restrict score, float* __restrict log_prob) {
    switch (Dp_ / kChainLanes) {
      case 1: return eval_c<1>(xs, score, log_prob);
      case 2: return eval_c<2>(xs, score, log_prob);
      case 3: return eval_c<3>(xs, score, log_prob);
      case 4: return eval_c<4>(xs, score, log_prob);
      default: return eval_c<0>(xs, score, log_prob);
    }
  }

 private:
  // C: vectors per row (0: Dp_ / W at run time, the accumulators then live in memory).
  template <int C>
  void eval_c(const float* __restrict xs, float* __restrict score, float* __restrict log_prob) {
    using V = FullVec;
    constexpr int W = kChainLanes, P = kBlock;
    const int64_t D = D_, Dp = Dp_, nc = C > 0 ? C : Dp / W;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    float m[P], S[P];
    for (int p = 0; p < P; ++p) {
      m[p] = neg_inf;
      S[p] = 0;
    }
    std::fill(acc_, acc_ + P * Dp, 0.0f);
    for (int64_t k = 0; k < K_; ++k) {
      const float* __restrict mu = means_ + k * D;
      const float* __restrict rows = rows_ + k * D * Dp;
      const float* __restrict cols = cols_ + k * D * Dp;
      const float* __restrict hk = h_ + k * Dp;
      // t_p = sum_i (x_p[i] - mu[i]) F[i, :]
      matmul_rows<C>(rows, D, nc, [&](int p, int64_t i) { return xs[p * D + i] - mu[i]; }, t_, false);
      float l[P], e[P];
      for (int p = 0; p < P; ++p) {
        V q = splat_as<V>(0.0f);
        for (int64_t c = 0; c < nc; ++c) {
          V tv, hv;
          std::memcpy(&tv, t_ + p * Dp + c * W, sizeof(V));
          std::memcpy(&hv, hk + c * W, sizeof(V));
          const V uv = hv * tv;
          q += uv * tv;
          std::memcpy(u_ + p * Dp + c * W, &uv, sizeof(V));
        }
        float quad = 0;
        for (int w = 0; w < W; ++w) quad += q[w];
        l[p] = cst_[k] - 0.5f * quad;
      }
      // Online log-sum-exp for the P points at once, both exps in one vector: lanes 0..P-1
      // the rescale factors exp(m - m_new), lanes P..2P-1 the weights exp(l - m_new). A NaN l
      // leaves m as it is and gives a NaN weight (the point's result is NaN); l = -inf (weight
      // 0, or infinitely far) contributes nothing.
      static_assert(2 * P <= 8, "the exps of a block fit one 8-lane vector");
      float m_new[P];
      v8f arg = splat(0.0f);
      for (int p = 0; p < P; ++p) {
        m_new[p] = l[p] > m[p] ? l[p] : m[p];
        arg[p] = m_new[p] == m[p] ? 0.0f : m[p] - m_new[p];
        arg[P + p] = l[p] == neg_inf ? neg_inf : l[p] - m_new[p];
      }
      const v8f ex = vexp(arg);
      for (int p = 0; p < P; ++p) {
        if (m_new[p] != m[p]) {  // new running max: rescale what is accumulated
          const float r = ex[p];
          S[p] *= r;
          float* __restrict ap = acc_ + p * Dp;
          for (int64_t d = 0; d < Dp; ++d) ap[d] *= r;
          m[p] = m_new[p];
        }
        e[p] = ex[P + p];
        S[p] += e[p];
      }
      // acc_p -= e_p sum_j u_p[j] F^T[j, :]  (= e_p F_k (h . t_p))
      matmul_rows<C>(cols, D, nc, [&](int p, int64_t j) { return e[p] * u_[p * Dp + j]; }, acc_, true);
    }
    for (int p = 0; p < P; ++p) {
      const float inv_S = 1.0f / S[p];
      for (int64_t d = 0; d < D; ++d) score[p * D + d] = acc_[p * Dp + d] * inv_S;
      log_prob[p] = m[p] + std::log(S[p]);
    }
  }

  // out[p, :] (+ or -)= sum_i coef(p, i) mat[i, :] for the P points, mat [D][Dp] row-major;
  // out is overwritten (subtract = false) or decremented (subtract = true).
  template <int C, typename Coef>
  static void matmul_rows(const float* __restrict mat, int64_t D, int64_t nc, Coef coef, float* __restrict out,
                          bool subtract) {
    using V = FullVec;
    constexpr int W = kChainLanes, P = kBlock;
    const int64_t Dp = nc * W;
    if constexpr (C > 0) {
      V r[P][C];
      for (int p = 0; p < P; ++p)
        for (int c = 0; c < C; ++c) {
          if (subtract) std::memcpy(&r[p][c], out + p * Dp + c * W, sizeof(V));
          else r[p][c] = splat_as<V>(0.0f);
        }
      for (int64_t i = 0; i < D; ++i) {
        V f[C];
        std::memcpy(f, mat + i * Dp, sizeof(f));
        for (int p = 0; p < P; ++p) {
          const V s = splat_as<V>(coef(p, i));
          for (int c = 0; c < C; ++c) r[p][c] = subtract ? r[p][c] - s * f[c] : r[p][c] + s * f[c];
        }
      }
      for (int p = 0; p < P; ++p) std::memcpy(out + p * Dp, r[p], sizeof(r[p]));
    } else {
      if (!subtract) std::fill(out, out + P * Dp, 0.0f);
      for (int64_t i = 0; i < D; ++i) {
        const float* __restrict row = mat + i * Dp;
        for (int p = 0; p < P; ++p) {
          const float s = coef(p, i);
          float* __restrict o = out + p * Dp;
          for (int64_t d = 0; d < Dp; ++d) o[d] = subtract ? o[d] - s * row[d] : o[d] + s * row[d];
        }
      }
    }
  }

  const GmmArgs& g_;
  int64_t D_, K_, VC_, Dp_;
  const float* means_;
  std::vector<float> mem_, cst_, noised_h_, noised_c_;
  float *rows_ = nullptr, *cols_ = nullptr, *h_ = nullptr, *t_ = nullptr, *u_ = nullptr, *acc_ = nullptr;
  float s2_now_ = std::numeric_limits<float>::quiet_NaN();  // no precisions yet
};

}  // namespace gmm_detail
