// Argument checks and LangevinArgs construction shared by the CPU and CUDA
// implementations of scorefast::langevin_step (only c10/ATen core headers).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "scorefast/langevin.h"
#include "scorefast/philox.h"

namespace scorefast {

inline StorageType storage_type_of(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return StorageType::kFloat32;
    case at::kDouble:
      return StorageType::kFloat64;
    case at::kHalf:
      return StorageType::kFloat16;
    case at::kBFloat16:
      return StorageType::kBFloat16;
    default:
      TORCH_CHECK(false, name, " must be float32, float64, float16 or bfloat16, got ", t.scalar_type());
  }
}

// The dtype of per-particle coefficient tensors: the kernel's math type.
inline at::ScalarType acc_dtype_of(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_same_tensor_props(const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.sizes() == x.sizes(), name, " must have the shape of x ", x.sizes(), ", got ",
              t.sizes());
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x (", x.device(),
              "), got ", t.device());
}

inline void check_per_particle(const at::Tensor& x, const std::optional<at::Tensor>& t,
                               const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(0), name,
              " must have shape [P] = [", x.size(0), "] (one value per particle), got ", t->sizes());
  TORCH_CHECK(t->device() == x.device(), name, " must be on the device of x (", x.device(),
              "), got ", t->device());
  TORCH_CHECK(t->scalar_type() == acc_dtype_of(x), name, " must be ", acc_dtype_of(x),
              " for x of dtype ", x.scalar_type(), ", got ", t->scalar_type());
}

inline void check_noise_counter(int64_t step, int64_t particle_offset) {
  TORCH_CHECK(step >= 0 && static_cast<uint64_t>(step) <= kMaxStep,
              "step must be in [0, 2^32) (one 32-bit counter word), got ", step);
  TORCH_CHECK(particle_offset >= 0, "particle_offset must be >= 0, got ", particle_offset);
}

// The step tensor of the *_counter_ ops: int64 with one element, on the device of `like`.
// Its value is read when the kernel runs (on the host for CPU tensors, where it is checked).
inline void check_step_tensor(const at::Tensor& step, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(step.scalar_type() == at::kLong && step.numel() == 1,
              "step must be an int64 tensor with one element, got ", step.scalar_type(), " of shape ", step.sizes());
  TORCH_CHECK(step.device() == like.device(), "step must be on the device of ", like_name, " (", like.device(),
              "), got ", step.device());
}

inline void check_particle_size(int64_t D) {
  TORCH_CHECK(D <= (int64_t{1} << 34), "elements per particle must be <= 2^34 (d >> 2 is a 32-bit counter word), got ", D);
}

// The tensors of one call, made contiguous, and the kernel arguments pointing into them.
struct LangevinCall {
  at::Tensor x, score, score_cond, step_pp, noise_pp, noise;
  LangevinArgs args;
  std::optional<double> max_score_norm;
};

inline LangevinCall prepare_langevin_call(
    const at::Tensor& x, const at::Tensor& score, const std::optional<at::Tensor>& score_cond,
    double guidance, double step_size, const std::optional<at::Tensor>& step_size_per_particle,
    double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
    const std::optional<at::Tensor>& noise, int64_t seed, int64_t step, int64_t particle_offset,
    std::optional<double> clamp_min, std::optional<double> clamp_max,
    std::optional<double> max_score_norm) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least one dimension (dim 0 = particles), got a 0-d tensor");
  const StorageType dtype = storage_type_of(x, "x");
  check_same_tensor_props(x, score, "score");
  TORCH_CHECK(score.scalar_type() == x.scalar_type(), "score must have the dtype of x (",
              x.scalar_type(), "), got ", score.scalar_type());
  if (score_cond.has_value()) {
    check_same_tensor_props(x, *score_cond, "score_cond");
    TORCH_CHECK(score_cond->scalar_type() == x.scalar_type(), "score_cond must have the dtype of x (",
                x.scalar_type(), "), got ", score_cond->scalar_type());
  }
  TORCH_CHECK(std::isfinite(guidance), "guidance must be finite, got ", guidance);
  TORCH_CHECK(std::isfinite(step_size) && step_size >= 0, "step_size must be finite and >= 0, got ", step_size);
  TORCH_CHECK(std::isfinite(noise_scale) && noise_scale >= 0, "noise_scale must be finite and >= 0, got ", noise_scale);
  check_per_particle(x, step_size_per_particle, "step_size_per_particle");
  check_per_particle(x, noise_scale_per_particle, "noise_scale_per_particle");
  if (noise.has_value()) {
    check_same_tensor_props(x, *noise, "noise");
    storage_type_of(*noise, "noise");
  }
  check_noise_counter(step, particle_offset);
  TORCH_CHECK(!clamp_min.has_value() || !std::isnan(*clamp_min), "clamp_min must not be NaN");
  TORCH_CHECK(!clamp_max.has_value() || !std::isnan(*clamp_max), "clamp_max must not be NaN");
  TORCH_CHECK(!(clamp_min.has_value() && clamp_max.has_value()) || *clamp_min <= *clamp_max,
              "clamp_min (", clamp_min.value_or(0), ") must be <= clamp_max (", clamp_max.value_or(0), ")");
  TORCH_CHECK(!max_score_norm.has_value() || (std::isfinite(*max_score_norm) && *max_score_norm > 0),
              "max_score_norm must be finite and > 0, got ", max_score_norm.value_or(0));

  LangevinCall c;
  c.x = x.contiguous();
  c.score = score.contiguous();
  if (score_cond.has_value()) c.score_cond = score_cond->contiguous();
  if (step_size_per_particle.has_value()) c.step_pp = step_size_per_particle->contiguous();
  if (noise_scale_per_particle.has_value()) c.noise_pp = noise_scale_per_particle->contiguous();
  if (noise.has_value()) c.noise = noise->contiguous();
  c.max_score_norm = max_score_norm;

  LangevinArgs& a = c.args;
  a.num_particles = x.size(0);
  a.particle_size = a.num_particles == 0 ? 0 : x.numel() / a.num_particles;
  check_particle_size(a.particle_size);
  a.dtype = dtype;
  a.x = c.x.data_ptr();
  a.score = c.score.data_ptr();
  a.score_cond = c.score_cond.defined() ? c.score_cond.data_ptr() : nullptr;
  a.guidance = guidance;
  a.step_size = step_size;
  a.step_size_per_particle = c.step_pp.defined() ? c.step_pp.data_ptr() : nullptr;
  a.noise_scale = noise_scale;
  a.noise_scale_per_particle = c.noise_pp.defined() ? c.noise_pp.data_ptr() : nullptr;
  a.noise = c.noise.defined() ? c.noise.data_ptr() : nullptr;
  a.noise_dtype = c.noise.defined() ? storage_type_of(c.noise, "noise") : StorageType::kFloat32;
  a.seed = static_cast<uint64_t>(seed);
  a.step = static_cast<uint32_t>(step);
  a.particle_offset = static_cast<uint64_t>(particle_offset);
  a.has_clamp = clamp_min.has_value() || clamp_max.has_value();
  a.clamp_min = clamp_min.value_or(-INFINITY);
  a.clamp_max = clamp_max.value_or(INFINITY);
  return c;
}

}  // namespace scorefast
