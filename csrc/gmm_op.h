// Argument checks and GmmArgs construction shared by the CPU and CUDA implementations of
// scorefast::gmm_score (only c10/ATen core headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "op_checks.h"
#include "scorefast/gmm.h"

namespace scorefast {

struct GmmCall {
  at::Tensor x, means, var, inv_var, factor, log_const, sigma2;
  GmmArgs args;
};

inline void check_param(const at::Tensor& t, const at::Tensor& x, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x (", x.device(), "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == acc_dtype_of(x), name, " must be ", acc_dtype_of(x), " for x of dtype ",
              x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

inline GmmCall prepare_gmm_call(const at::Tensor& x, const at::Tensor& means, const at::Tensor& var,
                                const at::Tensor& inv_var, const std::optional<at::Tensor>& factor,
                                const at::Tensor& log_const, const std::optional<at::Tensor>& sigma2) {
  TORCH_CHECK(x.dim() == 2, "x must have shape [N, D], got ", x.sizes());
  storage_type_of(x, "x");
  TORCH_CHECK(means.dim() == 2, "means must have shape [K, D], got ", means.sizes());
  const int64_t N = x.size(0), D = x.size(1), K = means.size(0);
  TORCH_CHECK(K >= 1, "the mixture is empty: means must have at least one component (K >= 1)");
  TORCH_CHECK(D >= 1, "x must have at least one coordinate (D >= 1), got ", x.sizes());
  check_param(means, x, "means", {K, D});
  TORCH_CHECK(var.dim() == 2 && (var.size(1) == 1 || var.size(1) == D), "var must have shape [K, 1] or [K, D] = [", K,
              ", ", D, "], got ", var.sizes());
  check_param(var, x, "var", {K, var.size(1)});
  check_param(inv_var, x, "inv_var", var.sizes());
  if (factor.has_value()) check_param(*factor, x, "factor", {K, D, D});
  check_param(log_const, x, "log_const", {K});
  if (sigma2.has_value()) check_param(*sigma2, x, "sigma2", {N});

  GmmCall c;
  c.x = x.contiguous();
  c.means = means.contiguous();
  c.var = var.contiguous();
  c.inv_var = inv_var.contiguous();
  if (factor.has_value()) c.factor = factor->contiguous();
  c.log_const = log_const.contiguous();
  if (sigma2.has_value()) c.sigma2 = sigma2->contiguous();
  GmmArgs& a = c.args;
  a.num_points = N;
  a.dim = D;
  a.num_components = K;
  a.dtype = storage_type_of(x, "x");
  a.x = c.x.data_ptr();
  a.means = c.means.data_ptr();
  a.var = c.var.data_ptr();
  a.inv_var = c.inv_var.data_ptr();
  a.var_cols = c.var.size(1);
  a.factor = c.factor.defined() ? c.factor.data_ptr() : nullptr;
  a.log_const = c.log_const.data_ptr();
  a.sigma2 = c.sigma2.defined() ? c.sigma2.data_ptr() : nullptr;
  return c;
}

}  // namespace scorefast
