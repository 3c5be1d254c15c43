// Schemas of the scorefast ops, declared by the scorefast library (csrc/registration.cpp)
// and by the CUDA emulator's (csrc/cuda_emulator), which registers the same kernels under
// another namespace.
#pragma once

#include <torch/library.h>

#include "ops_library.h"

namespace scorefast {

// Seeds are int64 here; the kernels read their bits as uint64 (Python maps [0, 2^64)).
inline void define_ops(torch::Library& m) {
  // Philox words of the noise contract: out[p, q, :] for counter (particle_offset + p, step, q),
  // as int64 in [0, 2^32). out: int64 [P, Q, 4], contiguous.
  m.def("philox_fill_(Tensor(a!) out, int seed, int step, int particle_offset) -> ()");
  // Standard normals of the noise contract. out: float32, dim 0 = particles, contiguous.
  m.def("normal_fill_(Tensor(a!) out, int seed, int step, int particle_offset) -> ()");
  m.def(
      "langevin_step(Tensor x, Tensor score, Tensor? score_cond, float guidance, float step_size, "
      "Tensor? step_size_per_particle, float noise_scale, Tensor? noise_scale_per_particle, "
      "Tensor? noise, int seed, int step, int particle_offset, float? clamp_min, float? clamp_max, "
      "float? max_score_norm) -> Tensor");
  m.def(
      "langevin_step_(Tensor(a!) x, Tensor score, Tensor? score_cond, float guidance, float step_size, "
      "Tensor? step_size_per_particle, float noise_scale, Tensor? noise_scale_per_particle, "
      "Tensor? noise, int seed, int step, int particle_offset, float? clamp_min, float? clamp_max, "
      "float? max_score_norm) -> ()");
  // The same with the step read from `step` (int64, one element, on the device of out / x)
  // when the kernel runs, so a captured CUDA graph draws the noise of whatever step the
  // tensor holds at replay. langevin_step_counter_ is langevin_step_ without explicit noise.
  m.def("philox_fill_counter_(Tensor(a!) out, int seed, Tensor step, int particle_offset) -> ()");
  m.def("normal_fill_counter_(Tensor(a!) out, int seed, Tensor step, int particle_offset) -> ()");
  m.def(
      "langevin_step_counter_(Tensor(a!) x, Tensor score, Tensor? score_cond, float guidance, float step_size, "
      "Tensor? step_size_per_particle, float noise_scale, Tensor? noise_scale_per_particle, int seed, "
      "Tensor step, int particle_offset, float? clamp_min, float? clamp_max, float? max_score_norm) -> ()");
  // Score [N, D] and log-density [N] of a Gaussian mixture at x [N, D] (see scorefast/gmm.h):
  // means [K, D], var [K, 1] or [K, D], factor [K, D, D] or None, log_const [K], sigma2 [N]
  // or None, all in the math dtype (float64 for float64 x, float32 otherwise).
  m.def(
      "gmm_score(Tensor x, Tensor means, Tensor var, Tensor inv_var, Tensor? factor, "
      "Tensor log_const, Tensor? sigma2) -> (Tensor, Tensor)");
  // Denoising score matching (see scorefast/dsm.h). x / pred: [B, ...] float; sigma: [B] in
  // the math dtype. dsm_loss returns the per-sample losses [B] in the math dtype.
  m.def("dsm_perturb(Tensor x, Tensor sigma, int seed, int step, int particle_offset) -> Tensor");
  m.def(
      "dsm_loss(Tensor pred, Tensor sigma, float power, bool eps_form, int seed, int step, "
      "int particle_offset) -> Tensor");
  m.def(
      "dsm_loss_backward(Tensor grad_per_sample, Tensor pred, Tensor sigma, float power, bool eps_form, "
      "int seed, int step, int particle_offset) -> Tensor");
  // T Langevin (or MALA) steps for a mixture target, in place on x [N, D] (contiguous; see
  // scorefast/chain.h). Mixture in per-point kernel form; step_size, sigma2: [T] math dtype.
  m.def(
      "gmm_chain_(Tensor(a!) x, Tensor means, Tensor var, Tensor log_const, Tensor? factor, "
      "Tensor step_size, Tensor sigma2, bool mala, int seed, int step_offset, int particle_offset, "
      "int trajectory_every, Tensor(b!)? trajectory, Tensor(c!)? accepted) -> ()");
}

}  // namespace scorefast
