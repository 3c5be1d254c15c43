// Argument checks and ReverseArgs construction shared by the CPU and CUDA implementations of
// scorefast::reverse_step and snr_corrector_step, and the entry points of reverse_step,
// reverse_step_, snr_corrector_step and snr_corrector_step_ over a device's run functions.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "langevin_op.h"  // check_same_tensor_props, check_per_particle
#include "op_checks.h"
#include "op_wrappers.h"
#include "scorefast/diffusion.h"

namespace scorefast {

// The tensors of one call, made contiguous, and the kernel arguments pointing into them.
struct ReverseCall {
  at::Tensor x, score, score_cond, x_pp, score_pp, noise_pp, noise;
  ReverseArgs args;
  std::optional<double> max_score_norm;
  // The corrector: its SNR, and whether eps comes from the batch means of the norms.
  double snr = 0.0;
  bool batch_mean = false;
};

inline void check_scores_and_clamp(const at::Tensor& x, const at::Tensor& score,
                                   const std::optional<at::Tensor>& score_cond, double guidance,
                                   std::optional<double> clamp_min, std::optional<double> clamp_max) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least one dimension (dim 0 = particles), got a 0-d tensor");
  storage_type_of(x, "x");
  check_same_tensor_props(x, score, "score");
  TORCH_CHECK(score.scalar_type() == x.scalar_type(), "score must have the dtype of x (", x.scalar_type(), "), got ",
              score.scalar_type());
  if (score_cond.has_value()) {
    check_same_tensor_props(x, *score_cond, "score_cond");
    TORCH_CHECK(score_cond->scalar_type() == x.scalar_type(), "score_cond must have the dtype of x (", x.scalar_type(),
                "), got ", score_cond->scalar_type());
  }
  TORCH_CHECK(std::isfinite(guidance), "guidance must be finite, got ", guidance);
  TORCH_CHECK(!clamp_min.has_value() || !std::isnan(*clamp_min), "clamp_min must not be NaN");
  TORCH_CHECK(!clamp_max.has_value() || !std::isnan(*clamp_max), "clamp_max must not be NaN");
  TORCH_CHECK(!(clamp_min.has_value() && clamp_max.has_value()) || *clamp_min <= *clamp_max, "clamp_min (",
              clamp_min.value_or(0), ") must be <= clamp_max (", clamp_max.value_or(0), ")");
}

// The common part of both ops' calls: x, the scores, the counter and the clamp.
inline ReverseCall prepare_call_base(const at::Tensor& x, const at::Tensor& score,
                                     const std::optional<at::Tensor>& score_cond, double guidance, int64_t seed,
                                     int64_t step, int64_t particle_offset, std::optional<double> clamp_min,
                                     std::optional<double> clamp_max) {
  ReverseCall c;
  c.x = x.contiguous();
  c.score = score.contiguous();
  if (score_cond.has_value()) c.score_cond = score_cond->contiguous();
  ReverseArgs& a = c.args;
  a.num_particles = x.size(0);
  a.particle_size = a.num_particles == 0 ? 0 : x.numel() / a.num_particles;
  check_noise_extent(particle_offset, a.num_particles, a.particle_size);
  a.dtype = storage_type_of(x, "x");
  a.x = c.x.data_ptr();
  a.score = c.score.data_ptr();
  a.score_cond = c.score_cond.defined() ? c.score_cond.data_ptr() : nullptr;
  a.guidance = guidance;
  a.seed = static_cast<uint64_t>(seed);
  a.step = static_cast<uint32_t>(step);
  a.particle_offset = static_cast<uint64_t>(particle_offset);
  a.has_clamp = clamp_min.has_value() || clamp_max.has_value();
  a.clamp_min = clamp_min.value_or(-INFINITY);
  a.clamp_max = clamp_max.value_or(INFINITY);
  return c;
}

