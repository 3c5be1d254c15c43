// Argument checks and DsmArgs construction shared by the CPU and CUDA implementations of
// the scorefast::dsm_* ops (only c10/ATen core headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "op_checks.h"
#include "scorefast/dsm.h"

namespace scorefast {

struct DsmCall {
  at::Tensor input, sigma, grad;
  DsmArgs args;
};

inline DsmCall prepare_dsm_call(const at::Tensor& input, const char* input_name, const at::Tensor& sigma, double power,
                                bool eps_form, int64_t seed, int64_t step, int64_t particle_offset) {
  TORCH_CHECK(input.dim() >= 1, input_name, " must have at least one dimension (dim 0 = samples)");
  const StorageType dtype = storage_type_of(input, input_name);
  const int64_t B = input.size(0);
  TORCH_CHECK(sigma.dim() == 1 && sigma.size(0) == B, "sigma must have shape [B] = [", B, "], got ", sigma.sizes());
  TORCH_CHECK(sigma.device() == input.device(), "sigma must be on the device of ", input_name, " (", input.device(),
              "), got ", sigma.device());
  TORCH_CHECK(sigma.scalar_type() == acc_dtype_of(input), "sigma must be ", acc_dtype_of(input), " for ", input_name,
              " of dtype ", input.scalar_type(), ", got ", sigma.scalar_type());
  TORCH_CHECK(std::isfinite(power), "power must be finite, got ", power);
  check_noise_counter(step, particle_offset);
  DsmCall c;
  c.input = input.contiguous();
  c.sigma = sigma.contiguous();
  DsmArgs& a = c.args;
  a.batch = B;
  a.sample_size = B == 0 ? 0 : input.numel() / B;
  check_noise_extent(particle_offset, a.batch, a.sample_size);
  a.dtype = dtype;
  a.input = c.input.data_ptr();
  a.sigma = c.sigma.data_ptr();
  a.power = power;
  a.eps_form = eps_form;
  a.seed = static_cast<uint64_t>(seed);
  a.step = static_cast<uint32_t>(step);
  a.particle_offset = static_cast<uint64_t>(particle_offset);
  return c;
}

}  // namespace scorefast
