// Argument checks and DsmVpArgs construction shared by the CPU and CUDA implementations of the
// scorefast::dsm_vp_* ops (only c10/ATen core headers); the messages of scorefast/ops/dsm_vp.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "op_checks.h"
#include "scorefast/dsm_vp.h"

namespace scorefast {

struct DsmVpCall {
  at::Tensor input, data, coef_a, coef_c, weight;
  DsmVpArgs args;
};

inline void check_dsm_vp_per_sample(const at::Tensor& t, const char* name, const at::Tensor& input,
                                    const char* input_name, at::ScalarType dtype) {
  const int64_t B = input.size(0);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B, name, " must have shape [B] = [", B, "], got ", t.sizes());
  TORCH_CHECK(t.device() == input.device(), name, " must be on the device of ", input_name, " (", input.device(),
              "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must be ", dtype, " for ", input_name, " of dtype ",
              input.scalar_type(), ", got ", t.scalar_type());
}

// The input, its shape and dtype, and the counter; the caller adds the coefficients.
inline DsmVpCall prepare_dsm_vp_input(const at::Tensor& input, const char* input_name, int64_t seed, int64_t step,
                                      int64_t particle_offset) {
  TORCH_CHECK(input.dim() >= 1, input_name, " must have at least one dimension (dim 0 = samples)");
  const StorageType dtype = storage_type_of(input, input_name);
  check_noise_counter(step, particle_offset);
  DsmVpCall c;
  c.input = input.contiguous();
  DsmVpArgs& a = c.args;
  a.batch = input.size(0);
  a.sample_size = a.batch == 0 ? 0 : input.numel() / a.batch;
  check_noise_extent(particle_offset, a.batch, a.sample_size);
  a.dtype = dtype;
  a.input = c.input.data_ptr();
  a.seed = static_cast<uint64_t>(seed);
  a.step = static_cast<uint32_t>(step);
  a.particle_offset = static_cast<uint64_t>(particle_offset);
  return c;
}

inline DsmVpCall prepare_dsm_vp_perturb(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& sigma,
                                        int64_t seed, int64_t step, int64_t particle_offset) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least one dimension (dim 0 = samples)");
  storage_type_of(x, "x");
  check_dsm_vp_per_sample(alpha, "alpha", x, "x", acc_dtype_of(x));
  check_dsm_vp_per_sample(sigma, "sigma", x, "x", acc_dtype_of(x));
  DsmVpCall c = prepare_dsm_vp_input(x, "x", seed, step, particle_offset);
  c.coef_a = alpha.contiguous();
  c.coef_c = sigma.contiguous();
  c.args.coef_a = c.coef_a.data_ptr();
  c.args.coef_c = c.coef_c.data_ptr();
  return c;
}

inline DsmVpCall prepare_dsm_vp_loss(const at::Tensor& pred, const std::optional<at::Tensor>& x, const at::Tensor& a,
                                     const at::Tensor& c, const at::Tensor& weight, int64_t seed, int64_t step,
                                     int64_t particle_offset) {
  TORCH_CHECK(pred.dim() >= 1, "pred must have at least one dimension (dim 0 = samples)");
  storage_type_of(pred, "pred");
  if (x.has_value()) {
    TORCH_CHECK(x->sizes() == pred.sizes(), "x must have the shape of pred ", pred.sizes(), ", got ", x->sizes());
    TORCH_CHECK(x->scalar_type() == pred.scalar_type(), "x must have the dtype of pred (", pred.scalar_type(),
                "), got ", x->scalar_type());
    TORCH_CHECK(x->device() == pred.device(), "x must be on the device of pred (", pred.device(), "), got ",
                x->device());
  }
  check_dsm_vp_per_sample(a, "a", pred, "pred", acc_dtype_of(pred));
  check_dsm_vp_per_sample(c, "c", pred, "pred", acc_dtype_of(pred));
  check_dsm_vp_per_sample(weight, "weight", pred, "pred", at::kDouble);
  DsmVpCall call = prepare_dsm_vp_input(pred, "pred", seed, step, particle_offset);
  if (x.has_value()) {
    call.data = x->contiguous();
    call.args.data = call.data.data_ptr();
  }
  call.coef_a = a.contiguous();
  call.coef_c = c.contiguous();
  call.weight = weight.contiguous();
  call.args.coef_a = call.coef_a.data_ptr();
  call.args.coef_c = call.coef_c.data_ptr();
  call.args.weight = call.weight.data_ptr<double>();
  return call;
}

inline void check_dsm_vp_grad_per_sample(const at::Tensor& g, const at::Tensor& pred) {
  const int64_t B = pred.size(0);
  TORCH_CHECK(g.dim() == 1 && g.size(0) == B, "grad_per_sample must have shape [B] = [", B, "], got ", g.sizes());
  TORCH_CHECK(g.scalar_type() == acc_dtype_of(pred), "grad_per_sample must be ", acc_dtype_of(pred), ", got ",
              g.scalar_type());
  TORCH_CHECK(g.device() == pred.device(), "grad_per_sample must be on the device of pred (", pred.device(), "), got ",
              g.device());
}

}  // namespace scorefast