inline ReverseCall prepare_reverse_call(const at::Tensor& x, const at::Tensor& score,
                                        const std::optional<at::Tensor>& score_cond, double guidance, double x_coef,
                                        const std::optional<at::Tensor>& x_coef_per_particle, double score_coef,
                                        const std::optional<at::Tensor>& score_coef_per_particle, double noise_scale,
                                        const std::optional<at::Tensor>& noise_scale_per_particle,
                                        const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                                        int64_t particle_offset, std::optional<double> clamp_min,
                                        std::optional<double> clamp_max, std::optional<double> max_score_norm) {
  check_scores_and_clamp(x, score, score_cond, guidance, std::nullopt, std::nullopt);
  TORCH_CHECK(std::isfinite(x_coef), "x_coef must be finite, got ", x_coef);
  TORCH_CHECK(std::isfinite(score_coef), "score_coef must be finite, got ", score_coef);
  TORCH_CHECK(std::isfinite(noise_scale) && noise_scale >= 0, "noise_scale must be finite and >= 0, got ", noise_scale);
  check_per_particle(x, x_coef_per_particle, "x_coef_per_particle");
  check_per_particle(x, score_coef_per_particle, "score_coef_per_particle");
  check_per_particle(x, noise_scale_per_particle, "noise_scale_per_particle");
  if (noise.has_value()) {
    check_same_tensor_props(x, *noise, "noise");
    storage_type_of(*noise, "noise");
  }
  check_noise_counter(step, particle_offset);
  check_scores_and_clamp(x, score, score_cond, guidance, clamp_min, clamp_max);
  TORCH_CHECK(!max_score_norm.has_value() || (std::isfinite(*max_score_norm) && *max_score_norm > 0),
              "max_score_norm must be finite and > 0, got ", max_score_norm.value_or(0));

  ReverseCall c = prepare_call_base(x, score, score_cond, guidance, seed, step, particle_offset, clamp_min, clamp_max);
  if (x_coef_per_particle.has_value()) c.x_pp = x_coef_per_particle->contiguous();
  if (score_coef_per_particle.has_value()) c.score_pp = score_coef_per_particle->contiguous();
  if (noise_scale_per_particle.has_value()) c.noise_pp = noise_scale_per_particle->contiguous();
  if (noise.has_value()) c.noise = noise->contiguous();
  c.max_score_norm = max_score_norm;
  ReverseArgs& a = c.args;
  a.x_coef = x_coef;
  a.x_coef_per_particle = c.x_pp.defined() ? c.x_pp.data_ptr() : nullptr;
  a.score_coef = score_coef;
  a.score_coef_per_particle = c.score_pp.defined() ? c.score_pp.data_ptr() : nullptr;
  a.noise_scale = noise_scale;
  a.noise_scale_per_particle = c.noise_pp.defined() ? c.noise_pp.data_ptr() : nullptr;
  a.noise = c.noise.defined() ? c.noise.data_ptr() : nullptr;
  a.noise_dtype = c.noise.defined() ? storage_type_of(c.noise, "noise") : StorageType::kFloat32;
  return c;
}

inline ReverseCall prepare_corrector_call(const at::Tensor& x, const at::Tensor& score,
                                          const std::optional<at::Tensor>& score_cond, double guidance, double snr,
                                          bool batch_mean, int64_t seed, int64_t step, int64_t particle_offset,
                                          std::optional<double> clamp_min, std::optional<double> clamp_max) {
  check_scores_and_clamp(x, score, score_cond, guidance, std::nullopt, std::nullopt);
  TORCH_CHECK(std::isfinite(snr) && snr >= 0, "snr must be finite and >= 0, got ", snr);
  check_noise_counter(step, particle_offset);
  check_scores_and_clamp(x, score, score_cond, guidance, clamp_min, clamp_max);
  ReverseCall c = prepare_call_base(x, score, score_cond, guidance, seed, step, particle_offset, clamp_min, clamp_max);
  c.snr = snr;
  c.batch_mean = batch_mean;
  return c;
}

