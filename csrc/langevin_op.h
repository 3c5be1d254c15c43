// Argument checks and LangevinArgs construction shared by the CPU and CUDA
// implementations of scorefast::langevin_step, and the entry points of langevin_step,
// langevin_step_ and langevin_step_counter_ over a device's run function (op_wrappers.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "op_checks.h"
#include "op_wrappers.h"
#include "scorefast/langevin.h"
#include "scorefast/philox.h"

namespace scorefast {

inline void check_same_tensor_props(const at::Tensor& x, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.sizes() == x.sizes(), name, " must have the shape of x ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.device() == x.device(), name, " must be on the device of x (", x.device(), "), got ", t.device());
}

inline void check_per_particle(const at::Tensor& x, const std::optional<at::Tensor>& t, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == x.size(0), name, " must have shape [P] = [", x.size(0),
              "] (one value per particle), got ", t->sizes());
  TORCH_CHECK(t->device() == x.device(), name, " must be on the device of x (", x.device(), "), got ", t->device());
  TORCH_CHECK(t->scalar_type() == acc_dtype_of(x), name, " must be ", acc_dtype_of(x), " for x of dtype ",
              x.scalar_type(), ", got ", t->scalar_type());
}

// The tensors of one call, made contiguous, and the kernel arguments pointing into them.
struct LangevinCall {
  at::Tensor x, score, score_cond, step_pp, noise_pp, noise;
  LangevinArgs args;
  std::optional<double> max_score_norm;
};

