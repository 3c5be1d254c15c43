// gmm_score by one precision GEMM per component (see gmm_precision_gemm.h).
#include "gmm_precision_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace scorefast {
namespace {

// Below this D the direct kernels (one pass over x per component, no product per block) are
// faster.
constexpr int64_t kMinDim = kGmmPrecisionMinDim;
// Points per block: large enough for efficient GEMMs, small enough that the block's three
// [block, D] buffers stay in cache: about 2^16 elements each, and at least 256 points.
int64_t block_points(int64_t D) { return std::max<int64_t>(256, (int64_t{1} << 16) / D); }

// exp(v) for v <= 0 (and NaN), 0 below -87: far components would otherwise take libm's
// slow underflow path for weights < 2^-125 that cannot move a sum holding a 1.
template <typename Acc>
Acc exp_nonpos(Acc v) {
  return v < Acc(-87) ? Acc(0) : std::exp(v);
}

template <typename Acc>
void run_block(const at::Tensor& xb, const at::Tensor& means, const at::Tensor& precision, const at::Tensor& log_const,
               at::Tensor& score, at::Tensor& log_prob) {
  const int64_t nb = xb.size(0), D = xb.size(1), K = means.size(0);
  at::Tensor diff = at::empty({nb, D}, xb.options());
  at::Tensor U = at::empty({nb, D}, xb.options());
  const Acc* x = xb.data_ptr<Acc>();
  const Acc* mu_all = means.data_ptr<Acc>();
  const Acc* c = log_const.data_ptr<Acc>();
  Acc* d = diff.data_ptr<Acc>();
  const Acc* u = U.data_ptr<Acc>();
  Acc* acc = score.data_ptr<Acc>();   // sum_k e_k (-U_k), scaled to the running max
  Acc* m = log_prob.data_ptr<Acc>();  // the running max, then log p
  std::vector<Acc> S(static_cast<size_t>(nb), Acc(0));
  const Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  std::fill(acc, acc + nb * D, Acc(0));
  std::fill(m, m + nb, neg_inf);
  for (int64_t k = 0; k < K; ++k) {
    const Acc* mu = mu_all + k * D;
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t j = 0; j < D; ++j) d[b * D + j] = x[b * D + j] - mu[j];
    at::mm_out(U, diff, precision[k]);  // P_k is symmetric
    for (int64_t b = 0; b < nb; ++b) {
      const Acc* db = d + b * D;
      const Acc* ub = u + b * D;
      Acc* ab = acc + b * D;
      Acc part[4] = {0, 0, 0, 0};
      int64_t j = 0;
      for (; j + 4 <= D; j += 4)
        for (int q = 0; q < 4; ++q) part[q] += db[j + q] * ub[j + q];
      for (; j < D; ++j) part[0] += db[j] * ub[j];
      const Acc quad = (part[0] + part[1]) + (part[2] + part[3]);
      const Acc l = c[k] - Acc(0.5) * quad;
      if (l == neg_inf) continue;  // weight 0: contributes nothing
      if (l > m[b]) {              // new running max: rescale what is accumulated
        const Acc r = exp_nonpos(m[b] - l);
        S[b] *= r;
        for (int64_t i = 0; i < D; ++i) ab[i] *= r;
        m[b] = l;
      }
      const Acc e = exp_nonpos(l - m[b]);  // NaN l: NaN e, the row's result is NaN
      S[b] += e;
      for (int64_t i = 0; i < D; ++i) ab[i] -= e * ub[i];
    }
  }
  for (int64_t b = 0; b < nb; ++b) {
    const Acc inv_S = Acc(1) / S[b];
    for (int64_t i = 0; i < D; ++i) acc[b * D + i] *= inv_S;
    m[b] += std::log(S[b]);
  }
}

}  // namespace

bool gmm_use_precision_gemm(const GmmArgs& a) {
  if (a.factor == nullptr || a.sigma2 != nullptr || a.dim < kMinDim) return false;
  // Float math takes the register tiles (isa_gmm_precision_block.inc) while all K precisions
  // stay in a core's L2 cache; beyond that each block of 8 points would stream them from
  // memory, and the GEMMs here reuse each one across a block of 256 points or more.
  return a.dtype == StorageType::kFloat64 || !gmm_precision_tiles_fit(a);
}

void gmm_precision_gemm(const at::Tensor& x, const at::Tensor& means, const at::Tensor& inv_var,
                        const at::Tensor& factor, const at::Tensor& log_const, at::Tensor& score,
                        at::Tensor& log_prob) {
  const int64_t N = x.size(0), D = x.size(1), K = means.size(0);
  const at::ScalarType acc = means.scalar_type();
  // P_k = F_k diag(h_k) F_k^T: h scales the columns of F
  const at::Tensor precision =
      at::matmul(factor * inv_var.view({K, 1, inv_var.size(1)}), factor.transpose(1, 2)).contiguous();
  const at::Tensor xa = x.to(acc).contiguous();
  const bool same = x.scalar_type() == acc;
  at::Tensor score_acc = same ? score : at::empty({N, D}, means.options());
  at::Tensor logp_acc = same ? log_prob : at::empty({N}, means.options());
  const int64_t kBlock = block_points(D);
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t n0 = blk * kBlock, n1 = std::min(N, n0 + kBlock);
      at::Tensor s = score_acc.slice(0, n0, n1), lp = logp_acc.slice(0, n0, n1);
      if (acc == at::kDouble)
        run_block<double>(xa.slice(0, n0, n1), means, precision, log_const, s, lp);
      else
        run_block<float>(xa.slice(0, n0, n1), means, precision, log_const, s, lp);
    }
  });
  if (!same) {
    score.copy_(score_acc);
    log_prob.copy_(logp_acc);
  }
}

}  // namespace scorefast
