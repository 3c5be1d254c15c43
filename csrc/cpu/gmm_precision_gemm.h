// gmm_score for full covariances of larger D with one sigma for every point, in float64, and in
// float math where the K precisions outgrow a core's cache (below that, PrecisionBlockEval's
// register tiles in isa_gmm_precision_block.inc): one GEMM per
// component with the precision P_k = F_k diag(h_k) F_k^T. U = (X - mu_k) P_k gives both the
// quadratic form d^T P_k d = sum_j d_j U_j and the component's score -U, where the factor
// form needs two products (t = F^T d, then F (h . t)) of the same size. The differences are
// formed explicitly (no expansion of |x - mu|^2), so far points lose nothing. Points go in
// blocks whose (X - mu_k), U and running sums stay in cache; the online log-sum-exp over
// components is the kernels' (gmm_point in isa_chain_kernels.inc).
#pragma once

#include <ATen/core/Tensor.h>

#include "scorefast/gmm.h"

namespace scorefast {

// Whether gmm_score_cpu takes this path: full covariance, one sigma, D large enough that the
// products dominate, and float64 or more precision entries than the register tiles take.
bool gmm_use_precision_gemm(const GmmArgs& a);

// score [N, D] and log_prob [N] (x's dtype) for x [N, D]; parameters as the op's, in the
// math dtype.
void gmm_precision_gemm(const at::Tensor& x, const at::Tensor& means, const at::Tensor& inv_var,
                        const at::Tensor& factor, const at::Tensor& log_const, at::Tensor& score, at::Tensor& log_prob);

}  // namespace scorefast