// The entry points on one device. Device: the device's policy (op_wrappers.h) and
//   static void run(ReverseCall& call, const at::Tensor& out);
//   static void run_corrector(ReverseCall& call, const at::Tensor& out, const at::Tensor& step_sizes);
// which run the kernels of a prepared call into `out` (contiguous, x's shape, on x's device;
// may be x itself); the corrector also writes its step sizes into `step_sizes` ([P], acc type).
template <typename Device>
struct DiffusionOps {
  static at::Tensor reverse_step(const at::Tensor& x, const at::Tensor& score,
                                 const std::optional<at::Tensor>& score_cond, double guidance, double x_coef,
                                 const std::optional<at::Tensor>& x_coef_per_particle, double score_coef,
                                 const std::optional<at::Tensor>& score_coef_per_particle, double noise_scale,
                                 const std::optional<at::Tensor>& noise_scale_per_particle,
                                 const std::optional<at::Tensor>& noise, int64_t seed, int64_t step,
                                 int64_t particle_offset, std::optional<double> clamp_min,
                                 std::optional<double> clamp_max, std::optional<double> max_score_norm) {
    Device::check(x, "x");
    const typename Device::Guard guard(x.device());
    ReverseCall call = prepare_reverse_call(x, score, score_cond, guidance, x_coef, x_coef_per_particle, score_coef,
                                            score_coef_per_particle, noise_scale, noise_scale_per_particle, noise, seed,
                                            step, particle_offset, clamp_min, clamp_max, max_score_norm);
    at::Tensor out = Device::new_output(call.x);
    Device::run(call, out);
    return out;
  }

  static void reverse_step_(at::Tensor& x, const at::Tensor& score, const std::optional<at::Tensor>& score_cond,
                            double guidance, double x_coef, const std::optional<at::Tensor>& x_coef_per_particle,
                            double score_coef, const std::optional<at::Tensor>& score_coef_per_particle,
                            double noise_scale, const std::optional<at::Tensor>& noise_scale_per_particle,
                            const std::optional<at::Tensor>& noise, int64_t seed, int64_t step, int64_t particle_offset,
                            std::optional<double> clamp_min, std::optional<double> clamp_max,
                            std::optional<double> max_score_norm) {
    Device::check(x, "x");
    const typename Device::Guard guard(x.device());
    ReverseCall call = prepare_reverse_call(x, score, score_cond, guidance, x_coef, x_coef_per_particle, score_coef,
                                            score_coef_per_particle, noise_scale, noise_scale_per_particle, noise, seed,
                                            step, particle_offset, clamp_min, clamp_max, max_score_norm);
    check_no_partial_overlap(x, score, "score");
    check_no_partial_overlap(x, score_cond, "score_cond");
    check_no_partial_overlap(x, noise, "noise");
    check_no_partial_overlap(x, x_coef_per_particle, "x_coef_per_particle");
    check_no_partial_overlap(x, score_coef_per_particle, "score_coef_per_particle");
    check_no_partial_overlap(x, noise_scale_per_particle, "noise_scale_per_particle");
    run_in_place<Device>(x, [&](const at::Tensor& out) { Device::run(call, out); });
  }

  static std::tuple<at::Tensor, at::Tensor> snr_corrector_step(const at::Tensor& x, const at::Tensor& score,
                                                               const std::optional<at::Tensor>& score_cond,
                                                               double guidance, double snr, bool batch_mean,
                                                               int64_t seed, int64_t step, int64_t particle_offset,
                                                               std::optional<double> clamp_min,
                                                               std::optional<double> clamp_max) {
    Device::check(x, "x");
    const typename Device::Guard guard(x.device());
    ReverseCall call = prepare_corrector_call(x, score, score_cond, guidance, snr, batch_mean, seed, step,
                                              particle_offset, clamp_min, clamp_max);
    at::Tensor out = Device::new_output(call.x);
    at::Tensor step_sizes = at::empty({x.size(0)}, x.options().dtype(acc_dtype_of(x)));
    Device::run_corrector(call, out, step_sizes);
    return {out, step_sizes};
  }

  static at::Tensor snr_corrector_step_(at::Tensor& x, const at::Tensor& score,
                                        const std::optional<at::Tensor>& score_cond, double guidance, double snr,
                                        bool batch_mean, int64_t seed, int64_t step, int64_t particle_offset,
                                        std::optional<double> clamp_min, std::optional<double> clamp_max) {
    Device::check(x, "x");
    const typename Device::Guard guard(x.device());
    ReverseCall call = prepare_corrector_call(x, score, score_cond, guidance, snr, batch_mean, seed, step,
                                              particle_offset, clamp_min, clamp_max);
    check_no_partial_overlap(x, score, "score");
    check_no_partial_overlap(x, score_cond, "score_cond");
    at::Tensor step_sizes = at::empty({x.size(0)}, x.options().dtype(acc_dtype_of(x)));
    run_in_place<Device>(x, [&](const at::Tensor& out) { Device::run_corrector(call, out, step_sizes); });
    return step_sizes;
  }
};

}  // namespace scorefast