inline LangevinCall prepare_langevin_call(const at::Tensor& x, const at::Tensor& score,
                                          const std::optional<at::Tensor>& score_cond, double guidance,
                                          double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                                          double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                                          const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                                          int64_t particle_offset, std::optional<double> clamp_min,
                                          std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least one dimension (dim 0 = particles), got a 0-d tensor");
  const StorageType dtype = storage_type_of(x, "x");
  check_same_tensor_props(x, score, "score");
  TORCH_CHECK(score.scalar_type() == x.scalar_type(), "score must have the dtype of x (", x.scalar_type(), "), got ",
              score.scalar_type());
  if (score_cond.has_value()) {
    check_same_tensor_props(x, *score_cond, "score_cond");
    TORCH_CHECK(score_cond->scalar_type() == x.scalar_type(), "score_cond must have the dtype of x (", x.scalar_type(),
                "), got ", score_cond->scalar_type());
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
  TORCH_CHECK(!(clamp_min.has_value() && clamp_max.has_value()) || *clamp_min <= *clamp_max, "clamp_min (",
              clamp_min.value_or(0), ") must be <= clamp_max (", clamp_max.value_or(0), ")");
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
  check_noise_extent(particle_offset, a.num_particles, a.particle_size);
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

// The entry points of langevin_step, langevin_step_ and langevin_step_counter_ on one device.
// Device: the device's policy (op_wrappers.h) and
//   static void run(LangevinCall& call, const at::Tensor& out, const int64_t* step_counter);
// which runs the kernels of a prepared call into `out` (contiguous, x's shape, on x's device;
// may be x itself), drawing the noise of step_counter's value when it is set.
template <typename Device>
struct LangevinOps {
  static at::Tensor langevin_step(const at::Tensor& x, const at::Tensor& score,
                                  const std::optional<at::Tensor>& score_cond, double guidance, double step_size,
                                  const std::optional<at::Tensor>& step_size_per_particle, double noise_scale,
                                  const std::optional<at::Tensor>& noise_scale_per_particle,
                                  const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                                  int64_t particle_offset, std::optional<double> clamp_min,
                                  std::optional<double> clamp_max, std::optional<double> max_score_norm) {
    LangevinCall call =
        prepare(x, score, score_cond, guidance, step_size, step_size_per_particle, noise_scale,
                noise_scale_per_particle, noise, seed, step, particle_offset, clamp_min, clamp_max, max_score_norm);
    at::Tensor out = Device::new_output(call.x);
    Device::run(call, out, nullptr);
    return out;
  }

  static void langevin_step_(at::Tensor& x, const at::Tensor& score, const std::optional<at::Tensor>& score_cond,
                             double guidance, double step_size, const std::optional<at::Tensor>& step_size_per_particle,
                             double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                             const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                             int64_t particle_offset, std::optional<double> clamp_min, std::optional<double> clamp_max,
                             std::optional<double> max_score_norm) {
    LangevinCall call =
        prepare(x, score, score_cond, guidance, step_size, step_size_per_particle, noise_scale,
                noise_scale_per_particle, noise, seed, step, particle_offset, clamp_min, clamp_max, max_score_norm);
    check_inputs_do_not_overlap(x, score, score_cond, step_size_per_particle, noise_scale_per_particle, noise);
    run_in_place<Device>(x, [&](const at::Tensor& out) { Device::run(call, out, nullptr); });
  }

  // langevin_step_ with contract noise whose step comes from the tensor `step`.
  static void langevin_step_counter_(at::Tensor& x, const at::Tensor& score,
                                     const std::optional<at::Tensor>& score_cond, double guidance, double step_size,
                                     const std::optional<at::Tensor>& step_size_per_particle, double noise_scale,
                                     const std::optional<at::Tensor>& noise_scale_per_particle, int64_t seed,
                                     const at::Tensor& step, int64_t particle_offset, std::optional<double> clamp_min,
                                     std::optional<double> clamp_max, std::optional<double> max_score_norm) {
    Device::check(x, "x");
    const NoiseStep noise_step = noise_step_of<Device>(step, x, "x");
    LangevinCall call = prepare(x, score, score_cond, guidance, step_size, step_size_per_particle, noise_scale,
                                noise_scale_per_particle, std::nullopt, seed, noise_step.value, particle_offset,
                                clamp_min, clamp_max, max_score_norm);
    check_inputs_do_not_overlap(x, score, score_cond, step_size_per_particle, noise_scale_per_particle, std::nullopt);
    run_in_place<Device>(x, [&](const at::Tensor& out) { Device::run(call, out, noise_step.counter); });
  }

 private:
  static void check_inputs_do_not_overlap(const at::Tensor& x, const at::Tensor& score,
                                          const std::optional<at::Tensor>& score_cond,
                                          const std::optional<at::Tensor>& step_size_per_particle,
                                          const std::optional<at::Tensor>& noise_scale_per_particle,
                                          const std::optional<at::Tensor>& noise) {
    check_no_partial_overlap(x, score, "score");
    check_no_partial_overlap(x, score_cond, "score_cond");
    check_no_partial_overlap(x, noise, "noise");
    check_no_partial_overlap(x, step_size_per_particle, "step_size_per_particle");
    check_no_partial_overlap(x, noise_scale_per_particle, "noise_scale_per_particle");
  }

  // prepare_langevin_call checks that every tensor is on x's device; x must be on this one.
  static LangevinCall prepare(const at::Tensor& x, const at::Tensor& score, const std::optional<at::Tensor>& score_cond,
                              double guidance, double step_size,
                              const std::optional<at::Tensor>& step_size_per_particle, double noise_scale,
                              const std::optional<at::Tensor>& noise_scale_per_particle,
                              const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                              int64_t particle_offset, std::optional<double> clamp_min, std::optional<double> clamp_max,
                              std::optional<double> max_score_norm) {
    Device::check(x, "x");
    const typename Device::Guard guard(x.device());  // the .contiguous() copies run on x's device
    return prepare_langevin_call(x, score, score_cond, guidance, step_size, step_size_per_particle, noise_scale,
                                 noise_scale_per_particle, noise, seed, step, particle_offset, clamp_min, clamp_max,
                                 max_score_norm);
  }
};

}  // namespace scorefast
